"""experiments/diffusion.py end to end: validation, the cpu plan, a tiny run through `launch run`
(the generic loop), `launch sample` on it and its bad input, and the analysis's frontier fit."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from experiments import diffusion
from launch.__main__ import main
from lm_helpers import REPO
from research import config as config_lib
from research.diffusion import frontier
from research.errors import ConfigError

STUDY = os.path.join(REPO, "experiments", "diffusion.py")
TINY = ("model.ch=8", "model.ch_mult=(1,)", "model.attn_resolutions=()", "model.groups=4",
        "diffusion.steps=20", "train.steps=4", "train.batch_size=16", "train.warmup_steps=0",
        "eval.n_samples=16", "eval.sampling_steps=3", "eval.batch_size=16",
        "eval.kid_subsets=5", "eval.kid_subset_size=16", "loop.eval_every=2",
        "loop.checkpoint_every=2", "loop.log_every=1", "mesh.data=1", "tracking.progress=false",
        "tracking.peak_flops=1e11", "loop.async_checkpoints=false")


def tiny_config(*extra):
  cfg, _ = config_lib.load(f"{STUDY}:smoke", TINY + extra)
  return cfg


@pytest.mark.parametrize("overrides,field", [
    (("data.source=mnist", "model.image_size=10", "model.ch_mult=(1,2,2)"), "model.image_size"),
    (("eval.sampler=euler",), "eval.sampler"),
    (("eval.sampling_steps=21",), "eval.sampling_steps"),
    (("data.source=imagenet",), "data.source"),
    (("tracking.flop_convention=6N",), "tracking.flop_convention"),
])
def test_bad_config_names_the_field(overrides, field):
  cfg = tiny_config(*overrides)
  with pytest.raises(ConfigError) as e:
    diffusion.validate(cfg)
  assert e.value.field == field


def test_cpu_plan_spans_the_ladder():
  cfg = diffusion.get_config("cpu")
  diffusion.validate(cfg)
  runs = diffusion.plan(cfg)
  assert len(runs) == sum(len(w) for _, w in cfg.sweep.widths)
  sizes = [diffusion.size(r) for r in runs]
  for run in runs:
    diffusion.validate(run)
    assert run.train.steps // run.loop.eval_every == cfg.sweep.evals
  n = [s["N"] for s in sizes]
  assert min(n) < 6e4 and max(n) > 2e6  # about 4e4 to 3e6 parameters
  assert len({config_lib.run_id(r) for r in runs}) == len(runs)


def test_gpu_preset_is_ho_et_als_model():
  cfg = diffusion.get_config("gpu-cifar10")
  diffusion.validate(cfg)
  (run,) = diffusion.plan(cfg)
  assert round(diffusion.size(run)["N"] / 1e6, 1) == 35.7


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("ddpm") / "run"
  args = ["run", "--config", f"{STUDY}:smoke", "--workdir", str(workdir)]
  assert main(args + [f"--config.{o}" for o in TINY]) == 0
  return workdir


def test_run_through_the_generic_loop(tiny_run):
  s = json.load(open(tiny_run / "summary.json"))
  assert s["status"] == "finished" and s["steps"] == 4
  assert s["images"] == 4 * 16 and s["report"]["unit"] == "images"
  assert s["flops"] == pytest.approx(s["images"] * s["flops_per_image"])
  assert not [k for k in s if "token" in k or "embedding" in k]  # no language-model keys
  assert s["fd_name"] == "FD_digits" and s["eval_weights"] == "ema"
  assert np.isfinite(s["final_fd"]) and s["final_fd"] > s["fd_floor"] > 0
  evals = [json.loads(line) for line in open(tiny_run / "metrics.jsonl")
           if '"kind": "eval"' in line]
  assert [e["step"] for e in evals] == [2, 4]
  assert os.path.exists(tiny_run / "curves.png")


def test_sample_writes_a_grid_and_an_npz(tiny_run, tmp_path, capsys):
  out, npz = tmp_path / "grid.png", tmp_path / "s.npz"
  args = ["sample", "--workdir", str(tiny_run), "--n", "5", "--sampler", "ddim", "--steps", "3",
          "--out", str(out), "--npz", str(npz)]
  assert main(args) == 0
  from PIL import Image
  assert Image.open(out).size[0] > 8
  images = np.load(npz)["images"]
  assert images.shape == (5, 8, 8, 1) and images.dtype == np.uint8
  assert main(args) == 0  # deterministic given the seed
  np.testing.assert_array_equal(np.load(npz)["images"], images)


def test_sample_bad_input_is_one_line_and_exit_2(tiny_run, tmp_path, capsys):
  base = ["sample", "--workdir", str(tiny_run), "--out", str(tmp_path / "x.png")]
  cases = [(["--sampler", "euler"], "--sampler 'euler'"),
           (["--steps", "21"], "--steps 21: the run was trained with 20 diffusion steps")]
  lm_run = tmp_path / "lm"
  lm_run.mkdir()
  lm = {"model": {"d_model": 64, "n_layers": 2}}
  (lm_run / "config.json").write_text(json.dumps(
      {"run_id": config_lib.run_id_of(lm), "config": lm}))
  cases.append((["--workdir", str(lm_run)], "checkpoint of a different model family: it trained "
                 "a transformer language model, and launch sample needs a DDPM U-Net"))
  bad_size = tmp_path / "bad"
  bad_size.mkdir()
  record = json.load(open(tiny_run / "config.json"))
  record["config"]["model"].update(image_size=9, ch_mult=[1, 2])
  record["run_id"] = config_lib.run_id_of(record["config"])  # a run of that config, not an edit
  (bad_size / "config.json").write_text(json.dumps(record))
  cases.append((["--workdir", str(bad_size)], "model.image_size"))
  for extra, message in cases:
    capsys.readouterr()
    assert main(base + extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_frontier_and_its_power_law():
  c = np.geomspace(1e11, 1e14, 12)
  floor = 2.0
  fd = floor + 50.0 * (c / 1e12) ** -0.4
  points = pd.DataFrame({"C": np.concatenate([c, c]),
                         "fd": np.concatenate([fd, fd * 1.3])})  # a worse model, off the frontier
  front = points.iloc[frontier.frontier(points)]
  assert len(front) == 12 and np.allclose(front.fd, fd)
  noisy = front.assign(fd=floor + (front.fd - floor) * np.exp(
      np.random.default_rng(0).normal(0, 0.05, 12)))
  result = frontier.fit_frontier(noisy, floor, n_boot=50)
  assert result["a"] == pytest.approx(0.4, abs=0.05)
  lo, hi = result["a_interval"]
  assert 0 < lo < 0.4 < hi


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory):
  import sweep_helpers as sh
  return sh.swept(tmp_path_factory, f"{STUDY}:sweep-smoke", "diffusion")


def test_sweep_analysis_writes_the_issues_tables_and_figures(smoke_sweep):
  runs = pd.read_csv(smoke_sweep / "runs.csv")
  for column in ("step", "C", "fd", "kid", "n_samples", "sampler", "sampling_steps", "width",
                 "dataset"):
    assert column in runs.columns, column
  assert sorted(runs.width.unique()) == [4, 8] and set(runs.dataset) == {"digits"}
  assert sorted(runs.step.unique()) == [20, 40]  # sweep.evals 2 of 40 steps
  assert (runs.fd > 0).all() and (runs.n_samples == 64).all()
  wide = runs[runs.width == 8].sort_values("step")
  assert wide.C.iloc[1] == pytest.approx(2 * wide.C.iloc[0])
  record = json.loads((smoke_sweep / "fit.json").read_text())
  entry = record["datasets"]["digits"]
  assert entry["fd_name"] == "FD_digits" and entry["floor"] > 0
  assert entry["frontier"]["C"] == sorted(entry["frontier"]["C"])
  comparison = entry["sampler_comparison"]
  assert comparison["width"] == 8 and comparison["ddpm_50"]["fd"] > 0
  for name in ("fd_vs_compute.png", "samples_digits_w4.png", "samples_digits_w8.png",
               "report.md"):
    assert (smoke_sweep / name).exists(), name


def test_a_unet_run_can_be_branched(tmp_path):
  """The loop knows no model family: a U-Net run branches as a language model does (its length
  field is train.steps), and a branch with the parent's schedule continues it exactly."""
  parent, same, cooldown = tmp_path / "parent", tmp_path / "same", tmp_path / "cooldown"
  constant = ("train.schedule=constant", "loop.eval_every=1000", "loop.checkpoint_every=1000",
              "train.steps=6")

  def run(workdir, *extra):
    args = ["run", "--config", f"{STUDY}:smoke", "--workdir", str(workdir)]
    return main(args + [f"--config.{o}" for o in TINY + constant + extra])

  def losses(workdir):
    return {r["step"]: r["loss"] for r in (json.loads(line) for line in open(workdir /
                                                                               "metrics.jsonl"))
            if r.get("kind") == "train"}

  assert run(parent, "loop.keep_steps=(3,)") == 0
  assert run(same, "loop.init_from=parent@3") == 0
  assert losses(same) == losses(parent)
  assert run(cooldown, "train.schedule=wsd", "train.steps=5", "train.cooldown_fraction=0.4",
             "train.final_lr_fraction=0.0", "loop.init_from=parent@3") == 0
  mine = losses(cooldown)
  assert sorted(mine) == list(range(5)) and all(mine[s] == losses(parent)[s] for s in range(4))
  s = json.load(open(cooldown / "summary.json"))
  assert s["init_from"] == "parent@3" and s["images"] == 5 * 16
