"""Orbax checkpoints: the train state plus a JSON record of the data position.

Batches are indexed by step, so the data position is the step itself; it is saved beside the
state anyway (with the tokens seen) so that a checkpoint says where the data stood without
having to know the loop. Saves are asynchronous; the newest `keep` are kept. Restoring tries the
newest checkpoint first and falls back to older ones, with a warning, when one cannot be read.
"""

import contextlib
import errno
import logging
import os
import shutil
import warnings

import jax
import orbax.checkpoint as ocp

from research import store
from research.errors import UserError


class Checkpointer:
  """A thin wrapper around `ocp.CheckpointManager` for one run directory."""

  def __init__(self, directory: str, keep: int = 3, use_async: bool = True,
               keep_steps=(), read_only: bool = False):
    self.directory = os.path.abspath(directory)
    if read_only:  # another run's checkpoints: read, never delete
      options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    elif keep_steps:
      policy = ocp.checkpoint_managers.AnyPreservationPolicy([
          ocp.checkpoint_managers.LatestN(keep),
          ocp.checkpoint_managers.CustomSteps(list(keep_steps))])
      options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True,
                                             enable_async_checkpointing=use_async)
    else:
      options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=use_async)
    with _quiet_absl(read_only):  # read-only managers warn that they are, on every open
      self.manager = ocp.CheckpointManager(self.directory, options=options)

  def steps(self) -> list[int]:
    """The saved steps Orbax knows of, less empty step folders (`store.saved_steps`)."""
    saved = set(store.saved_steps(self.directory))
    return sorted(s for s in self.manager.all_steps() if s in saved)

  def save(self, step: int, state, meta: dict) -> None:
    check_space(self.directory, state)
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)))

  def _newest_readable(self, step: int | None, read):
    """(read(candidate), candidate) for `step`, or for the newest checkpoint that `read` does not
    fail on, older ones tried with a warning; (None, the last error) when none could be read. A
    UserError from `read` refuses the checkpoint for what it is (another run's, say), not for
    being damaged, and propagates."""
    candidates = [step] if step is not None else sorted(self.steps(), reverse=True)
    error = None
    for candidate in candidates:
      try:
        return read(candidate), candidate
      except UserError:
        raise
      except Exception as e:  # noqa: BLE001  (any unreadable checkpoint falls back)
        error = e
        self._unreadable(candidate, e, step)
    return None, error

  def restore(self, abstract_state, step: int | None = None, check_meta=None):
    """(state, meta, step) from `step` or the newest readable checkpoint; None if there is none,
    a UserError when there are checkpoints and none can be read (never a silent restart).

    `abstract_state` is a tree of `jax.ShapeDtypeStruct`s with shardings (see
    `abstract_like`): without it Orbax hands optax states back as plain lists. `check_meta(meta)`
    runs before the state is read and may raise a UserError (say, for a checkpoint of another
    run), which is not mistaken for a damaged checkpoint.
    """

    def read(candidate: int):
      meta = self.manager.restore(candidate,
                                  args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
      if check_meta is not None:
        check_meta(meta)
      state = self.manager.restore(candidate, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state)))["state"]
      return state, meta

    found, step_read = self._newest_readable(step, read)
    if found is None and step_read is not None:  # there were checkpoints; none could be read
      last = (str(step_read).splitlines() or [""])[0][:160]
      raise UserError(
          f"no checkpoint in {self.directory} could be restored (steps "
          f"{', '.join(map(str, self.steps()))} tried; the last error: "
          f"{type(step_read).__name__}: {last}). Not starting over from step 0 on its own: "
          "move or delete that folder to train the run from the start")
    return None if found is None else (found[0], found[1], step_read)

  def restore_subtree(self, path: tuple[str, ...], abstract, step: int | None = None):
    """(subtree, step): only the part of the saved train state at `path` (("params",), or
    ("opt_state", "ema") for an EMA kept in the optimizer state), from `step` or the newest
    readable checkpoint, into `abstract` (ShapeDtypeStructs with shardings): a partial restore
    that reads nothing else and needs no optimizer to build a target. Falls back to older
    checkpoints with a warning, as `restore` does; raises the last error when none fits."""
    item = abstract
    for key in reversed(path):
      item = {key: item}
    args = ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=True))

    def read(candidate: int):
      tree = self.manager.restore(candidate, args=args)["state"]
      for key in path:
        tree = tree[key]
      return tree

    tree, found = self._newest_readable(step, read)
    if tree is None:
      raise found if found is not None else FileNotFoundError(f"no checkpoint in "
                                                               f"{self.directory}")
    return tree, found

  def _unreadable(self, candidate: int, error: Exception, requested: int | None) -> None:
    if requested is not None:
      raise error
    warnings.warn(f"checkpoint at step {candidate} in {self.directory} could not be read "
                  f"({type(error).__name__}: {str(error)[:200]}); trying an older one")

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def check_space(directory: str, state) -> None:
  """An OSError (ENOSPC) naming the sizes when `directory`'s disk lacks room for a checkpoint of
  `state` (its arrays' bytes, plus a margin for Orbax's own files), before anything is written:
  a save that fills the disk midway fails in Orbax's threads, with dozens of tracebacks."""
  if jax.process_count() > 1:  # each host writes only its shards, maybe to a shared disk
    return
  need = sum(getattr(x, "nbytes", 0) for x in jax.tree_util.tree_leaves(state))
  need = int(need * 1.1) + (1 << 20)
  free = shutil.disk_usage(directory).free
  if free < need:
    raise OSError(errno.ENOSPC, f"a checkpoint needs about {need / 2**20:.1f} MiB, "
                  f"{free / 2**20:.1f} MiB free", directory)


@contextlib.contextmanager
def _quiet_absl(quiet: bool):
  """Orbax's absl warnings held back (errors still shown) while the block runs, when `quiet`."""
  logger = logging.getLogger("absl")
  level = logger.level
  if quiet:
    logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def abstract_like(state, shardings):
  """ShapeDtypeStructs carrying the given shardings: the restore target for `state`."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      state, shardings)
