"""Test setup: 8 fake CPU devices and a persistent compile cache, before jax is imported."""

import os
import pathlib

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from research import xla_env  # noqa: E402  (imports no jax)

xla_env.set_flags()  # the flags `python -m launch` uses, so in-process and child runs agree

import jax  # noqa: E402  (must come after XLA_FLAGS)
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Through the environment, so that subprocesses started by tests share the cache too.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".cache" / "jax-tests"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def require_shared(*parts: str) -> pathlib.Path:
  """Path under ../shared/data; skip when absent, fail when SCALING_LAB_REQUIRE_SHARED=1 (CI)."""
  path = SHARED_DATA.joinpath(*parts)
  if not path.exists():
    message = f"needs ../shared/data/{'/'.join(parts)}, which is absent"
    if os.environ.get("SCALING_LAB_REQUIRE_SHARED") == "1":
      pytest.fail(message + " (SCALING_LAB_REQUIRE_SHARED=1)")
    pytest.skip(message)
  return path


@pytest.fixture
def shared_data():
  return require_shared


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory):
  """The README's sweep, experiments/lm.py:sweep-smoke, as a user runs it (local backend)."""
  import sweep_helpers
  workdir = tmp_path_factory.mktemp("sweep") / "sweep-smoke"
  code, out = sweep_helpers.run("sweep", *sweep_helpers.sweep_args(sweep_helpers.SMOKE, workdir))
  assert code == 0, out
  return workdir, out
