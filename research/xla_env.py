"""XLA CPU flags for training; `set_flags()` must run before jax is imported (no jax import here).

`--xla_cpu_experimental_ynn_fusion_type=` (an empty list) turns off this jaxlib's default YNNPACK
fusions, so that dots go to XLA's own (Eigen) GEMMs and elementwise ops to XLA's loop fusions
(the YNN elementwise fusions take no implicit broadcasts, so XLA materialized some around them,
e.g. the softmax denominator to [B, H, L, L]). Measured with benchmarks/train_throughput.py
(`--xla-options`: both settings compiled in one process, alternating, medians of per-round ratios)
on a shared 2-core machine: the train step is 1.15x (0.98-1.26) faster at d_model 256 and 1.25x
(1.03-1.62) at d_model 128 when the machine is quiet (1.06-1.15x and 1.08x under load); an
isolated 1024^3 f32 matmul is as fast either way. Same float32 math (no fast-math), but another
GEMM library sums in another order, so losses differ in the last bits.

Called by `launch/__main__.py` and `tests/conftest.py` before jax is imported, so that training
runs and the tests (which compare in-process runs with `python -m launch` children bit for bit)
compile with the same flags.
"""

import os

FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)
# The same settings as per-jit compiler options (`jax.jit(f).lower(...).compile(COMPILER_OPTIONS)`).
COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
# This jaxlib's default YNNPACK fusions (single dots and reductions) as per-jit options, to turn
# them back on for one jitted function in a process that set FLAGS: the small models of the
# scaling ladder train faster with them (research.recipes.lm, benchmarks/README.md). Checked on
# jax 0.10.2: a step compiled with these options has the same ops as one compiled without FLAGS.
YNN_DEFAULT_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ",".join(
    f"LIBRARY_FUSION_TYPE_{kind}" for kind in ("INDIVIDUAL_DOT", "INDIVIDUAL_CONVOLUTION",
                                               "REDUCE"))}


def set_flags() -> None:
  """Appends FLAGS to XLA_FLAGS, keeping the flags already there (a flag set there wins)."""
  present = os.environ.get("XLA_FLAGS", "").split()
  names = {flag.split("=")[0] for flag in present}
  os.environ["XLA_FLAGS"] = " ".join(present + [f for f in FLAGS if f.split("=")[0] not in names])
