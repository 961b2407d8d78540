"""Parts of the d_model-256 train step timed on their own, each against a baseline in one run.

    python benchmarks/step_parts.py [--rounds 9] [--parts gemm attention mlp]

* gemm: every matmul shape of the step (the dense layers' forward and backward on
  [B*L = 4096, 256] activations, and the attention's batched [B*H = 64] products), XLA (with
  research.xla_env's options, as training runs) against PyTorch eager (when installed).
* attention: forward + backward of causal softmax attention on [16, 4, 256, 64]: autodiff of the
  masked softmax (the baseline) against `research.models.attention.causal_attention` with one
  block, 128-query blocks and 64-query blocks.
* mlp: forward + backward of the MLP [4096, 256] -> 1024 -> 256 with `jax.nn.gelu` (the baseline)
  against `research.models.fused.gelu`.

The contenders alternate over the rounds (this machine is shared and noisy); medians of
per-round ratios are printed with their range.
"""

import argparse
import functools
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from research import xla_env
from research.models import attention, fused

B, L, H, K, D, F = 16, 256, 4, 64, 256, 1024
N = B * L


def timer(fn, args, repeats):
  jax.block_until_ready(fn(*args))

  def run() -> float:
    start = time.perf_counter()
    for _ in range(repeats):
      out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats

  return run


def alternate(contenders: dict, rounds: int) -> dict:
  times = {name: [] for name in contenders}
  for _ in range(rounds):
    for name, run in contenders.items():
      times[name].append(run())
  return times


def report(title: str, times: dict, baseline: str, work: float | None = None) -> None:
  print(f"\n{title}")
  for name, ts in times.items():
    ratios = [b / t for b, t in zip(times[baseline], ts)]
    rate = f"{work / statistics.median(ts) / 1e9:7.1f} GFLOP/s" if work else ""
    print(f"  {name:<24} {statistics.median(ts) * 1e3:8.2f} ms {rate}  speed vs {baseline}: "
          f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")


GEMMS = {  # name: (lhs shape, rhs shape, einsum)
    "qkv   x W":            ((N, D), (D, 3 * D), "nd,df->nf"),
    "up    x W":            ((N, D), (D, F), "nd,df->nf"),
    "down  x W":            ((N, F), (F, D), "nf,fd->nd"),
    "dh  = dy W^T":         ((N, D), (F, D), "nd,fd->nf"),
    "dWd = h^T dy":         ((N, F), (N, D), "nf,nd->fd"),
    "dWu = x^T du":         ((N, D), (N, F), "nd,nf->df"),
    "S  = Q K^T  (batched)": ((B * H, L, K), (B * H, L, K), "bqk,bsk->bqs"),
    "O  = P V    (batched)": ((B * H, L, L), (B * H, L, K), "bqs,bsk->bqk"),
    "dV = P^T dO (batched)": ((B * H, L, L), (B * H, L, K), "bqs,bqk->bsk"),
}


def gemm_part(rounds: int) -> None:
  try:
    import torch
    torch.set_num_threads(os.cpu_count())
  except ImportError:
    torch = None
    print("torch is not installed: XLA GEMMs only (pip install -e '.[bench]')")
  print("\nGEMMs of the step, GFLOP/s (XLA with research.xla_env's options; torch eager)")
  for name, (lhs, rhs, eq) in GEMMS.items():
    sizes = dict(zip(eq.split("->")[0].replace(",", ""), lhs + rhs))
    flops = 2 * float(np.prod(list(sizes.values())))
    a, b = (jax.random.normal(jax.random.key(i), s) for i, s in enumerate((lhs, rhs)))
    step = jax.jit(functools.partial(jnp.einsum, eq)).lower(a, b).compile(
        xla_env.COMPILER_OPTIONS)
    contenders = {"xla": timer(step, (a, b), 5)}
    if torch is not None:
      ta, tb = torch.randn(*lhs), torch.randn(*rhs)
      contenders["torch"] = timer(lambda: torch.einsum(eq, ta, tb), (), 5)
    times = alternate(contenders, rounds)
    rates = {k: flops / statistics.median(v) / 1e9 for k, v in times.items()}
    line = "  ".join(f"{k} {r:6.1f}" for k, r in rates.items())
    ratio = ""
    if "torch" in times:
      ratios = [t / x for x, t in zip(times["xla"], times["torch"])]
      ratio = (f"  xla / torch {statistics.median(ratios):.2f}x "
               f"({min(ratios):.2f}-{max(ratios):.2f})")
    print(f"  {name:<22} {line}{ratio}")


def attention_part(rounds: int) -> None:
  keys = jax.random.split(jax.random.key(0), 4)
  q, k, v, w = (jax.random.normal(key, (B, H, L, K)) for key in keys)
  variants = {"autodiff, masked softmax": attention.reference,
              "causal_attention, 1 block": lambda q, k, v: attention.causal_attention(q, k, v, 1),
              "128-query blocks": lambda q, k, v: attention.causal_attention(q, k, v, L // 128),
              "64-query blocks": lambda q, k, v: attention.causal_attention(q, k, v, L // 64)}
  contenders = {}
  for name, fn in variants.items():
    grad = jax.jit(jax.value_and_grad(lambda q, k, v, fn=fn: jnp.sum(fn(q, k, v) * w), (0, 1, 2)))
    contenders[name] = timer(grad.lower(q, k, v).compile(xla_env.COMPILER_OPTIONS), (q, k, v), 5)
  report("Attention forward + backward, [16, 4, 256, 64]", alternate(contenders, rounds),
         "autodiff, masked softmax")


def mlp_part(rounds: int) -> None:
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (N, D))
  w_up = jax.random.normal(keys[1], (D, F)) * D ** -0.5
  w_down = jax.random.normal(keys[2], (F, D)) * F ** -0.5
  contenders = {}
  for name, act in {"jax.nn.gelu": jax.nn.gelu, "fused.gelu": fused.gelu}.items():
    grad = jax.jit(jax.grad(lambda x, wu, wd, act=act: jnp.sum(jnp.sin(act(x @ wu) @ wd)),
                            (0, 1, 2)))
    contenders[name] = timer(grad.lower(x, w_up, w_down).compile(xla_env.COMPILER_OPTIONS),
                             (x, w_up, w_down), 5)
  report("MLP forward + backward, [4096, 256] -> 1024 -> 256", alternate(contenders, rounds),
         "jax.nn.gelu")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=9)
  parser.add_argument("--parts", nargs="+", default=["gemm", "attention", "mlp"],
                      choices=["gemm", "attention", "mlp"])
  args = parser.parse_args()
  print(f"jax {jax.__version__}, {os.cpu_count()} cores; {args.rounds} alternating rounds")
  for part in args.parts:
    {"gemm": gemm_part, "attention": attention_part, "mlp": mlp_part}[part](args.rounds)


if __name__ == "__main__":
  main()
