"""Training throughput of our JAX train step against a matmul peak and PyTorch eager, in one run.

    python benchmarks/train_throughput.py [--rounds 5] [--steps 10] [--d-models 128 256]
                                          [--xla-options]

For each d_model: a 4-layer decoder (context 256, batch 16, vocab 256, d_ff = 4 d_model,
4 heads, rotary, RMSNorm, tied embeddings, AdamW), float32. The contenders alternate over
several rounds on this (shared, noisy) machine; medians and ratios are printed. FLOPs use our
"full" convention (research.accounting), the same for both. With --xla-options, a third
contender is the same JAX step compiled with research.xla_env.COMPILER_OPTIONS (with
`model.attention=blocked`, as the step ran before benchmarks/ladder_speed.py's work), and a fourth,
"jax+cpu", the step as `launch run` now trains it on a CPU: "auto" attention and the batch in
slices of research.train.loop.cpu_slices for this process's cores.
"""

import argparse
import dataclasses
import functools
import os
import statistics
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research import accounting, xla_env
from research.evals import lm as lm_evals
from research.models import transformer
from research.recipes import lm
from research.train import loop
from research.train.step import init_state, train_step

B, L, V, LAYERS, HEADS = 16, 256, 256, 4, 4


def jax_contender(cfg: transformer.TransformerConfig, compiler_options=None, microbatches=1):
  optimizer = optax.adamw(1e-3, b1=0.9, b2=0.95, weight_decay=0.1)
  apply_fn = functools.partial(transformer.apply, cfg)
  state = init_state(lambda rng: transformer.init_params(cfg, rng), optimizer, 0)
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, V, (B, L + 1))
  batch = {"inputs": jnp.asarray(tokens[:, :-1], jnp.int32),
           "targets": jnp.asarray(tokens[:, 1:], jnp.int32),
           "weights": jnp.ones((B, L), jnp.float32)}
  step = jax.jit(functools.partial(train_step, loss_fn=lm_evals.lm_loss(apply_fn),
                                   optimizer=optimizer, microbatches=microbatches),
                 donate_argnums=0)
  step = step.lower(state, batch).compile(compiler_options)
  holder = {"state": state}

  def run(steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
      holder["state"], metrics = step(holder["state"], batch)
    jax.block_until_ready(metrics)
    return time.perf_counter() - start

  run(2)  # compile and warm up
  return run


def torch_contender(d_model: int):
  import torch
  import torch.nn.functional as F

  torch.manual_seed(0)
  d_head = d_model // HEADS

  def rope(x):  # x: [B, H, L, K], rotating pairs (i, i + K/2) as our model does
    k = x.shape[-1]
    freq = 10000.0 ** (-torch.arange(0, k // 2, dtype=torch.float32) * 2 / k)
    angle = torch.arange(x.shape[-2], dtype=torch.float32)[:, None] * freq[None, :]
    sin, cos = angle.sin(), angle.cos()
    x1, x2 = x[..., : k // 2], x[..., k // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

  class Block(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.ln_attn = torch.nn.RMSNorm(d_model, eps=1e-6)
      self.ln_mlp = torch.nn.RMSNorm(d_model, eps=1e-6)
      self.qkv = torch.nn.Linear(d_model, 3 * d_model, bias=False)
      self.out = torch.nn.Linear(d_model, d_model, bias=False)
      self.up = torch.nn.Linear(d_model, 4 * d_model, bias=False)
      self.down = torch.nn.Linear(4 * d_model, d_model, bias=False)

    def forward(self, x):
      b, l, _ = x.shape
      q, k, v = self.qkv(self.ln_attn(x)).view(b, l, 3, HEADS, d_head).permute(2, 0, 3, 1, 4)
      a = F.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True)
      x = x + self.out(a.transpose(1, 2).reshape(b, l, d_model))
      return x + self.down(F.gelu(self.up(self.ln_mlp(x)), approximate="tanh"))

  class Model(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.embed = torch.nn.Embedding(V, d_model)
      self.blocks = torch.nn.ModuleList([Block() for _ in range(LAYERS)])
      self.ln_final = torch.nn.RMSNorm(d_model, eps=1e-6)

    def forward(self, tokens):
      x = self.embed(tokens)
      for block in self.blocks:
        x = block(x)
      return self.ln_final(x) @ self.embed.weight.T * d_model ** -0.5

  model = Model()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
  tokens = torch.randint(0, V, (B, L + 1), generator=torch.Generator().manual_seed(0))
  inputs, targets = tokens[:, :-1], tokens[:, 1:]

  def run(steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
      opt.zero_grad(set_to_none=True)
      loss = F.cross_entropy(model(inputs).reshape(-1, V), targets.reshape(-1))
      loss.backward()
      opt.step()
    float(loss.detach())
    return time.perf_counter() - start

  run(2)
  return run


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--d-models", type=int, nargs="+", default=[128, 256])
  parser.add_argument("--no-torch", action="store_true")
  parser.add_argument("--xla-options", action="store_true",
                      help="also time the step compiled with research.xla_env.COMPILER_OPTIONS")
  args = parser.parse_args()
  try:
    import torch
    torch.set_num_threads(os.cpu_count())
    have_torch = not args.no_torch
  except ImportError:
    have_torch = False
    print("torch is not installed: the PyTorch baseline is skipped (pip install -e '.[bench]')")
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} x{jax.device_count()}, "
        f"{os.cpu_count()} cores; batch {B}, context {L}, {LAYERS} layers; {args.rounds} rounds "
        f"of {args.steps} steps, contenders alternating")
  for d_model in args.d_models:
    cfg = transformer.TransformerConfig(vocab_size=V, d_model=d_model, n_layers=LAYERS,
                                        n_heads=HEADS, d_ff=4 * d_model, context=L)
    flops_per_step = transformer.train_flops_per_token(cfg, L, "full") * B * L
    blocked = dataclasses.replace(cfg, attention="blocked")
    contenders = {"jax": jax_contender(blocked)}
    if args.xla_options:
      contenders["jax+xla"] = jax_contender(blocked, xla_env.COMPILER_OPTIONS)
      tuned = lm.cpu_step(cfg, L)
      contenders["jax+cpu"] = jax_contender(
          cfg, {**xla_env.COMPILER_OPTIONS, **tuned["cpu_compiler_options"]},
          loop.cpu_slices(types.SimpleNamespace(**tuned), B, "cpu", len(os.sched_getaffinity(0))))
    if have_torch:
      contenders["torch"] = torch_contender(d_model)
    times = {name: [] for name in contenders}
    peaks = []
    for _ in range(args.rounds):
      peaks.append(accounting.measured_matmul_peak(n=1024, repeats=3))
      for name, run in contenders.items():
        times[name].append(run(args.steps) / args.steps)
    peak = statistics.median(peaks)
    print(f"\nd_model {d_model}: {transformer.param_counts(cfg).total:,} params, "
          f"{flops_per_step / B / L:,.0f} training FLOPs/token ('full')")
    print(f"  matmul peak (jax f32 1024^3, median of rounds): {peak / 1e9:.1f} GFLOP/s")
    for name, ts in times.items():
      t = statistics.median(ts)
      print(f"  {name:<7} {B * L / t:9,.0f} tokens/s  {flops_per_step / t / 1e9:7.1f} GFLOP/s  "
            f"{flops_per_step / t / peak:6.1%} of the matmul peak  (median step {t * 1e3:.1f} ms)")
    for name, base in (("jax", "torch"), ("jax+xla", "torch"), ("jax+xla", "jax"),
                       ("jax+cpu", "torch"), ("jax+cpu", "jax+xla")):
      if name in times and base in times:
        ratios = [b / j for j, b in zip(times[name], times[base])]
        print(f"  {name} / {base} speed: {statistics.median(ratios):.2f}x (median of per-round "
              f"ratios; range {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
  main()
