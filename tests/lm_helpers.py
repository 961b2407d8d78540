"""Tiny language-model runs for the tests: a config small enough to compile and train in seconds."""

import json
import os
import subprocess
import sys
import time

from launch import run as run_cmd
from research import tracking

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = ("model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.d_ff=64",
        "model.context=32", "train.seq_len=32", "train.batch_size=16", "train.warmup_steps=2",
        "loop.log_every=1", "loop.eval_every=1000", "data.val_batches=1",
        "tracking.progress=false", "tracking.peak_flops=1e11")


def tiny_args(workdir, steps: int, *extra: str) -> list[str]:
  overrides = TINY + (f"train.tokens={steps * 16 * 32}",) + extra
  return (["--config", os.path.join(REPO, "experiments", "lm.py") + ":smoke",
           "--workdir", str(workdir)] + [f"--config.{o}" for o in overrides])


def run_tiny(workdir, steps: int, *extra: str) -> int:
  """Train in this process (8 fake devices from conftest)."""
  return run_cmd.main(tiny_args(workdir, steps, *extra))


def launch_tiny(workdir, steps: int, *extra: str, **popen) -> subprocess.Popen:
  """Train in a child process: `python -m launch run ...`."""
  return subprocess.Popen([sys.executable, "-m", "launch", "run"] +
                          tiny_args(workdir, steps, *extra), cwd=REPO, **popen)


def losses(workdir) -> dict[int, float]:
  return {r["step"]: r["loss"] for r in
          tracking.read_metrics(os.path.join(str(workdir), "metrics.jsonl"))}


def summary(workdir) -> dict:
  with open(os.path.join(str(workdir), "summary.json")) as f:
    return json.load(f)


def wait_for_step(workdir, step, proc, timeout=120):
  """Waits until the child run `proc` has logged `step` in workdir/metrics.jsonl."""
  path = os.path.join(str(workdir), "metrics.jsonl")
  deadline = time.time() + timeout
  while time.time() < deadline:
    assert proc.poll() is None, "training ended before it could be interrupted"
    if os.path.exists(path) and any(r["step"] >= step for r in tracking.read_metrics(path)):
      return
    time.sleep(0.05)
  raise AssertionError(f"step {step} not reached in {timeout} s")


def killed_run(workdir, steps: int, kill_at: int, *extra: str) -> None:
  """A child run of `steps` steps killed with SIGKILL once it has logged step `kill_at`."""
  proc = launch_tiny(workdir, steps, *extra, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
  wait_for_step(workdir, kill_at, proc)
  proc.kill()
  proc.wait()
  assert not os.path.exists(os.path.join(str(workdir), "summary.json"))
