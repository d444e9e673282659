"""Checkpoints with orbax: the latest ones (for resuming) and the best one.

Layout in the workdir:
  checkpoints/<step>/   the latest `keep` train states, saved every
                        `checkpoint_every_steps`, at each epoch end and at the end;
  best/<step>/          the state with the best validation metric so far.

Every checkpoint holds the whole train state (params, batch statistics,
optimizer state, step, RNG) and a small JSON `meta` dict (epoch, phase, the
validation metric, ...). Orbax writes each checkpoint into a temporary
directory and renames it when complete, so a run killed at any point (kill -9
included) leaves only finished checkpoints behind, and the next start resumes
from the newest of them.
"""

import os
from typing import Any, Optional, Union

from etils import epath
import jax
import orbax.checkpoint as ocp

from coarseseg_jax import workdir as workdir_lib


def _abstract(tree):
  """ShapeDtypeStructs (with shardings) describing `tree`, for restoring."""
  def leaf(x):
    return jax.ShapeDtypeStruct(x.shape, x.dtype,
                                sharding=getattr(x, "sharding", None))
  return jax.tree.map(leaf, tree)


class Checkpointer:
  """Saves/restores train states under `directory` with orbax."""

  def __init__(self, directory: Union[str, os.PathLike], keep: int):
    # Local paths absolute; URLs (gs://...) as they are: orbax writes them
    # with TensorStore's own drivers.
    self.directory: epath.Path = workdir_lib.path(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, cleanup_tmp_directories=True))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Saves `state` at `step` (overwrites nothing already saved)."""
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

  def restore(self, like_state: Any, step: Optional[int] = None):
    """Restores `(state, meta)` at `step` (default: latest).

    Args:
      like_state: a state with the target structure, dtypes and shardings
        (e.g. a freshly initialised one); its values are not used.
      step: which checkpoint; the latest if None.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(like_state)),
        meta=ocp.args.JsonRestore()))
    return restored.state, dict(restored.meta or {})

  def read_meta(self, step: Optional[int] = None) -> dict:
    """The JSON metadata of a checkpoint (cheap: no arrays are read)."""
    step = self.latest_step() if step is None else step
    if step is None:
      return {}
    restored = self._manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored.meta or {})

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
