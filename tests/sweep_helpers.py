"""Sweeps for the tests: `python -m launch sweep` in a child process with one CPU device."""

import hashlib
import os
import subprocess
import sys

from lm_helpers import REPO

TOY = os.path.join(REPO, "tests", "toy_study.py")
SMOKE = os.path.join(REPO, "experiments", "lm.py") + ":sweep-smoke"


def env(**extra) -> dict:
  """The test environment without conftest's 8 fake devices: a sweep's runs use one device."""
  out = dict(os.environ)
  out["XLA_FLAGS"] = " ".join(f for f in out.get("XLA_FLAGS", "").split()
                              if not f.startswith("--xla_force_host_platform_device_count"))
  out.update(extra)
  return out


def sweep_args(spec: str, workdir, *extra: str) -> list[str]:
  return ["--config", spec, "--workdir", str(workdir), *extra]


def launch(command: str, *args: str, extra_env=None, **popen) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-m", "launch", command, *args], cwd=REPO,
                          env=env(**(extra_env or {})), **popen)


def run(command: str, *args: str, extra_env=None, timeout=600) -> tuple[int, str]:
  """(exit code, stdout + stderr) of a finished child."""
  proc = launch(command, *args, extra_env=extra_env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True)
  out, _ = proc.communicate(timeout=timeout)
  return proc.returncode, out


def fingerprint(folder) -> dict:
  """{relative path: (mtime_ns, sha1)} of every file under folder."""
  out = {}
  for root, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        digest = hashlib.sha1(f.read()).hexdigest()
      out[os.path.relpath(path, folder)] = (os.stat(path).st_mtime_ns, digest)
  return out


def swept(tmp_path_factory, spec: str, name: str):
  """The folder of `python -m launch sweep --config SPEC`, run to the end in a fresh folder with
  its own compilation cache (the body of a module-scoped fixture)."""
  workdir = tmp_path_factory.mktemp(name) / "sweep"
  cache = {"JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp(f"{name}-jax-cache"))}
  code, out = run("sweep", *sweep_args(spec, workdir), extra_env=cache)
  assert code == 0, out
  return workdir
