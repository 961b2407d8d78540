"""The Slurm backend against a real single-node cluster (slurmctld, slurmd, slurmdbd, MariaDB).

The cluster is started once for this module (tests/slurm_cluster.py). Where Slurm is not
installed these tests skip; in CI (SCALING_LAB_REQUIRE_SHARED=1) that is a failure.
"""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

import slurm_cluster
import sweep_helpers as sh
from launch.__main__ import main
from lm_helpers import losses

REQUEUE_PLAN = ("--config.sweep.d_models=(16,)", "--config.sweep.tokens=(655360,)",
                "--config.loop.checkpoint_every=20", "--config.loop.log_every=1")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
  missing = slurm_cluster.missing_programs()
  if missing:
    message = (f"Slurm is not installed ({', '.join(missing)} missing; .ci/run installs Debian's "
               "slurmctld slurmd slurm-client slurmdbd munge mariadb-server)")
    if os.environ.get("SCALING_LAB_REQUIRE_SHARED") == "1":
      pytest.fail(message + " (SCALING_LAB_REQUIRE_SHARED=1)")
    pytest.skip(message)
  folder = tmp_path_factory.mktemp("slurm")
  env = slurm_cluster.start(str(folder))
  previous = os.environ.get("SLURM_CONF")
  os.environ["SLURM_CONF"] = env["SLURM_CONF"]
  yield env
  slurm_cluster.stop(str(folder))
  if previous is None:
    os.environ.pop("SLURM_CONF", None)
  else:
    os.environ["SLURM_CONF"] = previous


def _slurm_args(spec, workdir, *extra):
  return sh.sweep_args(spec, workdir, "--backend", "slurm", "--time", "10", *extra)


def _job_of(workdir, run: str) -> str:
  return json.loads((workdir / "slurm" / "jobs.json").read_text())["runs"][run]["job"]


def test_smoke_sweep_through_slurm_matches_the_local_backend(slurm, smoke_sweep, tmp_path):
  workdir = tmp_path / "sweep-smoke"
  code, out = sh.run("sweep", *_slurm_args(sh.SMOKE, workdir, "--wait"))
  assert code == 0, out
  assert "submitted array" in out and "analysis job COMPLETED" in out, out
  ours = pd.read_csv(workdir / "runs.csv").drop(columns="wall_s")
  local = pd.read_csv(smoke_sweep[0] / "runs.csv").drop(columns="wall_s")
  pd.testing.assert_frame_equal(ours, local)  # the same runs, bit for bit
  for run in ours.run:
    assert (workdir / "runs" / run / "log.txt").exists()
  analysis_log = [p for p in (workdir / "slurm").iterdir() if p.name.endswith("_log.out")]
  assert any("analysis (" in p.read_text() for p in analysis_log)

  code, out = sh.run("sweep", *_slurm_args(sh.SMOKE, workdir))
  assert code == 0, out
  assert "8 finished, 0 queued, 0 to submit" in out and "submitted array" not in out
  code, out = sh.run("status", "--workdir", str(workdir))
  assert code == 0 and "8 done" in out and "Slurm: 8 completed" in out, out


def _wait_for(condition, timeout=180, describe=lambda: ""):
  slurm_cluster.wait_for(condition, getattr(condition, "__name__", "a condition"), timeout,
                         describe)


def _queue_line(job: str) -> str:
  return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T %r"], capture_output=True,
                        text=True).stdout.strip()


def _tail(path, lines=15) -> str:
  try:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
  except OSError:
    return "(none)"


@pytest.mark.parametrize("preempt", [
    ["scontrol", "requeue"],              # Slurm sends SIGTERM and requeues: preemption's stand-in
    ["scancel", "--signal=USR2"],         # submitit's time-limit signal: the analysis resubmits
], ids=["requeue", "usr2"])
def test_preempted_task_resumes_from_the_checkpoint(slurm, tmp_path, preempt):
  reference = tmp_path / "local"
  code, out = sh.run("sweep", *sh.sweep_args(sh.SMOKE, reference, *REQUEUE_PLAN))
  assert code == 0, out
  workdir = tmp_path / "slurm"
  code, out = sh.run("sweep", *_slurm_args(sh.SMOKE, workdir, *REQUEUE_PLAN))
  assert code == 0, out
  run = json.loads((workdir / "sweep.json").read_text())["runs"][0]["run"]
  folder = workdir / "runs" / run
  code, status = sh.run("status", "--workdir", str(workdir))
  assert "Slurm: 1 pending" in status or "Slurm: 1 running" in status, status

  def checkpointed():
    return (folder / "checkpoints").is_dir() and any(
        d.isdigit() for d in os.listdir(folder / "checkpoints"))

  _wait_for(checkpointed)
  job = _job_of(workdir, run)
  subprocess.run(preempt + [job], check=True)
  _wait_for(lambda: "interrupted" in (folder / "status.json").read_text())

  def finished():  # Slurm holds a requeued job for about two minutes: release it whenever held
    newest = _job_of(workdir, run)  # after SIGUSR2 the analysis job submits the run again
    if "BeginTime" in _queue_line(newest):
      subprocess.run(["scontrol", "update", f"JobId={newest}", "StartTime=now"], check=False)
    return (folder / "summary.json").exists()

  def describe():
    logs = sorted((workdir / "slurm").glob("*.out")) + sorted((workdir / "slurm").glob("*.err"))
    jobs = ",".join(sorted({job, _job_of(workdir, run)}))
    accounting = subprocess.run(["sacct", "-n", "-P", "-D", "-j", jobs, "-o",
                                 "JobID,State,ExitCode,Reason,Start,End"],
                                capture_output=True, text=True).stdout.strip()
    return (f"queue: {_queue_line(job)!r}; sacct (every requeue):\n{accounting}\n"
            f"status.json: {_tail(folder / 'status.json')}; "
            f"log.txt:\n{_tail(folder / 'log.txt')}\n"
            + "\n".join(f"{p.name}:\n{_tail(p)}" for p in logs[-4:]))

  _wait_for(finished, timeout=420, describe=describe)
  if preempt[0] == "scancel":  # the task ended; the analysis job put the run in a new array
    assert _job_of(workdir, run).split("_")[0] != job.split("_")[0]
  log = (folder / "log.txt").read_text()
  assert "SIGTERM: saved the checkpoint at step" in log  # USR2 reaches the loop as SIGTERM
  assert "resumed from the checkpoint at step" in log
  assert losses(folder) == losses(reference / "runs" / run)

  # Should the analysis job start while the task is requeued (afterany counts the end of its
  # first run), it goes after the task again (slurm.Analysis): the analysis sees the finished run.
  def analysed():
    return (workdir / "runs.csv").exists() and run in (workdir / "runs.csv").read_text()

  _wait_for(analysed, timeout=180, describe=describe)


@pytest.mark.parametrize("extra,expected", [
    (("--partition", "nope"), "Slurm refused the job: allocation failure: Invalid partition name"),
    (("--runs-per-task", "0"), "--runs-per-task 0: must be at least 1"),
    (("--time", "1"), "Slurm signals a job 90 s before its time limit"),
    (("--time", "3", "--config.loop.checkpoint_every=100000", "--config.sweep.tokens=(32768000,)"),
     "to reach a checkpoint"),
    (("--time", "ten"), "--time 'ten': give minutes or Slurm's [D-]HH:MM:SS"),
], ids=["partition", "runs-per-task", "time", "interval", "time-format"])
def test_bad_slurm_input_exits_2_and_submits_nothing(slurm, tmp_path, capsys, extra, expected):
  workdir = tmp_path / "sweep"
  args = sh.sweep_args(sh.SMOKE, workdir, "--backend", "slurm", *extra)
  if "--time" not in extra:
    args += ["--time", "10"]
  code = main(["sweep", *args])
  err = capsys.readouterr().err
  assert code == 2 and err.startswith("error: ") and expected in err, err
  assert len(err.strip().splitlines()) == 1
  assert not workdir.exists()
  names = subprocess.run(["sacct", "-n", "-X", "-o", "JobName%60"], capture_output=True,
                         text=True).stdout.split()
  assert "sweep-sweep" not in names and "analyze-sweep" not in names  # nothing submitted


def test_no_sbatch_on_path(tmp_path, capsys, monkeypatch):
  monkeypatch.setenv("PATH", str(tmp_path))
  code = main(["sweep", *sh.sweep_args(sh.SMOKE, tmp_path / "w", "--backend", "slurm")])
  err = capsys.readouterr().err
  assert code == 2 and "needs Slurm's sbatch on PATH" in err, err
  assert not (tmp_path / "w").exists()


def test_one_run_over_two_slurm_tasks(slurm, tmp_path):
  """`srun -n 2 python -m launch run ...`: JAX forms one job from Slurm's environment."""
  from lm_helpers import REPO, run_tiny, tiny_args
  import numpy as np
  single = tmp_path / "single"
  assert run_tiny(single, 6, "mesh.data=1", "mesh.fsdp=1") == 0
  workdir = tmp_path / "two"
  done = subprocess.run(["srun", "-n", "2", "-c", "1", sys.executable, "-m", "launch", "run",
                         *tiny_args(workdir, 6, "mesh.data=2")], cwd=REPO, env=sh.env(),
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stdout + done.stderr
  assert "on 2 device(s)" in done.stdout
  two, one = losses(workdir), losses(single)
  np.testing.assert_allclose([two[s] for s in range(6)], [one[s] for s in range(6)], rtol=1e-5)


def _fake_executors(monkeypatch) -> list:
  """slurm._executor replaced by one that records (job name, dependency, submitted callable)."""
  from launch.backends import slurm
  submitted = []

  class Job:
    def __init__(self, array, k):
      self.job_id = f"{array}_{k}"

  class Executor:
    def __init__(self, name, more):
      self.name, self.more, self.array, self.count = name, more, 100 + len(submitted), 0

    def batch(self):
      import contextlib
      return contextlib.nullcontext()

    def submit(self, fn, *args):
      submitted.append((self.name, self.more.get("dependency"), fn))
      self.count += 1
      return Job(self.array, self.count - 1)

  monkeypatch.setattr(slurm, "_executor",
                      lambda folder, options, threads, name, **more: Executor(name, more))
  return submitted


def test_branches_go_in_a_later_array_that_waits_for_their_parents(tmp_path, monkeypatch):
  """Submission order and dependencies of a plan with WSD branches (no cluster needed)."""
  from launch import worker
  from launch.backends import slurm

  submitted = _fake_executors(monkeypatch)
  record = {"name": "s", "study": "x.py", "runs": [{"run": r} for r in ("p", "b1", "b2", "q")]}
  tasks = [worker.Task(r, str(tmp_path / r), {}, "x.py", "s", after)
           for r, after in (("p", ""), ("b1", "p"), ("b2", "p"), ("q", ""))]
  jobs = slurm.submit(str(tmp_path), record, tasks, slurm.Options(), 1)
  arrays = [(name, dep, [t.run_id for t in fn.tasks] if hasattr(fn, "tasks") else None)
            for name, dep, fn in submitted]
  assert arrays[:2] == [("sweep-s", None, ["p"]), ("sweep-s", None, ["q"])]
  first = jobs["runs"]["p"].split("_")[0]
  assert arrays[2:4] == [("sweep-s", f"afterany:{first}", ["b1"]),
                         ("sweep-s", f"afterany:{first}", ["b2"])]
  assert arrays[4][0] == "analyze-s" and arrays[4][1] == f"afterany:{jobs['runs']['b1'][:3]}"


def test_analysis_submits_again_the_unfinished_runs_of_tasks_that_moved(tmp_path, monkeypatch):
  """After SIGUSR2 a task just ends; the analysis job resubmits what it left (no cluster needed).
  Task 0 finished a1 and was stopped before a2; task 1 checkpointed b1 further (step 20 -> 40);
  task 2 died at c1's old checkpoint (no progress: not resubmitted for ever); task 3's d1 is
  still queued (Slurm requeued it): the analysis waits for it too, and nothing is analysed yet."""
  from launch.backends import slurm
  from launch import plan as plan_lib
  submitted = _fake_executors(monkeypatch)
  runs = {"a1": "0", "a2": "0", "b1": "1", "c1": "2", "d1": "3"}
  record = {"name": "s", "study": "x.py", "runs": [{"run": r, "config": {}} for r in runs]}
  (tmp_path / "sweep.json").write_text(json.dumps(record))
  for run in runs:
    (tmp_path / "runs" / run).mkdir(parents=True)
  (tmp_path / "runs" / "a1" / "summary.json").write_text("{}")
  for run, step in (("b1", 40), ("c1", 20), ("d1", 20)):
    (tmp_path / "runs" / run / "checkpoints" / str(step)).mkdir(parents=True)
    (tmp_path / "runs" / run / "checkpoints" / str(step) / "state").write_text("x")
    (tmp_path / "runs" / run / "status.json").write_text('{"status": "interrupted"}')
  (tmp_path / "slurm").mkdir()
  (tmp_path / "slurm" / "jobs.json").write_text(json.dumps({"analysis": [], "runs": {
      run: {"job": f"7_{task}", "time": 0.0, "step": 20 if run in ("b1", "c1") else -1}
      for run, task in runs.items()}}))
  monkeypatch.setattr(slurm, "queue_states", lambda workdir, fresh_as_pending=True: {
      run: "PENDING" if run == "d1" else "COMPLETED" for run in runs})
  monkeypatch.setattr(plan_lib, "analyze", lambda workdir: pytest.fail("analysed too early"))

  out = slurm.Analysis(str(tmp_path), "s", slurm.Options(), threads=1)()
  arrays = [(name, dep, [t.run_id for t in fn.tasks] if hasattr(fn, "tasks") else None)
            for name, dep, fn in submitted]
  assert arrays[0] == ("sweep-s", None, ["a2"]) and arrays[1] == ("sweep-s", None, ["b1"])
  assert arrays[2][0] == "analyze-s" and arrays[2][1] == f"afterany:{out['resubmitted']}:7_3"
  assert len(arrays) == 3  # c1 and d1 are not resubmitted
  jobs = json.loads((tmp_path / "slurm" / "jobs.json").read_text())
  assert jobs["runs"]["b1"]["step"] == 40 and jobs["runs"]["c1"]["job"] == "7_2"
  assert jobs["analysis"][-1]["job"] == out["deferred to"]

  # the next analysis job: every run has ended and nothing moved: c1 stays as it is
  (tmp_path / "runs" / "a2" / "summary.json").write_text("{}")
  (tmp_path / "runs" / "b1" / "summary.json").write_text("{}")
  (tmp_path / "runs" / "d1" / "summary.json").write_text("{}")
  monkeypatch.setattr(slurm, "queue_states", lambda workdir, fresh_as_pending=True: {
      run: "COMPLETED" for run in runs})
  monkeypatch.setattr(plan_lib, "analyze", lambda workdir: {"analysed": workdir})
  assert slurm.Analysis(str(tmp_path), "s", slurm.Options())() == {"analysed": str(tmp_path)}
  assert len(submitted) == 3
