"""The training loop: data -> step -> metrics -> evaluation -> checkpoint, with resume.

Generic: a study hands over a `Recipe` (research/train/recipe.py: how to initialise parameters,
the loss, a batch source indexed by step, evaluators, what its summary shows) and the
`LoopSpec` read from its config, so this module imports no model and no data module and the same
loop trains language models and U-Nets. It counts the recipe's units (the loss's aux "units")
and logs them under the name the recipe's Report gives. As in nanodo, step N's metrics are read
after step N+1 has been dispatched, so the host never stalls the accelerator.

Before compiling it prints a memory estimate per device (research.accounting.MemoryEstimate:
the train state's bytes from its shapes and shardings, the activations from the recipe's count)
and warns when the device's memory is smaller. `LoopSpec.microbatches` splits every step's batch
for gradient accumulation (research.train.step.loss_and_grads); on a CPU each microbatch is cut
further into slices of at least `Recipe.slice_rows` examples per device, more with more threads
(`cpu_slices`: cache blocking, the same gradient summed in another order), and the summary's
`step_microbatches` says how many slices a step ran.
"""

import dataclasses
import errno
import functools
import math
import os
import sys
import time
from typing import Any, Callable

import jax
import numpy as np

from research import accounting, checkpoint, parallel, tracking
from research.errors import UserError
from research.train import branch
from research.train.clocks import CompileClock, StopSignal, Throughput
from research.train.recipe import LoopSpec, Recipe
from research.train.step import TrainState, all_finite, init_state, train_step


class NonFiniteLoss(RuntimeError):
  """The loss or the parameters became NaN or infinite; the run stopped."""


def put_batch(batch: dict, sharding) -> dict:
  """Each process contributes its rows of the global batch."""
  n, i = jax.process_count(), jax.process_index()

  def put(x):
    rows = x.shape[0] // n
    return jax.make_array_from_process_local_data(sharding, x[i * rows:(i + 1) * rows], x.shape)

  return {k: put(np.asarray(v)) for k, v in batch.items()}


def learning_rates(recipe: Recipe) -> np.ndarray:
  """float32[num_steps]: the schedule evaluated once on the host, for every step."""
  if recipe.lr_schedule is None:
    return np.ones(recipe.num_steps, np.float32)
  steps = np.arange(recipe.num_steps, dtype=np.int32)
  # a constant schedule (optax.constant_schedule) gives one scalar for any steps
  rates = np.asarray(jax.jit(recipe.lr_schedule)(steps), np.float32)
  return np.array(np.broadcast_to(rates, steps.shape))


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
  microbatches: int = 1                            # slices the step runs: spec's x cpu_slices


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


def cpu_slices(recipe: Recipe, rows_per_device: int, backend: str, threads: int = 1) -> int:
  """How many slices the step cuts each device's share of a microbatch into: on a CPU the
  largest divisor of `rows_per_device` that leaves slices of at least `recipe.slice_rows` x
  threads^2 rows (a thread needs more rows to keep busy when others share a slice: on two
  threads the ladder's steps ran fastest with slices 4x those of one thread); 1 elsewhere, or
  when the recipe asks for none."""
  if backend != "cpu" or recipe.slice_rows <= 0:
    return 1
  least = recipe.slice_rows * threads ** 2
  return max((n for n in range(1, rows_per_device + 1)
              if rows_per_device % n == 0 and rows_per_device // n >= least), default=1)


def setup(recipe: Recipe, spec: LoopSpec, *, cpu_tuned: bool = True) -> Setup:
  """The mesh, the state's and batch's shardings (the recipe's partition rules), the jitted step
  (with the microbatches; on a CPU, unless `cpu_tuned` is False, each cut into `cpu_slices` and
  compiled with the recipe's `cpu_compiler_options`) and the memory estimate; nothing is
  compiled yet. The caller has checked the spec against the devices (LoopSpec.check_devices)."""
  mesh = parallel.make_mesh(spec.mesh)
  tuned = cpu_tuned and jax.default_backend() == "cpu"
  rows = recipe.batch_size // (spec.microbatches * mesh.shape["data"] * mesh.shape["fsdp"])
  threads = len(os.sched_getaffinity(0))  # XLA's CPU thread pool: one thread per core
  n_micro = spec.microbatches * (cpu_slices(recipe, rows, "cpu", threads) if tuned else 1)
  make_state = functools.partial(init_state, recipe.init, recipe.optimizer, spec.seed)
  abstract = jax.eval_shape(make_state)
  shardings = parallel.state_sharding(mesh, abstract, recipe.partition_rules)
  batch_sh = parallel.batch_sharding(mesh)
  step_fn = jax.jit(functools.partial(train_step, loss_fn=recipe.loss,
                                      optimizer=recipe.optimizer,
                                      microbatches=n_micro),
                    in_shardings=(shardings, batch_sh, parallel.replicated(mesh)),
                    out_shardings=(shardings, None), donate_argnums=0,
                    compiler_options=(recipe.cpu_compiler_options or None) if tuned else None)
  return Setup(mesh, make_state, abstract, shardings, batch_sh, step_fn,
               memory_estimate(recipe, mesh, abstract, shardings, n_micro), n_micro)


@dataclasses.dataclass(frozen=True)
class Start:
  """Where a run starts: its state, step, units seen and wall time so far, and its parent when
  it is a branch starting from another run's checkpoint."""
  state: TrainState
  step: int
  units: float
  wall_s: float
  parent: branch.Parent | None


def _units_seen(meta: dict) -> float:
  # "tokens_seen": checkpoints written before the loop counted neutral units
  return float(meta.get("units_seen", meta.get("tokens_seen", 0.0)))


def restore_or_init(ckpt: checkpoint.Checkpointer, s: Setup, run_id: str, workdir: str,
                    init_from: str) -> Start:
  """The newest readable checkpoint of this run; else the parent's checkpoint when the run is a
  branch; else step 0."""

  def same_run(meta: dict) -> None:
    if meta.get("run_id", run_id) != run_id:
      raise UserError(f"the checkpoints in {workdir}/checkpoints belong to run {meta['run_id']}, "
                      f"not to this config's run {run_id}; use another workdir")

  abstract = checkpoint.abstract_like(s.abstract_state, s.state_sharding)
  restored = ckpt.restore(abstract, check_meta=same_run)
  if restored is not None:
    state, meta, step = restored
    return Start(state, step, _units_seen(meta), float(meta.get("wall_s", 0.0)), None)
  if not init_from:
    state = jax.jit(s.make_state, out_shardings=s.state_sharding)()
    return Start(state, 0, 0.0, 0.0, None)
  parent = branch.parse(init_from, workdir)
  source = checkpoint.Checkpointer(parent.checkpoints, read_only=True)
  try:
    state, meta, step = source.restore(abstract, step=parent.step)
  except (ValueError, KeyError, TypeError) as e:
    raise UserError(f"config field 'loop.init_from' = {init_from!r}: the parent's checkpoint "
                    f"does not fit this model ({type(e).__name__}: {str(e)[:200]})") from e
  finally:
    source.close()
  return Start(state, step, _units_seen(meta), 0.0, parent)


class _Session:
  """One process training one run: the step loop and what it writes (log, checkpoints)."""

  def __init__(self, recipe: Recipe, spec: LoopSpec, s: Setup, workdir: str, config_dict: dict,
               run_id: str, lrs: np.ndarray, progress, wandb_group, wall_start: float):
    self.recipe, self.spec, self.s, self.run_id, self.lrs = recipe, spec, s, run_id, lrs
    self.unit = recipe.report.unit
    self.ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                        keep=spec.keep_checkpoints,
                                        use_async=spec.async_checkpoints,
                                        keep_steps=spec.keep_steps)
    try:
      start = restore_or_init(self.ckpt, s, run_id, workdir, spec.init_from)
      checkpoint.check_space(self.ckpt.directory, start.state)  # room for one, before training
    except BaseException:
      self.ckpt.close()
      raise
    self.state, self.start, self.units, self.parent = (start.state, start.step, start.units,
                                                       start.parent)
    self.wall = lambda: start.wall_s + time.time() - wall_start  # noqa: E731
    self.finite = jax.jit(all_finite)
    if spec.peak_flops > 0:
      self.peak, self.peak_source = spec.peak_flops, "config tracking.peak_flops"
    else:
      self.peak, self.peak_source = accounting.device_peak_flops(recipe.compute_dtype,
                                                                 s.mesh.size)
    self.tracker = tracking.Tracker(
        workdir, run_id, recipe.num_steps, self.start, config_dict=config_dict,
        progress=spec.progress if progress is None else progress,
        wandb_project=spec.wandb_project, wandb_mode=spec.wandb_mode, group=wandb_group,
        chief=jax.process_index() == 0)
    self.meter, self.eval_s, self.last_eval = Throughput(), 0.0, {}
    self._announce()

  def _announce(self) -> None:
    if self.parent is not None:
      self.tracker.event("branch", parent=self.parent.run_dir, from_step=self.start)
      for kind, record in branch.history(self.parent):
        self.tracker.write(record["step"], {k: v for k, v in record.items()
                                            if k not in ("kind", "step")}, kind=kind)
      self.tracker.message(f"branched from {self.parent.run_dir} at step {self.start}")
    elif self.start:
      self.tracker.event("resume", from_step=self.start)
      self.tracker.message(f"resumed from the checkpoint at step {self.start}")

  def evaluate(self, step: int) -> None:
    started = time.perf_counter()
    results = {}
    r = self.recipe
    params = self.state.params if r.eval_params is None else r.eval_params(self.state)
    for evaluator in r.evaluators:
      results.update(jax.device_get(evaluator(params)))
    self.eval_s += time.perf_counter() - started
    self.tracker.write(step, results, kind="eval")
    self.last_eval = results

  def save(self, step: int, units_seen: float) -> None:
    if not bool(self.finite(self.state.params)):
      raise NonFiniteLoss(f"parameters are not finite at step {step}; not saved")
    self.ckpt.save(step, self.state, {"run_id": self.run_id, "step": step, "data_position": step,
                                      "units_seen": units_seen, "wall_s": self.wall()})

  def record(self, step: int, metrics) -> None:
    """Check and log one step's metrics (fetched from the device); count its units."""
    m = jax.device_get(metrics)
    loss, grad_norm = float(m["loss"]), float(m["grad_norm"])
    if not math.isfinite(loss) or not math.isfinite(grad_norm):
      raise NonFiniteLoss(f"loss {loss} / grad norm {grad_norm} at step {step}")
    units = float(m.pop("units", 0.0))
    self.meter.add(units)
    self.units += units
    if step % self.spec.log_every == 0 or step == self.recipe.num_steps - 1:
      rate, per_unit = self.meter.rate(), self.recipe.flops_per_unit
      record = {k: float(v) for k, v in m.items()}
      record.update({self.unit: self.units, "flops": self.units * per_unit,
                     f"{self.unit}_per_s": rate,
                     "mfu": accounting.mfu(per_unit, rate, self.peak), "wall_s": self.wall(),
                     "lr": float(self.lrs[step])})
      self.tracker.write(step, record, kind="train")
      self.tracker.progress(step + 1, {"loss": f"{loss:.4f}", f"{self.unit}/s": f"{rate:,.0f}",
                                       "mfu": f"{record['mfu']:.1%}"})
      self.meter.reset()

  def steps(self, stop: StopSignal) -> str:
    """Train from the start step to the end, or until `stop` has received a signal: "finished"
    or "interrupted by SIG..." (after saving a checkpoint). A signal that arrives after the last
    step lets the run finish: its final evaluation and checkpoint are the run's result."""
    r, spec, pending = self.recipe, self.spec, None
    for step in range(self.start, r.num_steps):
      new_state, metrics = self.s.step(self.state, put_batch(r.train_batch(step),
                                                             self.s.batch_sharding),
                                       self.lrs[step])
      if pending is not None:  # the previous step's metrics, read while this one runs
        self.record(*pending)
      self.state, pending, done = new_state, (step, metrics), step + 1
      if done % spec.eval_every == 0 and done < r.num_steps:
        self.evaluate(done)
      if stop.received and done < r.num_steps:  # its metrics first: the resumed log has no gap
        self.record(*pending)
        self.save(done, self.units)
        self.tracker.event("stopped", step=done, signal=stop.received)
        self.tracker.message(f"{stop.received}: saved the checkpoint at step {done}; "
                             "run the same command again to resume")
        return f"interrupted by {stop.received}"
      if (done % spec.checkpoint_every == 0 or done in spec.keep_steps) and done < r.num_steps:
        # self.units covers the steps before this one, whose metrics are still pending
        self.save(done, self.units + float(jax.device_get(metrics.get("units", 0.0))))
    if pending is not None:
      self.record(*pending)
    self.evaluate(r.num_steps)
    self.save(r.num_steps, self.units)
    return "finished"

  def close(self) -> None:
    try:
      self.ckpt.wait()
    finally:
      self.ckpt.close()
      self.tracker.close()

  def summary(self, status: str, compile_s: float) -> dict:
    r = self.recipe
    return {"status": status, "run_id": self.run_id, "steps": r.num_steps, self.unit: self.units,
            "flops": self.units * r.flops_per_unit,
            **{f"final_{k}": v for k, v in self.last_eval.items()},
            "wall_s": self.wall(), "compile_s": compile_s, "eval_s": self.eval_s,
            **({"init_from": self.spec.init_from} if self.spec.init_from else {}),
            "peak_flops": self.peak, "peak_flops_source": self.peak_source,
            "devices": self.s.mesh.size, "step_microbatches": self.s.microbatches,
            "report": dataclasses.asdict(r.report), **r.facts}


def _as_os_error(e: Exception, path: str) -> Exception:
  """An OSError for a write the disk refused deep inside Orbax / TensorStore (which report
  ENOSPC and EROFS as ValueErrors naming the os error code), so that the command line says it
  in one line with exit code 3; any other exception unchanged."""
  if isinstance(e, OSError):
    return e
  text = str(e)
  for code in (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES):
    if f"os_error_code='{code}'" in text or os.strerror(code) in text:
      return OSError(code, os.strerror(code), path)
  return e


def train(recipe: Recipe, spec: LoopSpec, workdir: str, config_dict: dict, run_id: str, *,
          lrs: np.ndarray | None = None, progress: bool | None = None,
          wandb_group: str | None = None, stop: StopSignal | None = None) -> dict:
  """Train to `recipe.num_steps`, resuming from `workdir` if it holds checkpoints.

  Returns the summary of a finished run (the caller adds the training loss from the log and
  writes it, last, to summary.json), or {"status": "interrupted by SIG..."} when a signal
  stopped it after saving a checkpoint. `lrs`: the schedule of every step when the caller has
  it (learning_rates(recipe)); `progress` overrides the config's progress bar; `wandb_group`
  groups the runs of a sweep; `stop`: the caller's SIGTERM / SIGINT flag, entered before the
  call so that a signal at any moment of the run is seen (else the loop installs its own while
  stepping).
  """
  if stop is None:
    with StopSignal() as own:
      return train(recipe, spec, workdir, config_dict, run_id, lrs=lrs, progress=progress,
                   wandb_group=wandb_group, stop=own)
  wall_start = time.time()
  lrs = learning_rates(recipe) if lrs is None else lrs
  with CompileClock() as compile_clock:
    s = setup(recipe, spec)
    if s.memory is not None and jax.process_index() == 0:
      for line in accounting.memory_lines(s.memory, accounting.device_memory_bytes()):
        print(line, file=sys.stderr)
    # Traced under the mesh, the model's activation constraints (parallel.constrain) find it.
    with jax.set_mesh(s.mesh):
      session = _Session(recipe, spec, s, workdir, config_dict, run_id, lrs, progress,
                         wandb_group, wall_start)
      try:
        try:
          status = session.steps(stop)
        finally:
          session.close()
      except Exception as e:  # noqa: BLE001  (Orbax reports a full disk as a ValueError)
        raise _as_os_error(e, os.path.join(workdir, "checkpoints")) from e
  if status != "finished":
    return {"status": status}
  return session.summary(status, compile_clock.seconds)
