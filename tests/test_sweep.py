"""The sweep command end to end: plan, train in workers, analyse; idempotence and kill -9 safety."""

import json
import math
import os
import signal
import time

import pandas as pd
import pytest

import sweep_helpers as sh
from lm_helpers import losses
from research import store

TINY_PLAN = ("--config.sweep.d_models=(16,32)", "--config.sweep.tokens=(40960,163840)",
             "--config.loop.checkpoint_every=5", "--config.loop.log_every=1")
REQUIRED = ("run", "N", "N_nonemb", "D", "C", "flop_convention", "train_loss", "val_loss",
            "wall_s", "status")


def test_smoke_sweep_writes_runs_fit_and_figures(smoke_sweep):
  workdir, out = smoke_sweep
  assert "8 runs, 1.963e+12 FLOPs to train in all" in out and "trained 8 run(s)" in out
  df = pd.read_csv(workdir / "runs.csv")
  assert len(df) == 8 and set(REQUIRED) <= set(df.columns)
  assert (df.status == "finished").all() and df.val_loss.notna().all()
  assert {"model.d_model", "model.n_heads", "model.d_ff", "train.tokens"} <= set(df.columns)
  assert set(df["train.tokens"]) == {409_600, 819_200} and (df.D == df["train.tokens"]).all()
  assert (df.N > df.N_nonemb).all() and (df.flop_convention == "full").all()
  for tokens, group in df.groupby("D"):  # more parameters, lower held-out loss
    assert group.sort_values("N").val_loss.is_monotonic_decreasing, group
  fit = json.loads((workdir / "fit.json").read_text())
  assert fit["finished"] == 8 and len(fit["budgets"]) == 2
  for budget in fit["budgets"]:
    assert budget["converged"] and budget["params"]["alpha"] > 0
    predicted = [budget["params"]["E"] + budget["params"]["A"] * n ** -budget["params"]["alpha"]
                 for n in budget["N_nonemb"]]
    assert max(abs(p - l) for p, l in zip(predicted, budget["L"])) < 0.1
  for name in ("loss_vs_n_c.png", "loss_vs_n_c.pdf"):
    assert (workdir / name).stat().st_size > 1000
  record = json.loads((workdir / "sweep.json").read_text())
  assert record["threads_per_run"] == 1 and len(record["runs"]) == 8


def test_second_launch_trains_nothing_and_touches_nothing(smoke_sweep):
  workdir, _ = smoke_sweep
  before = sh.fingerprint(workdir / "runs")
  code, out = sh.run("sweep", *sh.sweep_args(sh.SMOKE, workdir))
  assert code == 0, out
  assert "8 finished, 0 to train" in out
  assert sh.fingerprint(workdir / "runs") == before


def test_status_of_a_finished_sweep(smoke_sweep):
  workdir, _ = smoke_sweep
  code, out = sh.run("status", "--workdir", str(workdir))
  assert code == 0, out
  assert "8 runs: 8 done, 0 running, 0 failed, 0 pending" in out
  assert "(100%)" in out


def test_analyze_warns_about_missing_runs(smoke_sweep, tmp_path):
  import shutil
  copy = tmp_path / "copy"
  shutil.copytree(smoke_sweep[0], copy, ignore=shutil.ignore_patterns("checkpoints", ".cache"))
  record = json.loads((copy / "sweep.json").read_text())
  missing = record["runs"][3]["run"]
  os.remove(copy / "runs" / missing / "summary.json")
  code, out = sh.run("analyze", "--workdir", str(copy))
  assert code == 0, out
  assert "warning: 1 of 8 runs have not finished" in out and missing in out
  df = pd.read_csv(copy / "runs.csv")
  assert df.set_index("run").loc[missing, "status"] != "finished"
  assert json.loads((copy / "fit.json").read_text())["finished"] == 7


def test_analyze_a_sweep_planned_in_another_checkout(smoke_sweep, tmp_path):
  import shutil
  copy = tmp_path / "moved"
  shutil.copytree(smoke_sweep[0], copy, ignore=shutil.ignore_patterns("checkpoints", ".cache"))
  record = json.loads((copy / "sweep.json").read_text())
  study, record["study"] = record["study"], str(tmp_path / "gone" / "study.py")
  (copy / "sweep.json").write_text(json.dumps(record))
  code, out = sh.run("analyze", "--workdir", str(copy))
  assert code == 2 and "does not exist" in out and "--study" in out, out
  code, out = sh.run("analyze", "--workdir", str(copy), "--study", study)
  assert code == 0, out
  assert json.loads((copy / "fit.json").read_text())["finished"] == 8


def _wait(condition, proc, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline:
    assert proc.poll() is None, "the sweep ended before it could be killed"
    found = condition()
    if found:
      return found
    time.sleep(0.05)
  raise AssertionError("condition not reached in time")


def test_kill_9_of_sweep_and_workers_then_relaunch(tmp_path):
  """Finished runs stay untouched, interrupted ones resume and end with the uninterrupted losses."""
  reference = tmp_path / "reference"
  code, out = sh.run("sweep", *sh.sweep_args(sh.SMOKE, reference, *TINY_PLAN))
  assert code == 0, out
  record = json.loads((reference / "sweep.json").read_text())
  runs = [r["run"] for r in record["runs"]]

  killed = tmp_path / "killed"
  proc = sh.launch("sweep", *sh.sweep_args(sh.SMOKE, killed, *TINY_PLAN),
                   stdout=open(tmp_path / "first.log", "w"), stderr=-2, start_new_session=True)

  def checkpointed(r):
    try:
      return any(d.isdigit() for d in os.listdir(killed / "runs" / r / "checkpoints"))
    except FileNotFoundError:
      return False

  def done(r):
    """Its worker has written its last file: status finished, no write under way (a run's
    summary comes before its final status, so summary.json alone is too early)."""
    folder = killed / "runs" / r
    try:
      writing = any(name.startswith(".tmp-") for name in os.listdir(folder))
    except FileNotFoundError:
      return False
    return not writing and store.read_status(str(folder)).get("status") == "finished"

  def finished_and_midway():
    finished = [r for r in runs if done(r)]
    midway = [r for r in runs if r not in finished and checkpointed(r)]
    return (finished, midway) if finished and midway else None

  finished, midway = _wait(finished_and_midway, proc)
  kept = {r: sh.fingerprint(killed / "runs" / r) for r in finished}
  os.killpg(proc.pid, signal.SIGKILL)  # the parent and its workers, at once
  proc.wait()
  code, out = sh.run("sweep", *sh.sweep_args(sh.SMOKE, killed, *TINY_PLAN))
  assert code == 0, out
  assert f"{len(finished)} finished" in out and "to resume" in out
  for r in finished:
    assert sh.fingerprint(killed / "runs" / r) == kept[r], f"finished run {r} was touched"
  for r in midway:
    log = (killed / "runs" / r / "log.txt").read_text()
    assert "resumed from the checkpoint at step" in log
  for r in runs:
    assert losses(killed / "runs" / r) == losses(reference / "runs" / r), r
  assert (killed / "runs.csv").exists()


def test_a_failed_run_does_not_stop_the_others_and_is_retried(tmp_path):
  workdir = tmp_path / "toy"
  code, out = sh.run("sweep", *sh.sweep_args(f"{sh.TOY}:sweep", workdir),
                     extra_env={"TOY_FAIL_WIDTH": "8", "TOY_DIE_WIDTH": "16"})
  assert code == 1, out
  df = pd.read_csv(workdir / "runs.csv").set_index("model.width")
  assert df.loc[4, "status"] == "finished" and math.isfinite(df.loc[4, "val_loss"])
  assert df.loc[8, "status"] == "failed" and df.loc[16, "status"] == "failed"
  assert "RuntimeError: toy failure at step 3" in out
  assert "worker process died (exit code 9)" in out
  code, status = sh.run("status", "--workdir", str(workdir))
  assert code == 0 and "3 runs: 1 done, 0 running, 2 failed, 0 pending" in status, status
  lines = status.splitlines()
  last = [l for l in lines if "last log line" in l]
  assert len(last) == 2 and any(l.endswith("failed: RuntimeError: toy failure at step 3")
                                for l in last), status
  assert any("the worker process died (exit code 9)" in l for l in last), status
  code, out = sh.run("sweep", *sh.sweep_args(f"{sh.TOY}:sweep", workdir))
  assert code == 0, out
  assert "1 finished, 2 to train (0 to resume, 2 to retry, 0 new)" in out
  assert (pd.read_csv(workdir / "runs.csv").status == "finished").all()


def test_sweep_runs_log_to_one_wandb_group(tmp_path):
  pytest.importorskip("wandb")
  workdir = tmp_path / "grouped"
  code, out = sh.run("sweep", *sh.sweep_args(f"{sh.TOY}:sweep", workdir, "--workers", "1",
                                             "--config.tracking.wandb_project=toy"),
                     extra_env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
  assert code == 0, out
  record = json.loads((workdir / "sweep.json").read_text())
  for r in record["runs"]:
    files = [os.path.join(root, f) for root, _, fs in os.walk(workdir / "runs" / r["run"] / "wandb")
             for f in fs if f.endswith(".wandb")]
    assert files, r["run"]
    assert all(b"grouped" in open(f, "rb").read() for f in files)


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
  workdir = tmp_path / "dry"
  code, out = sh.run("sweep", *sh.sweep_args(sh.SMOKE, workdir, "--dry-run"))
  assert code == 0, out
  lines = [l for l in out.splitlines() if len(l.split()) > 5 and l.split()[0].isalnum()
           and len(l.split()[0]) == 12]
  assert len(lines) == 8 and "dry run" in out
  assert "8 runs, 1.963e+12 FLOPs to train in all" in out
  assert not workdir.exists()


def test_threads_per_run_are_fixed_by_the_plan(tmp_path):
  from launch.__main__ import main
  workdir = tmp_path / "toy"
  code, out = sh.run("sweep", *sh.sweep_args(f"{sh.TOY}:sweep", workdir))
  assert code == 0, out
  assert main(["sweep", *sh.sweep_args(f"{sh.TOY}:sweep", workdir, "--threads-per-worker",
                                       "2")]) == 2


def test_run_store_states(tmp_path):
  folder = tmp_path / "r"
  assert store.run_state(str(folder)) == "pending"
  from research.config import run_id_of
  run_id = run_id_of({"a": 1})  # config.json's run id must be its config's hash
  assert store.claim(str(folder), {"a": 1}, run_id) == "new"
  assert store.claim(str(folder), {"a": 1}, run_id) == "new"
  (folder / "checkpoints" / "5.orbax-checkpoint-tmp").mkdir(parents=True)
  (folder / "checkpoints" / "10").mkdir()
  assert store.run_state(str(folder)) == "pending"  # nothing saved: no step to resume from
  (folder / "checkpoints" / "10" / "state").write_text("x")
  assert store.saved_steps(str(folder / "checkpoints")) == [10]
  assert store.run_state(str(folder)) == "interrupted"
  store.write_status(str(folder), "running", pid=1)
  assert store.run_state(str(folder)) == "interrupted"  # running, but nobody holds the lock
  lock = store.RunLock(str(folder))
  assert lock.acquire()
  assert store.run_state(str(folder)) == "running"
  lock.release()
  store.write_status(str(folder), "failed", reason="x")
  assert store.run_state(str(folder)) == "failed"
  assert json.loads((folder / "status.json").read_text())["attempt"] == 1


def test_run_as_a_function_leaks_no_threads_or_files(tmp_path):
  """A worker calls run() many times: no checkpoint manager, tracker or file stays open."""
  import threading
  from research import config as config_lib
  from research.train import run as run_lib
  cfg, toy = config_lib.load(f"{sh.TOY}:one")
  summaries = [run_lib.run(cfg, toy, str(tmp_path / "warm"), log=lambda *a: None)]
  threads = threading.active_count()
  for i in range(3):
    summaries.append(run_lib.run(cfg, toy, str(tmp_path / f"r{i}"), log=lambda *a: None))
  assert threading.active_count() <= threads
  open_files = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                if os.path.exists(f"/proc/self/fd/{fd}")]
  assert not [f for f in open_files if str(tmp_path) in f], open_files
  assert len({s["final_val_loss"] for s in summaries}) == 1  # same config, same numbers
  assert summaries[0]["report"]["unit"] == "examples" and "val_bpb" not in str(summaries[0])
