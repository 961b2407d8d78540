"""The training loop: data -> step -> metrics -> evaluation -> checkpoint, with resume.

Generic: an experiment hands over a `Recipe` (how to initialise parameters, the loss, a batch
source indexed by step, evaluators), so this module imports no model and no data module and the
same loop trains language models and U-Nets. As in nanodo, step N's metrics are read after step
N+1 has been dispatched, so the host never stalls the accelerator.
"""

import dataclasses
import functools
import math
import os
import signal
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
import optax

from research import accounting, checkpoint, parallel, tracking
from research.errors import require
from research.errors import UserError
from research.fileio import atomic_write_json
from research.train.step import TrainState, all_finite, init_state, train_step


class NonFiniteLoss(RuntimeError):
  """The loss or the parameters became NaN or infinite; the run stopped."""


@dataclasses.dataclass(frozen=True)
class Recipe:
  init: Callable[[jax.Array], Any]                 # rng -> params
  loss: Callable                                   # (params, batch, rng) -> (loss, aux)
  train_batch: Callable[[int], dict]               # step -> global batch of numpy arrays
  num_steps: int
  batch_size: int
  optimizer: optax.GradientTransformation
  flops_per_token: float                           # analytic training FLOPs per token
  compute_dtype: str = "float32"
  evaluators: Sequence[Callable[[Any], dict]] = ()  # params -> {metric: value}
  lr_schedule: Callable[[int], float] | None = None
  facts: dict = dataclasses.field(default_factory=dict)  # static facts for the summary


def validate(cfg, batch_size: int, n_devices: int) -> None:
  """Loop-level config checks, before anything compiles."""
  data, fsdp = parallel.mesh_shape(cfg.mesh, n_devices)
  require(batch_size % (data * fsdp) == 0, "train.batch_size", batch_size,
          f"must be divisible by the data-parallel size mesh.data x mesh.fsdp = {data * fsdp}")
  for field in ("eval_every", "checkpoint_every", "log_every"):
    value = cfg.loop[field]
    require(isinstance(value, int) and value >= 1, f"loop.{field}", value,
            "must be a positive integer")
  require(cfg.loop.keep_checkpoints >= 1, "loop.keep_checkpoints", cfg.loop.keep_checkpoints,
          "must be at least 1")


class _StopSignal:
  """Turns SIGTERM / SIGINT into a flag the loop checks between steps."""

  def __init__(self):
    self.received = None
    self.previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self.previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):
    self.received = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self.previous.items():
      signal.signal(sig, handler)


def _put_batch(batch: dict, sharding) -> dict:
  """Each process contributes its rows of the global batch."""
  n, i = jax.process_count(), jax.process_index()

  def put(x):
    rows = x.shape[0] // n
    return jax.make_array_from_process_local_data(sharding, x[i * rows:(i + 1) * rows], x.shape)

  return {k: put(np.asarray(v)) for k, v in batch.items()}


def train(recipe: Recipe, cfg, workdir: str, config_dict: dict, run_id: str) -> dict:
  """Train to `recipe.num_steps`, resuming from `workdir` if it holds checkpoints."""
  wall_start = time.time()
  mesh = parallel.make_mesh(cfg.mesh)
  batch_sh = parallel.batch_sharding(mesh)
  make_state = functools.partial(init_state, recipe.init, recipe.optimizer, cfg.seed)
  abstract = jax.eval_shape(make_state)
  shardings = parallel.state_sharding(mesh, abstract)

  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 keep=cfg.loop.keep_checkpoints,
                                 use_async=cfg.loop.async_checkpoints)

  def same_run(meta: dict) -> None:
    if meta.get("run_id", run_id) != run_id:
      ckpt.close()
      raise UserError(f"the checkpoints in {workdir}/checkpoints belong to run {meta['run_id']}, "
                      f"not to this config's run {run_id}; use another workdir")

  restored = ckpt.restore(checkpoint.abstract_like(abstract, shardings), check_meta=same_run)
  if restored is None:
    state, start, meta = jax.jit(make_state, out_shardings=shardings)(), 0, {}
  else:
    state, meta, start = restored
  tokens_seen, wall_offset = float(meta.get("tokens_seen", 0.0)), float(meta.get("wall_s", 0.0))
  step_fn = jax.jit(functools.partial(train_step, loss_fn=recipe.loss,
                                      optimizer=recipe.optimizer),
                    in_shardings=(shardings, batch_sh), out_shardings=(shardings, None),
                    donate_argnums=0)
  finite_fn = jax.jit(all_finite)

  if cfg.tracking.peak_flops > 0:
    peak, peak_source = cfg.tracking.peak_flops, "config tracking.peak_flops"
  else:
    peak, peak_source = accounting.device_peak_flops(recipe.compute_dtype, mesh.size)
  tracker = tracking.Tracker(workdir, cfg.tracking, config_dict, run_id, recipe.num_steps, start)
  if start:
    tracker.event("resume", from_step=start)
    tracker.message(f"resumed from the checkpoint at step {start}")

  def evaluate(step: int, state: TrainState) -> dict:
    results = {}
    for evaluator in recipe.evaluators:
      results.update(evaluator(state.params))
    tracker.write(step, results, kind="eval")
    return results

  def save(step: int, state: TrainState, tokens: float) -> None:
    if not bool(finite_fn(state.params)):
      raise NonFiniteLoss(f"parameters are not finite at step {step}; not saved")
    ckpt.save(step, state, {"run_id": run_id, "step": step, "data_position": step,
                            "tokens_seen": tokens,
                            "wall_s": wall_offset + time.time() - wall_start})

  pending = None
  window = {"t": None, "tokens": 0.0, "steps": 0}
  last_eval: dict = {}
  status = "finished"
  try:
    with _StopSignal() as stop:
      for step in range(start, recipe.num_steps + 1):
        if step < recipe.num_steps:
          batch = _put_batch(recipe.train_batch(step), batch_sh)
          new_state, metrics = step_fn(state, batch)
        if pending is not None:  # the previous step's metrics, read while this one runs
          prev_step, prev_metrics = pending
          m = jax.device_get(prev_metrics)
          if not math.isfinite(float(m["loss"])) or not math.isfinite(float(m["grad_norm"])):
            raise NonFiniteLoss(
                f"loss {float(m['loss'])} / grad norm {float(m['grad_norm'])} at step "
                f"{prev_step}")
          tokens_seen += float(m.get("tokens", 0.0))
          now = time.perf_counter()
          if window["t"] is None:
            window.update(t=now, tokens=0.0, steps=0)
          else:
            window["tokens"] += float(m.get("tokens", 0.0))
            window["steps"] += 1
          if prev_step % cfg.loop.log_every == 0 or prev_step == recipe.num_steps - 1:
            elapsed = now - window["t"] if window["t"] is not None else 0.0
            tok_s = window["tokens"] / elapsed if elapsed > 0 and window["steps"] else float("nan")
            record = {k: float(v) for k, v in m.items()}
            record.update(tokens=tokens_seen, flops=tokens_seen * recipe.flops_per_token,
                          tokens_per_s=tok_s,
                          mfu=accounting.mfu(recipe.flops_per_token, tok_s, peak),
                          wall_s=wall_offset + time.time() - wall_start)
            if recipe.lr_schedule is not None:
              record["lr"] = float(recipe.lr_schedule(prev_step))
            tracker.write(prev_step, record, kind="train")
            tracker.progress(prev_step + 1, {"loss": f"{record['loss']:.4f}",
                                             "tok/s": f"{tok_s:,.0f}",
                                             "mfu": f"{record['mfu']:.1%}"})
            window.update(t=now, tokens=0.0, steps=0)
        if step == recipe.num_steps:
          break
        state = new_state
        pending = (step, metrics)
        done = step + 1
        if done % cfg.loop.eval_every == 0 and done < recipe.num_steps:
          last_eval = evaluate(done, state)
        if stop.received or (done % cfg.loop.checkpoint_every == 0 and done < recipe.num_steps):
          # tokens_seen covers the steps before this one, whose metrics are still pending
          save(done, state, tokens_seen + float(jax.device_get(metrics.get("tokens", 0.0))))
        if stop.received:
          status = f"interrupted by {stop.received}"
          tracker.event("stopped", step=done, signal=stop.received)
          tracker.message(f"{stop.received}: saved the checkpoint at step {done}; "
                          "run the same command again to resume")
          break
    if status == "finished":
      last_eval = evaluate(recipe.num_steps, state)
      save(recipe.num_steps, state, tokens_seen)
  finally:
    ckpt.wait()
    ckpt.close()
    tracker.close()

  if status != "finished":
    return {"status": status}
  records = tracking.read_metrics(tracker.path, kind="train")
  tail = records[-min(10, len(records)):]
  summary = {
      "status": status,
      "run_id": run_id,
      "steps": recipe.num_steps,
      "tokens": tokens_seen,
      "flops": tokens_seen * recipe.flops_per_token,
      "train_loss_last10": float(np.mean([r["loss"] for r in tail])) if tail else None,
      **{f"final_{k}": v for k, v in last_eval.items()},
      "wall_s": wall_offset + time.time() - wall_start,
      "peak_flops": peak,
      "peak_flops_source": peak_source,
      "devices": mesh.size,
      **recipe.facts,
  }
  atomic_write_json(os.path.join(workdir, "summary.json"), summary)
  return summary
