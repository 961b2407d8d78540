"""What the training loop is handed: a `Recipe` (one run of a model family), the `Report` of what
its summary and figure show, and the `LoopSpec`, the typed view of the config fields the loop
itself reads.

The loop knows no model family. A recipe counts its own units (tokens, images, examples: the
loss's aux "units"), names them in its Report, and gives the FLOPs of one unit; the loop logs
`<unit>`, `<unit>_per_s`, FLOPs and MFU under those names. Every study's config carries the groups
that `LoopSpec.from_config` reads (`seed`, `mesh`, `loop`, `tracking`, and optionally
`train.microbatches`); `research.config.run_groups` adds them with defaults, and a config without
one is a one-line ConfigError when the study is loaded, not an AttributeError mid-run.
"""

import dataclasses
from typing import Any, Callable, Sequence

import optax

from research import parallel
from research.errors import ConfigError, UserError, require

# The loop's own summary keys, which a Report's unit must not shadow.
RESERVED = ("status", "run_id", "steps", "flops", "wall_s", "compile_s", "eval_s", "report",
            "devices", "peak_flops", "peak_flops_source", "init_from", "train_loss_last10")


@dataclasses.dataclass(frozen=True)
class Report:
  """What a run's summary and figure show: the study's choice, since the loop assumes no metric.

  header:  (label, template) lines printed after the first summary line, a template formatted
           with the summary (e.g. "total {params_total:,}"); a line whose keys are absent is left
           out.
  metrics: (summary key, label, unit) lines printed after the common ones, when the key is set.
  curves:  eval metrics drawn against the training units beside the training loss.
  levels:  (summary key, label) horizontal reference lines (e.g. a known entropy rate).
  unit:    what the loss's aux "units" counts (tokens, images, ...): the name of D in the
           summary and the log, and the figure's x axis.
  loss_label: the training loss's axis label, with its unit.
  curves_label: when set, the eval curves get their own y axis (on the right) with this label,
              for metrics on another scale than the loss (e.g. a Frechet distance).
  """
  header: Sequence[tuple[str, str]] = ()
  metrics: Sequence[tuple[str, str, str]] = ()
  curves: Sequence[str] = ()
  levels: Sequence[tuple[str, str]] = ()
  unit: str = "units"
  loss_label: str = "loss"
  curves_label: str = ""

  def __post_init__(self):
    if not self.unit.isidentifier() or self.unit in RESERVED:
      raise ValueError(f"Report.unit {self.unit!r}: must be a name, not one of the summary's own "
                       f"keys ({', '.join(RESERVED)})")


@dataclasses.dataclass(frozen=True)
class Recipe:
  init: Callable[[Any], Any]                       # rng -> params
  loss: Callable                                   # (params, batch, rng) -> (loss, aux)
  train_batch: Callable[[int], dict]               # step -> global batch of numpy arrays
  num_steps: int
  batch_size: int
  optimizer: optax.GradientTransformation         # its updates are scaled by lr_schedule(step)
  flops_per_unit: float                            # analytic training FLOPs per unit of aux "units"
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
  eval_params: Callable[[Any], Any] | None = None
  # Config fields (dotted prefixes) that set the run's length, which a branch may change beside
  # the schedule's tail (research.train.branch): "train.tokens" for a language model.
  length_fields: Sequence[str] = ()
  # On a CPU the loop runs each microbatch in slices of this many examples per device, one after
  # another, so that a slice's activations stay in the caches (the same gradient, summed in
  # another order; research.train.loop.cpu_slices); 0: whole microbatches.
  slice_rows: int = 0
  # XLA compiler options for the jitted train step on a CPU (e.g. research.xla_env's), on top of
  # the process's XLA_FLAGS; none elsewhere.
  cpu_compiler_options: dict = dataclasses.field(default_factory=dict)
  # Files that are part of the run's identity (a tokenizer), copied into the run folder when it
  # is claimed: (name in the run folder, source path).
  files: Sequence[tuple[str, str]] = ()


@dataclasses.dataclass(frozen=True)
class MeshSpec:
  """The mesh of `research.parallel`: sizes (data -1: every device the others leave) and axes."""
  data: int = -1
  fsdp: int = 1
  model: int = 1
  axis_names: tuple[str, str, str] = ("data", "fsdp", "model")


@dataclasses.dataclass(frozen=True)
class LoopSpec:
  """Every config field the loop reads, checked once (no data, no devices, no compilation)."""
  seed: int
  mesh: MeshSpec
  log_every: int
  eval_every: int
  checkpoint_every: int
  keep_checkpoints: int
  async_checkpoints: bool = True
  keep_steps: tuple[int, ...] = ()
  init_from: str = ""              # "PARENT@STEP": a branch (research.train.branch)
  microbatches: int = 1            # train.microbatches: gradient accumulation in the step
  progress: bool = True
  wandb_project: str = ""
  wandb_mode: str = "offline"
  peak_flops: float = 0.0          # > 0: MFU against this peak, else the device's

  @classmethod
  def from_config(cls, cfg) -> "LoopSpec":
    groups = {"seed": None, "mesh": ("data", "fsdp"),
              "loop": ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints"),
              "tracking": ("progress", "wandb_project", "wandb_mode", "peak_flops")}
    for group, fields in groups.items():
      if group not in cfg:
        raise ConfigError(group, None, "missing: every study's config needs the groups seed, "
                          "mesh, loop and tracking that the loop reads (research.config."
                          "run_groups adds them)")
      for field in fields or ():
        if field not in cfg[group]:
          raise ConfigError(f"{group}.{field}", None, f"missing from the config's {group} group "
                            "(research.config.run_groups has every field the loop reads)")
    require(isinstance(cfg.seed, int), "seed", cfg.seed, "must be an integer")
    m, lp, t = cfg.mesh, cfg.loop, cfg.tracking
    mesh = MeshSpec(data=m.data, fsdp=m.fsdp, model=m.get("model", 1),
                    axis_names=parallel.axis_names(m.get("axis_names", MeshSpec.axis_names)))
    micro = cfg.train.get("microbatches", 1) if "train" in cfg else 1
    spec = cls(seed=cfg.seed, mesh=mesh, log_every=lp.log_every, eval_every=lp.eval_every,
               checkpoint_every=lp.checkpoint_every, keep_checkpoints=lp.keep_checkpoints,
               async_checkpoints=lp.get("async_checkpoints", True),
               keep_steps=tuple(lp.get("keep_steps", ())), init_from=lp.get("init_from", ""),
               microbatches=micro, progress=t.progress, wandb_project=t.wandb_project,
               wandb_mode=t.wandb_mode, peak_flops=t.peak_flops)
    spec.validate()
    return spec

  def validate(self) -> None:
    require(isinstance(self.microbatches, int) and self.microbatches >= 1, "train.microbatches",
            self.microbatches, "must be a positive integer")
    for field in ("eval_every", "checkpoint_every", "log_every"):
      value = getattr(self, field)
      require(isinstance(value, int) and value >= 1, f"loop.{field}", value,
              "must be a positive integer")
    require(self.keep_checkpoints >= 1, "loop.keep_checkpoints", self.keep_checkpoints,
            "must be at least 1")
    require(all(isinstance(s, int) and s >= 1 for s in self.keep_steps), "loop.keep_steps",
            self.keep_steps, "must be a list of positive step numbers")
    if self.init_from:
      split_init_from(self.init_from)  # the format; the parent is checked before the run

  def check_devices(self, batch_size: int, n_devices: int) -> None:
    """The mesh fits `n_devices`, and the batch splits over its data-parallel size (times the
    microbatches)."""
    data, fsdp, _ = parallel.mesh_shape(self.mesh, n_devices)
    n = self.microbatches
    split = (f"the data-parallel size mesh.data x mesh.fsdp = {data * fsdp}" if n == 1 else
             f"train.microbatches x the data-parallel size mesh.data x mesh.fsdp = {n} x "
             f"{data * fsdp} = {n * data * fsdp}")
    require(batch_size % (n * data * fsdp) == 0, "train.batch_size", batch_size,
            f"must be divisible by {split}")


def split_init_from(init_from: str) -> tuple[str, int]:
  """'PARENT@STEP' (loop.init_from) -> (PARENT, STEP); a UserError for anything else."""
  path, sep, step = init_from.rpartition("@")
  if not sep or not path or not step.isdigit():
    raise UserError(f"config field 'loop.init_from' = {init_from!r}: expected "
                    "PARENT_RUN_FOLDER@STEP, e.g. runs/parent@1000")
  return path, int(step)
