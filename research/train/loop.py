"""The training loop: data -> step -> metrics -> evaluation -> checkpoint, with resume.

Generic: an experiment hands over a `Recipe` (how to initialise parameters, the loss, a batch
source indexed by step, evaluators, what its summary shows), so this module imports no model and
no data module and the same loop trains language models and U-Nets. As in nanodo, step N's
metrics are read after step N+1 has been dispatched, so the host never stalls the accelerator.

Before compiling it prints a memory estimate per device (research.accounting.MemoryEstimate:
the train state's bytes from its shapes and shardings, the activations from the recipe's count)
and warns when the device's memory is smaller. `train.microbatches` (when the study's config has
it) splits every step's batch for gradient accumulation (research.train.step.loss_and_grads).
"""

import dataclasses
import functools
import math
import os
import signal
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.monitoring
import numpy as np
import optax

from research import accounting, checkpoint, parallel, tracking
from research.errors import UserError, require
from research.train import branch
from research.train.step import TrainState, all_finite, init_state, train_step

COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


class NonFiniteLoss(RuntimeError):
  """The loss or the parameters became NaN or infinite; the run stopped."""


@dataclasses.dataclass(frozen=True)
class Report:
  """What a run's summary and figure show: the study's choice, since the loop assumes no metric.

  metrics: (summary key, label, unit) lines printed after the common ones, when the key is set.
  curves:  eval metrics drawn against the training units beside the training loss.
  levels:  (summary key, label) horizontal reference lines (e.g. a known entropy rate).
  unit:    what the loss's aux "tokens" counts (tokens, images, ...): the x axis and D.
  loss_label: the training loss's axis label, with its unit.
  curves_label: when set, the eval curves get their own y axis (on the right) with this label,
              for metrics on another scale than the loss (e.g. a Frechet distance).
  """
  metrics: Sequence[tuple[str, str, str]] = ()
  curves: Sequence[str] = ()
  levels: Sequence[tuple[str, str]] = ()
  unit: str = "tokens"
  loss_label: str = "loss"
  curves_label: str = ""


@dataclasses.dataclass(frozen=True)
class Recipe:
  init: Callable[[jax.Array], Any]                 # rng -> params
  loss: Callable                                   # (params, batch, rng) -> (loss, aux)
  train_batch: Callable[[int], dict]               # step -> global batch of numpy arrays
  num_steps: int
  batch_size: int
  optimizer: optax.GradientTransformation         # its updates are scaled by lr_schedule(step)
  flops_per_token: float                           # analytic FLOPs per unit of aux "tokens"
  compute_dtype: str = "float32"
  evaluators: Sequence[Callable[[Any], dict]] = ()  # params -> {metric: value}
  lr_schedule: Callable | None = None              # step -> learning rate; None: 1
  facts: dict = dataclasses.field(default_factory=dict)  # static facts for the summary
  report: Report = Report()
  # (regex on a train-state leaf's path, dimension to split across mesh.model): the model
  # family's tensor-parallel rules (research.parallel.state_sharding); () replicates over it.
  partition_rules: Sequence[tuple[str, int]] = ()
  # (examples per device in one microbatch, mesh.model) -> bytes kept for the backward, for the
  # memory estimate printed before compiling; None: not estimated.
  activation_bytes: Callable[[int, int], float] | None = None
  # TrainState -> the parameters the evaluators get; None: state.params. A recipe whose optimizer
  # keeps other weights in its state (an EMA of them, research.diffusion.ddpm.with_ema) picks them.
  eval_params: Callable[[TrainState], Any] | None = None


def microbatches(cfg) -> int:
  """train.microbatches of the config, 1 for a study whose config has no such field."""
  return cfg.train.get("microbatches", 1) if "train" in cfg else 1


def validate(cfg, batch_size: int, n_devices: int) -> None:
  """Loop-level config checks, before anything compiles."""
  data, fsdp, _ = parallel.mesh_shape(cfg.mesh, n_devices)
  n_micro = microbatches(cfg)
  require(isinstance(n_micro, int) and n_micro >= 1, "train.microbatches", n_micro,
          "must be a positive integer")
  split = (f"the data-parallel size mesh.data x mesh.fsdp = {data * fsdp}" if n_micro == 1 else
           f"train.microbatches x the data-parallel size mesh.data x mesh.fsdp = {n_micro} x "
           f"{data * fsdp} = {n_micro * data * fsdp}")
  require(batch_size % (n_micro * data * fsdp) == 0, "train.batch_size", batch_size,
          f"must be divisible by {split}")
  for field in ("eval_every", "checkpoint_every", "log_every"):
    value = cfg.loop[field]
    require(isinstance(value, int) and value >= 1, f"loop.{field}", value,
            "must be a positive integer")
  require(cfg.loop.keep_checkpoints >= 1, "loop.keep_checkpoints", cfg.loop.keep_checkpoints,
          "must be at least 1")
  keep = cfg.loop.get("keep_steps", ())
  require(all(isinstance(s, int) and s >= 1 for s in keep), "loop.keep_steps", keep,
          "must be a list of positive step numbers")
  if cfg.loop.get("init_from", ""):
    branch.parse(cfg.loop.init_from, ".")  # the format; the parent is checked by `start`


class StopSignal:
  """Turns SIGTERM / SIGINT into a flag (`received`, the signal's name) checked between steps."""

  def __init__(self):
    self.received = None
    self.previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self.previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):
    self.received = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self.previous.items():
      signal.signal(sig, handler)


class _CompileClock:
  """Seconds this process spends tracing, lowering and compiling while the clock is open."""

  def __init__(self):
    self.seconds = 0.0

  def _listen(self, event: str, duration: float, **_) -> None:
    if event in COMPILE_EVENTS:
      self.seconds += duration

  def __enter__(self):
    jax.monitoring.register_event_duration_secs_listener(self._listen)
    return self

  def __exit__(self, *exc):
    jax.monitoring.unregister_event_duration_listener(self._listen)


class _Throughput:
  """Units per second over the steps since the last logged one (the first step is not timed)."""

  def __init__(self):
    self.start, self.units, self.steps = None, 0.0, 0

  def add(self, units: float) -> None:
    if self.start is None:
      self.start, self.units, self.steps = time.perf_counter(), 0.0, 0
    else:
      self.units += units
      self.steps += 1

  def rate(self) -> float:
    elapsed = time.perf_counter() - self.start if self.start is not None else 0.0
    return self.units / elapsed if elapsed > 0 and self.steps else float("nan")

  def reset(self) -> None:
    self.start, self.units, self.steps = time.perf_counter(), 0.0, 0


def put_batch(batch: dict, sharding) -> dict:
  """Each process contributes its rows of the global batch."""
  n, i = jax.process_count(), jax.process_index()

  def put(x):
    rows = x.shape[0] // n
    return jax.make_array_from_process_local_data(sharding, x[i * rows:(i + 1) * rows], x.shape)

  return {k: put(np.asarray(v)) for k, v in batch.items()}


def _restore_or_init(ckpt, make_state, shardings, run_id: str, workdir: str, init_from: str):
  """(state, start step, checkpoint meta, parent): the newest readable checkpoint of this run;
  else the parent's checkpoint when the run is a branch (`parent` is then set); else step 0."""

  def same_run(meta: dict) -> None:
    if meta.get("run_id", run_id) != run_id:
      raise UserError(f"the checkpoints in {workdir}/checkpoints belong to run {meta['run_id']}, "
                      f"not to this config's run {run_id}; use another workdir")

  abstract = checkpoint.abstract_like(jax.eval_shape(make_state), shardings)
  restored = ckpt.restore(abstract, check_meta=same_run)
  if restored is not None:
    state, meta, start = restored
    return state, start, meta, None
  if not init_from:
    return jax.jit(make_state, out_shardings=shardings)(), 0, {}, None
  parent = branch.parse(init_from, workdir)
  source = checkpoint.Checkpointer(parent.checkpoints, read_only=True)
  try:
    state, meta, start = source.restore(abstract, step=parent.step)
  except (ValueError, KeyError, TypeError) as e:
    raise UserError(f"config field 'loop.init_from' = {init_from!r}: the parent's checkpoint "
                    f"does not fit this model ({type(e).__name__}: {str(e)[:200]})") from e
  finally:
    source.close()
  return state, start, {"tokens_seen": meta.get("tokens_seen", 0.0)}, parent


def _check_finite(step: int, m: dict) -> None:
  if not math.isfinite(float(m["loss"])) or not math.isfinite(float(m["grad_norm"])):
    raise NonFiniteLoss(f"loss {float(m['loss'])} / grad norm {float(m['grad_norm'])} at step "
                        f"{step}")


def learning_rates(recipe: Recipe) -> np.ndarray:
  """float32[num_steps]: the schedule evaluated once on the host, for every step."""
  if recipe.lr_schedule is None:
    return np.ones(recipe.num_steps, np.float32)
  steps = np.arange(recipe.num_steps, dtype=np.int32)
  return np.asarray(jax.jit(recipe.lr_schedule)(steps), np.float32)


def _train_record(m: dict, recipe: Recipe, units: float, rate: float, peak: float,
                  wall_s: float, lr: float) -> dict:
  record = {k: float(v) for k, v in m.items()}
  record.update(tokens=units, flops=units * recipe.flops_per_token, tokens_per_s=rate,
                mfu=accounting.mfu(recipe.flops_per_token, rate, peak), wall_s=wall_s, lr=lr)
  return record


@dataclasses.dataclass(frozen=True)
class Setup:
  """What training a recipe on a mesh needs before its first step, built without compiling."""
  mesh: jax.sharding.Mesh
  make_state: Callable[[], TrainState]             # () -> the initial train state
  abstract_state: TrainState                       # its shapes and dtypes
  state_sharding: Any
  batch_sharding: Any
  step: Callable                                   # jitted (state, batch, lr) -> (state, metrics)
  memory: accounting.MemoryEstimate | None         # per device


def memory_estimate(recipe: Recipe, mesh, abstract_state: TrainState, shardings,
                    n_micro: int) -> accounting.MemoryEstimate | None:
  """The train state's bytes per device from its shardings (gradients laid out as the
  parameters), the activations from the recipe's count for one microbatch's rows per device."""
  if recipe.activation_bytes is None:
    return None
  data, fsdp, model = (mesh.shape[name] for name in mesh.axis_names)
  params = accounting.sharded_bytes(abstract_state.params, shardings.params)
  return accounting.MemoryEstimate(
      params=params, gradients=params,
      optimizer=accounting.sharded_bytes(abstract_state.opt_state, shardings.opt_state),
      activations=recipe.activation_bytes(recipe.batch_size // (n_micro * data * fsdp), model))


def setup(recipe: Recipe, cfg) -> Setup:
  """The mesh, the state's and batch's shardings (the recipe's partition rules), the jitted
  step (with train.microbatches) and the memory estimate; nothing is compiled yet."""
  mesh = parallel.make_mesh(cfg.mesh)
  make_state = functools.partial(init_state, recipe.init, recipe.optimizer, cfg.seed)
  abstract = jax.eval_shape(make_state)
  shardings = parallel.state_sharding(mesh, abstract, recipe.partition_rules)
  batch_sh = parallel.batch_sharding(mesh)
  n_micro = microbatches(cfg)
  step_fn = jax.jit(functools.partial(train_step, loss_fn=recipe.loss,
                                      optimizer=recipe.optimizer, microbatches=n_micro),
                    in_shardings=(shardings, batch_sh, parallel.replicated(mesh)),
                    out_shardings=(shardings, None), donate_argnums=0)
  return Setup(mesh, make_state, abstract, shardings, batch_sh, step_fn,
               memory_estimate(recipe, mesh, abstract, shardings, n_micro))


def train(recipe: Recipe, cfg, workdir: str, config_dict: dict, run_id: str, *,
          progress: bool | None = None, wandb_group: str | None = None) -> dict:
  """Train to `recipe.num_steps`, resuming from `workdir` if it holds checkpoints.

  Returns the summary of a finished run (the caller writes it, last, to summary.json), or
  {"status": "interrupted by SIG..."} when a signal stopped it after saving a checkpoint.
  `progress` overrides the config's progress bar; `wandb_group` groups the runs of a sweep.
  """
  wall_start = time.time()
  with _CompileClock() as compile_clock:
    s = setup(recipe, cfg)
    if s.memory is not None and jax.process_index() == 0:
      for line in accounting.memory_lines(s.memory, accounting.device_memory_bytes()):
        print(line, file=sys.stderr)
    # Traced under the mesh, the model's activation constraints (parallel.constrain) find it.
    with jax.set_mesh(s.mesh):
      return _train(recipe, cfg, s, workdir, config_dict, run_id, progress, wandb_group,
                    compile_clock, wall_start)


def _train(recipe, cfg, s: Setup, workdir, config_dict, run_id, progress, wandb_group,
           compile_clock, wall_start):
  mesh, batch_sh, make_state, shardings = s.mesh, s.batch_sharding, s.make_state, s.state_sharding
  keep_steps = tuple(cfg.loop.get("keep_steps", ()))
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 keep=cfg.loop.keep_checkpoints,
                                 use_async=cfg.loop.async_checkpoints, keep_steps=keep_steps)
  lrs = learning_rates(recipe)
  init_from = cfg.loop.get("init_from", "")  # checked by branch.verify before the run started
  try:
    state, start, meta, parent = _restore_or_init(ckpt, make_state, shardings, run_id, workdir,
                                                  init_from)
  except BaseException:
    ckpt.close()
    raise
  units, wall_offset = float(meta.get("tokens_seen", 0.0)), float(meta.get("wall_s", 0.0))
  wall = lambda: wall_offset + time.time() - wall_start  # noqa: E731
  step_fn = s.step
  finite_fn = jax.jit(all_finite)
  if cfg.tracking.peak_flops > 0:
    peak, peak_source = cfg.tracking.peak_flops, "config tracking.peak_flops"
  else:
    peak, peak_source = accounting.device_peak_flops(recipe.compute_dtype, mesh.size)
  tracker = tracking.Tracker(workdir, cfg.tracking, config_dict, run_id, recipe.num_steps, start,
                             progress=progress, group=wandb_group,
                             chief=jax.process_index() == 0)
  if parent is not None:
    tracker.event("branch", parent=parent.run_dir, from_step=start)
    for kind, record in branch.history(parent):
      tracker.write(record["step"], {k: v for k, v in record.items() if k not in ("kind", "step")},
                    kind=kind)
    tracker.message(f"branched from {parent.run_dir} at step {start}")
  elif start:
    tracker.event("resume", from_step=start)
    tracker.message(f"resumed from the checkpoint at step {start}")

  eval_clock = [0.0]

  def evaluate(step: int, state: TrainState) -> dict:
    started = time.perf_counter()
    results = {}
    params = state.params if recipe.eval_params is None else recipe.eval_params(state)
    for evaluator in recipe.evaluators:
      results.update(jax.device_get(evaluator(params)))
    eval_clock[0] += time.perf_counter() - started
    tracker.write(step, results, kind="eval")
    return results

  def save(step: int, state: TrainState, units_seen: float) -> None:
    if not bool(finite_fn(state.params)):
      raise NonFiniteLoss(f"parameters are not finite at step {step}; not saved")
    ckpt.save(step, state, {"run_id": run_id, "step": step, "data_position": step,
                            "tokens_seen": units_seen, "wall_s": wall()})

  pending, last_eval, status = None, {}, "finished"
  meter = _Throughput()

  def record_metrics(prev_step: int, metrics) -> float:
    """Check and log one step's metrics (fetched from the device); returns its units."""
    m = jax.device_get(metrics)
    _check_finite(prev_step, m)
    meter.add(float(m.get("tokens", 0.0)))
    if prev_step % cfg.loop.log_every == 0 or prev_step == recipe.num_steps - 1:
      record = _train_record(m, recipe, units + float(m.get("tokens", 0.0)), meter.rate(), peak,
                             wall(), float(lrs[prev_step]))
      tracker.write(prev_step, record, kind="train")
      tracker.progress(prev_step + 1, {"loss": f"{record['loss']:.4f}",
                                       "tok/s": f"{record['tokens_per_s']:,.0f}",
                                       "mfu": f"{record['mfu']:.1%}"})
      meter.reset()
    return float(m.get("tokens", 0.0))

  try:
    with StopSignal() as stop:
      for step in range(start, recipe.num_steps + 1):
        if step < recipe.num_steps:
          new_state, metrics = step_fn(state, put_batch(recipe.train_batch(step), batch_sh),
                                       lrs[step])
        if pending is not None:  # the previous step's metrics, read while this one runs
          units += record_metrics(*pending)
          pending = None
        if step == recipe.num_steps:
          break
        state, pending, done = new_state, (step, metrics), step + 1
        if done % cfg.loop.eval_every == 0 and done < recipe.num_steps:
          last_eval = evaluate(done, state)
        if stop.received:  # this step's metrics first, so the resumed run's log has no gap
          units += record_metrics(*pending)
          pending = None
          save(done, state, units)
          status = f"interrupted by {stop.received}"
          tracker.event("stopped", step=done, signal=stop.received)
          tracker.message(f"{stop.received}: saved the checkpoint at step {done}; "
                          "run the same command again to resume")
          break
        if (done % cfg.loop.checkpoint_every == 0 or done in keep_steps) and done < recipe.num_steps:
          # `units` covers the steps before this one, whose metrics are still pending
          save(done, state, units + float(jax.device_get(metrics.get("tokens", 0.0))))
    if status == "finished":
      last_eval = evaluate(recipe.num_steps, state)
      save(recipe.num_steps, state, units)
  finally:
    ckpt.wait()
    ckpt.close()
    tracker.close()

  if status != "finished":
    return {"status": status}
  records = tracking.read_metrics(tracker.path, kind="train") if jax.process_index() == 0 else []
  tail = records[-min(10, len(records)):]
  summary = {
      "status": status,
      "run_id": run_id,
      "steps": recipe.num_steps,
      "tokens": units,
      "flops": units * recipe.flops_per_token,
      "train_loss_last10": float(np.mean([r["loss"] for r in tail])) if tail else None,
      **{f"final_{k}": v for k, v in last_eval.items()},
      "wall_s": wall(),
      "compile_s": compile_clock.seconds,
      "eval_s": eval_clock[0],
      **({"init_from": init_from} if init_from else {}),
      "peak_flops": peak,
      "peak_flops_source": peak_source,
      "devices": mesh.size,
      "report": dataclasses.asdict(recipe.report),
      **recipe.facts,
  }
  return summary
