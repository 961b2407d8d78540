"""Two processes on this machine forming one JAX job over loopback (gloo collectives on CPU):
the data-parallel run's losses equal the single-process run's, and its checkpoint, written by
both processes together, is restored by one."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

import sweep_helpers as sh
from lm_helpers import REPO, losses, run_tiny, tiny_args

STEPS = 8


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _restore(workdir, like=None):
  """The final train state, onto this process's first device (shapes from `like` if given)."""
  path = os.path.join(str(workdir), "checkpoints", str(STEPS), "state")
  if like is None:
    return ocp.StandardCheckpointer().restore(path)
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one), like)
  return ocp.StandardCheckpointer().restore(path, target)


def test_two_processes_train_one_data_parallel_run(tmp_path):
  single = tmp_path / "single"
  assert run_tiny(single, STEPS, "mesh.data=1", "mesh.fsdp=1") == 0
  workdir = tmp_path / "two"
  port = _free_port()
  procs = []
  for rank in range(2):
    env = sh.env(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                 JAX_PROCESS_ID=str(rank))
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "launch", "run"] + tiny_args(workdir, STEPS, "mesh.data=2",
                                                            "loop.checkpoint_every=4"),
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  outs = [p.communicate(timeout=300)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  assert "on 2 device(s)" in outs[0]  # the chief's summary: one mesh over both processes
  two = losses(workdir)
  assert sorted(two) == list(range(STEPS))
  np.testing.assert_allclose([two[s] for s in range(STEPS)],
                             [losses(single)[s] for s in range(STEPS)], rtol=1e-5)
  reference = _restore(single)
  restored = _restore(workdir, like=reference)  # written by two processes, read by this one
  for a, b in zip(jax.tree.leaves(restored["params"]), jax.tree.leaves(reference["params"])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
