"""End-to-end runs of the tiny LM: sharding (data, FSDP, tensor parallel) and microbatch
equivalence, resume after SIGKILL, SIGTERM, divergence."""

import os
import signal
import subprocess

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from launch.__main__ import main
from lm_helpers import (killed_run, launch_tiny, losses, run_tiny, summary, tiny_args,
                        wait_for_step)

STEPS = 10


@pytest.fixture(scope="module")
def single_device_losses(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("one")
  assert run_tiny(workdir, STEPS, "mesh.data=1", "mesh.fsdp=1") == 0
  return losses(workdir)


@pytest.mark.parametrize("mesh", [("mesh.data=8", "mesh.fsdp=1"), ("mesh.data=1", "mesh.fsdp=8"),
                                  ("mesh.data=2", "mesh.fsdp=4"),
                                  ("mesh.data=2", "mesh.fsdp=2", "mesh.model=2"),
                                  ("mesh.data=2", "mesh.fsdp=4", "train.microbatches=2")],
                         ids=["dp8", "fsdp8", "dp2xfsdp4", "dp2xfsdp2xtp2", "dp2xfsdp4-micro2"])
def test_sharded_runs_match_one_device(tmp_path, single_device_losses, mesh):
  assert run_tiny(tmp_path, STEPS, *mesh) == 0
  sharded = losses(tmp_path)
  assert sorted(sharded) == list(range(STEPS))
  ref = np.array([single_device_losses[s] for s in range(STEPS)])
  got = np.array([sharded[s] for s in range(STEPS)])
  np.testing.assert_allclose(got, ref, rtol=1e-5)
  assert ref[-1] < ref[0]  # it learns


def test_summary_and_rerun_reports_finished(tmp_path, capsys):
  assert run_tiny(tmp_path, 4) == 0
  s = summary(tmp_path)
  assert s["status"] == "finished" and s["steps"] == 4
  assert s["tokens"] == 4 * 16 * 32
  assert s["flops"] == pytest.approx(s["tokens"] * s["flops_per_token"]["full"])
  assert s["params_total"] == s["params_embedding"] + s["params_non_embedding"]
  assert s["final_val_loss"] > s["entropy_rate_nats"]
  assert s["final_val_bpb"] == pytest.approx(s["final_val_loss"] / np.log(2))
  for name in ("config.json", "metrics.jsonl", "summary.json", "curves.png"):
    assert os.path.exists(tmp_path / name)
  assert 4 in [int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()]
  capsys.readouterr()
  assert run_tiny(tmp_path, 4) == 0
  assert "already finished" in capsys.readouterr().out


def test_token_budget_is_honoured_exactly(tmp_path):
  budget = 3 * 16 * 32 + 100  # a partial last batch
  assert run_tiny(tmp_path, 3, f"train.tokens={budget}") == 0
  s = summary(tmp_path)
  assert s["steps"] == 4 and s["tokens"] == budget


def test_other_config_in_same_workdir_is_refused(tmp_path, capsys):
  assert run_tiny(tmp_path, 2) == 0
  assert main(["run"] + tiny_args(tmp_path, 2, "model.d_model=64")) == 2
  assert "different config" in capsys.readouterr().err


def test_sigkill_then_resume_gives_the_uninterrupted_losses(tmp_path):
  steps, extra = 40, ("loop.checkpoint_every=5", "mesh.data=2", "mesh.fsdp=2")
  full = tmp_path / "full"
  assert run_tiny(full, steps, *extra) == 0
  killed = tmp_path / "killed"
  killed_run(killed, steps, 17, *extra)
  proc = launch_tiny(killed, steps, *extra, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                     text=True)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out
  assert "resumed from the checkpoint at step" in out
  assert losses(killed) == losses(full)  # exactly, step by step
  assert summary(killed)["tokens"] == summary(full)["tokens"]


def test_sigterm_saves_and_exits_143_then_resumes_without_a_gap(tmp_path):
  killed = tmp_path / "killed"
  proc = launch_tiny(killed, 400, "loop.checkpoint_every=1000", stdout=subprocess.PIPE,
                     stderr=subprocess.STDOUT, text=True)
  wait_for_step(killed, 5, proc)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 143, out  # a scheduler must not take it for a finished run
  assert "SIGTERM: saved the checkpoint at step" in out
  saved = [int(d) for d in os.listdir(killed / "checkpoints") if d.isdigit()]
  assert saved and 5 <= max(saved) < 400
  assert not os.path.exists(killed / "summary.json")
  assert sorted(losses(killed)) == list(range(max(saved)))  # every step before the checkpoint
  assert run_tiny(killed, 400, "loop.checkpoint_every=1000") == 0
  full = tmp_path / "full"
  assert run_tiny(full, 400, "loop.checkpoint_every=1000") == 0
  assert losses(killed) == losses(full)


def test_corrupt_latest_checkpoint_falls_back_with_a_warning(tmp_path):
  assert run_tiny(tmp_path, 6, "loop.checkpoint_every=2") == 0
  ckpts = tmp_path / "checkpoints"
  # Pretend the run was killed after step 6's checkpoint, then damage that checkpoint.
  os.remove(tmp_path / "summary.json")
  for root, _, files in os.walk(ckpts / "6"):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  with pytest.warns(UserWarning, match="checkpoint at step 6 .* could not be read"):
    assert run_tiny(tmp_path, 6, "loop.checkpoint_every=2") == 0
  assert summary(tmp_path)["status"] == "finished"


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
  code = run_tiny(tmp_path, 30, "train.lr=1e9", "train.grad_clip=0", "train.schedule=constant",
                  "loop.checkpoint_every=1")
  assert code == 1
  err = capsys.readouterr().err
  assert "training diverged" in err and "last good checkpoint" in err
  assert not os.path.exists(tmp_path / "summary.json")
  steps = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
  assert steps, "no checkpoint survived"
  restored = ocp.StandardCheckpointer().restore(tmp_path / "checkpoints" / str(steps[-1]) / "state")
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(restored["params"]))


def test_wandb_offline_run_is_written(tmp_path, monkeypatch):
  pytest.importorskip("wandb")
  monkeypatch.setenv("WANDB_MODE", "offline")
  monkeypatch.setenv("WANDB_DIR", str(tmp_path))
  monkeypatch.setenv("WANDB_SILENT", "true")
  workdir = tmp_path / "run"
  assert run_tiny(workdir, 3, "tracking.wandb_project=scaling-lab-test",
                  "tracking.wandb_mode=offline") == 0
  runs = [p for p in (workdir / "wandb").iterdir() if p.name.startswith("offline-run-")]
  assert runs, os.listdir(workdir / "wandb")
  assert any(f.suffix == ".wandb" for f in runs[0].iterdir())


def test_checkpoints_of_another_run_are_not_restored(tmp_path, capsys):
  assert run_tiny(tmp_path, 3) == 0
  os.remove(tmp_path / "config.json")  # as if the folder were reused carelessly
  os.remove(tmp_path / "summary.json")
  assert main(["run"] + tiny_args(tmp_path, 3, "model.d_model=64")) == 2
  assert "belong to run" in capsys.readouterr().err
