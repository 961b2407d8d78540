#!/usr/bin/env bash
# The one-shot GPU measurement of issue 13 (docs/accelerators.md). Run it once, from the
# repository root, on a machine whose JAX sees a GPU; it ends within 9.5 minutes whatever
# happens (every stage has a time limit) and needs nothing outside the repository:
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]      (default: $OUT if set, else runs/gpu_check)
#
# 1. The machine: nvidia-smi, jax and its devices; stops at once if JAX sees no GPU.
# 2. A tiny model's first 20 losses (bfloat16, 2 x 64, context 64, synthetic data) trained by
#    `python -m launch run` on the GPU (attention auto = cuDNN) and on this machine's CPU
#    (JAX_PLATFORMS=cpu, blocked attention) at the same time; they must agree within bfloat16
#    tolerance (relative 1e-2, about twice bfloat16's rounding unit 2^-8). Should the GPU run
#    fail (say, cuDNN missing), it is run again with model.attention=xla and that is compared.
# 3. benchmarks/accelerator.py on gpu-124m (synthetic data) for train.microbatches 1, 2 x
#    model.remat none, dots: tokens/s, MFU against the data-sheet bfloat16 peak, compile time,
#    memory (estimate, XLA's, the process peak) and the fastest setting. Should no contender
#    run, once more with the blocked attention and microbatches 2, 4 (if time is left).
# Everything lands in OUT_DIR: the logs, both runs' metrics.jsonl, accelerator.json and
# summary.txt, which is what benchmarks/README.md's GPU section is written from.
set -uo pipefail
OUT_DIR=${1:-${OUT:-runs/gpu_check}}
mkdir -p "$OUT_DIR"
SUMMARY="$OUT_DIR/summary.txt"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL=3 WANDB_MODE=disabled
log() { echo "$@" | tee -a "$SUMMARY"; }

log "== 1. machine ($(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$SUMMARY"
timeout 60 python -c "
import jax
print('jax', jax.__version__, 'backend', jax.default_backend(), jax.devices())
assert jax.default_backend() == 'gpu', 'JAX sees no GPU'
" 2>&1 | tee -a "$SUMMARY"
[ "${PIPESTATUS[0]}" -eq 0 ] || { log "stopped: no GPU for JAX"; exit 1; }

log "== 2. a tiny model's first 20 losses, GPU against CPU (bfloat16)"
TINY=(--config experiments/lm.py:smoke --config.model.dtype=bfloat16 --config.model.d_model=64
      --config.model.n_layers=2 --config.model.n_heads=2 --config.model.d_ff=256
      --config.model.context=64 --config.train.seq_len=64 --config.train.batch_size=16
      --config.train.tokens=20480 --config.train.warmup_steps=5 --config.loop.log_every=1
      --config.loop.eval_every=100000 --config.loop.checkpoint_every=100000
      --config.data.val_batches=1 --config.tracking.progress=false --config.mesh.data=1)
rm -rf "$OUT_DIR"/tiny-*
JAX_PLATFORMS=cpu timeout 200 python -m launch run "${TINY[@]}" --workdir "$OUT_DIR/tiny-cpu" \
    > "$OUT_DIR/tiny-cpu.log" 2>&1 &
CPU_PID=$!
GPU_RUN=tiny-gpu
timeout 100 python -m launch run "${TINY[@]}" --workdir "$OUT_DIR/$GPU_RUN" \
    > "$OUT_DIR/$GPU_RUN.log" 2>&1
STATUS=$?
log "GPU run exit $STATUS"
if [ "$STATUS" -ne 0 ]; then
  tail -n 3 "$OUT_DIR/$GPU_RUN.log" | tee -a "$SUMMARY"
  GPU_RUN=tiny-gpu-xla
  timeout 100 python -m launch run "${TINY[@]}" --config.model.attention=xla \
      --workdir "$OUT_DIR/$GPU_RUN" > "$OUT_DIR/$GPU_RUN.log" 2>&1
  log "GPU run with model.attention=xla exit $?"
fi
wait "$CPU_PID"
log "CPU run exit $?"
timeout 60 python - "$OUT_DIR" "$GPU_RUN" <<'EOF' 2>&1 | tee -a "$SUMMARY"
import json, os, sys
from research import tracking
out, gpu_run = sys.argv[1:]
runs = {}
for name, folder in (("gpu", gpu_run), ("cpu", "tiny-cpu")):
  path = os.path.join(out, folder, "metrics.jsonl")
  runs[name] = [r["loss"] for r in tracking.read_metrics(path)] if os.path.exists(path) else []
  summary = os.path.join(out, folder, "summary.json")
  if os.path.exists(summary):
    print(name, folder, "attention", json.load(open(summary)).get("attention"))
n = min(20, len(runs["gpu"]), len(runs["cpu"]))
worst = 0.0
for step in range(n):
  g, c = runs["gpu"][step], runs["cpu"][step]
  worst = max(worst, abs(g / c - 1))
  print(f"step {step:2d}  gpu {g:.5f}  cpu {c:.5f}  rel {abs(g / c - 1):.1e}")
verdict = "PASS" if n == 20 and worst < 1e-2 else "FAIL"
print(f"{verdict}: {n} steps compared, largest relative difference {worst:.2e} (tolerance 1e-2)")
EOF

log "== 3. gpu-124m: tokens/s, MFU, memory; microbatches 1, 2 x remat none, dots"
bench() {  # time limit, log name, extra arguments
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.95 timeout "$1" python benchmarks/accelerator.py \
      --config experiments/lm.py:gpu-124m --config.data.source=synthetic: \
      --config.tracking.progress=false --steps 10 --rounds 2 --json "$OUT_DIR/$2.json" \
      "${@:3}" 2>&1 | tee "$OUT_DIR/$2.log" | grep -v "^\s*$" | tail -n 20 >> "$SUMMARY"
  return "${PIPESTATUS[0]}"
}
bench $((SECONDS < 420 ? 480 - SECONDS : 60)) accelerator --microbatches 1 2 --remat none dots
STATUS=$?
log "benchmark exit $STATUS"
if [ "$STATUS" -ne 0 ] && [ "$SECONDS" -lt 440 ]; then
  log "== 3b. again with the blocked attention, microbatches 2, 4, remat dots"
  bench $((560 - SECONDS)) accelerator-blocked --config.model.attention=blocked \
      --microbatches 2 4 --remat dots
  log "benchmark exit $?"
fi
log "== done ($(date -u +%FT%TZ)); see $SUMMARY"
