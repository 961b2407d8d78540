"""Bad configs stop with one clear message and exit code 2, before anything compiles or is written."""

import os

import jax
import ml_collections
import pytest

from launch.__main__ import main
from lm_helpers import REPO, tiny_args
from research import parallel
from research.recipes import lm as lm_recipe


@pytest.mark.parametrize("override,expected", [
    ("model.n_heads=3", "config field 'model.n_heads' = 3: must divide model.d_model = 32"),
    ("data.source=nonsense:xyz", "nonsense:xyz"),
    ("data.source=text:no/such/folder", "no/such/folder"),
    ("train.batch_size=12", "config field 'train.batch_size' = 12: must be divisible by the "
                            "data-parallel size"),
    ("mesh.data=16", "larger than the 8 available devices"),
    ("mesh.fsdp=3", "must divide the number of devices (8)"),
    ("model.norm=batchnorm", "allowed: rmsnorm, layernorm"),
    ("train.seq_len=64", "must be in [1, model.context = 32]"),
    ("model.d_model=abc", "config field 'model.d_model' = 'abc': expected int"),
    ("model.depth=3", "no such field; fields of model:"),
    ("tracking.flop_convention=7N", "allowed: 6N, kaplan, full"),
    ("model.attention_block=-8", "config field 'model.attention_block' = -8: must be 0 (one "
                                 "block) or a positive number of queries per block"),
    ("model.attention=flash", "allowed: auto, blocked, xla, cudnn"),
    ("model.attention=cudnn", "cuDNN's fused attention cannot run this model: it needs "
                              "model.dtype = bfloat16"),
    (("model.attention=cudnn", "model.dtype=bfloat16"), "cuDNN attention needs a GPU"),
    ("model.remat=everything", "allowed: none, block, dots"),
    ("train.microbatches=0", "config field 'train.microbatches' = 0: must be a positive integer"),
    ("train.microbatches=3", "config field 'train.batch_size' = 16: must be divisible by "
                             "train.microbatches x the data-parallel size"),
    ("mesh.model=4", "config field 'mesh.model' = 4: tensor parallelism splits the attention "
                     "heads and the MLP's hidden units: it must divide model.n_heads = 2"),
    (("model.d_ff=63", "mesh.model=2"), "must divide model.n_heads = 2 and model.d_ff = 63"),
    (("mesh.model=2", "mesh.fsdp=8"), "mesh fsdp x model = 8 x 2 must divide the number of "
                                      "devices (8)"),
])
def test_bad_config_exits_2_with_a_message(tmp_path, capsys, override, expected):
  workdir = tmp_path / "run"
  overrides = override if isinstance(override, tuple) else (override,)
  code = main(["run"] + tiny_args(workdir, 4, *overrides))
  err = capsys.readouterr().err
  assert code == 2
  assert err.startswith("error: ") and expected in err, err
  assert len(err.strip().splitlines()) == 1
  assert not workdir.exists()  # stopped before the run store was touched


def test_unknown_preset_and_missing_config_file(capsys):
  assert main(["run", "--config", os.path.join(REPO, "experiments/lm.py:huge"),
               "--workdir", "x"]) == 2
  assert "allowed presets" in capsys.readouterr().err
  assert main(["run", "--config", "no_such_file.py:smoke", "--workdir", "x"]) == 2
  assert "does not exist" in capsys.readouterr().err


def test_fsdp_shards_the_largest_divisible_dimension():
  cfg = ml_collections.ConfigDict(dict(data=2, fsdp=4, axis_names=("data", "fsdp")))
  mesh = parallel.make_mesh(cfg)
  state = {"w": jax.ShapeDtypeStruct((32, 128), "float32"),
           "odd": jax.ShapeDtypeStruct((7, 3), "float32"),
           "scalar": jax.ShapeDtypeStruct((), "int32")}
  specs = {k: v.spec for k, v in parallel.state_sharding(mesh, state).items()}
  assert specs["w"] == jax.sharding.PartitionSpec(None, "fsdp")
  assert specs["odd"] == jax.sharding.PartitionSpec()
  assert specs["scalar"] == jax.sharding.PartitionSpec()


@pytest.mark.parametrize("preset", ["smoke", "cpu", "gpu-124m"])
def test_every_preset_is_valid(preset):
  from research import config as config_lib
  cfg, experiment = config_lib.load(os.path.join(REPO, f"experiments/lm.py:{preset}"))
  experiment.validate(cfg)
  assert lm_recipe.num_steps(cfg) * cfg.train.batch_size * cfg.train.seq_len >= cfg.train.tokens
