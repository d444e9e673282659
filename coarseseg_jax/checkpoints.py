"""Checkpoints with orbax: the latest ones (for resuming) and the best one.

Layout in the workdir:
  checkpoints/<step>/   the latest `keep` train states, saved every
                        `checkpoint_every_steps`, at each epoch end and at the end;
  best/<step>/          the state with the best validation metric so far.

Every checkpoint holds the whole train state (params, batch statistics,
optimizer state, step, RNG) and a small JSON `meta` dict (the loop's
`state.PhaseState`). Orbax writes each checkpoint into a temporary
directory and renames it when complete, so a run killed at any point (kill -9
included) leaves only finished checkpoints behind, and the next start resumes
from the newest of them (`restore_newest`). A finished checkpoint that does
not restore (a truncated or overwritten file) is set aside, renamed to
`<step>.corrupt` and never deleted, with a warning naming it, and the next
newest is tried. While it tries, library log records lose their tracebacks
and an exception in a library thread is logged as one line
(`_one_line_errors`): a damaged checkpoint is reported by that warning only.
"""

import contextlib
import logging
import os
import threading
from typing import Any, Callable, Optional, Tuple, Union

from etils import epath
import jax
import orbax.checkpoint as ocp

from coarseseg_jax import errors
from coarseseg_jax import filesystem

log = logging.getLogger(__name__)


def _abstract(tree):
  """ShapeDtypeStructs (with shardings) describing `tree`, for restoring."""
  def leaf(x):
    return jax.ShapeDtypeStruct(x.shape, x.dtype,
                                sharding=getattr(x, "sharding", None))
  return jax.tree.map(leaf, tree)


class _NoTraceback(logging.Filter):
  """Drops the traceback of a log record, keeping its first message line."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.exc_info or record.exc_text:
      record.exc_info, record.exc_text = None, None
      record.msg = str(record.getMessage()).strip().splitlines()[0]
      record.args = ()
    return True


@contextlib.contextmanager
def _one_line_errors():
  """While restoring damaged checkpoints: library log records (orbax,
  TensorStore via absl, ...) lose their tracebacks, and an exception raised
  in another thread is logged as one warning line instead of printed with
  its traceback by `threading.excepthook`."""
  handlers = list(logging.getLogger().handlers)
  no_traceback = _NoTraceback()
  for h in handlers:
    h.addFilter(no_traceback)
  previous_hook = threading.excepthook

  def hook(args):
    log.warning("while restoring a checkpoint, thread %s: %s: %s",
                getattr(args.thread, "name", "?"), args.exc_type.__name__,
                str(args.exc_value).strip().splitlines()[0][:200]
                if str(args.exc_value).strip() else "")

  threading.excepthook = hook
  try:
    yield
  finally:
    threading.excepthook = previous_hook
    for h in handlers:
      h.removeFilter(no_traceback)


class Checkpointer:
  """Saves/restores train states under `directory` with orbax."""

  def __init__(self, directory: Union[str, os.PathLike], keep: int):
    # Local paths absolute; URLs (gs://...) as they are: orbax writes them
    # with TensorStore's own drivers.
    self.directory: epath.Path = filesystem.path(directory)
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

  def restore_newest(self, make_like: Callable[[dict], Any]
                     ) -> Optional[Tuple[Any, dict, int]]:
    """`(state, meta, step)` of the newest checkpoint that restores.

    Args:
      make_like: meta -> a state of the checkpoint's structure (see
        `restore`; the structure may depend on the meta, e.g. the phase).

    Returns:
      None when there is no checkpoint.

    Raises:
      errors.CheckpointError: there are checkpoints but none restores (each
        was set aside as `<step>.corrupt`).
    """
    set_aside = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        with _one_line_errors():
          meta = self.read_meta(step)
          state, meta = self.restore(make_like(meta), step)
        return state, meta, step
      except errors.CheckpointError:
        raise  # A readable checkpoint this version refuses: not corrupt.
      except Exception as e:  # pylint: disable=broad-except
        # Orbax / TensorStore raise many types for damaged files.
        set_aside.append(self._set_aside(step, e))
    if set_aside:
      raise errors.CheckpointError(
          f"no checkpoint in {self.directory} restores (set aside: "
          f"{', '.join(set_aside)}); remove the workdir to start over.")
    return None

  def _set_aside(self, step: int, error: Exception) -> str:
    """Renames a damaged checkpoint `<step>` to `<step>.corrupt[N]`."""
    src = self.directory / str(step)
    dst = self.directory / f"{step}.corrupt"
    n = 1
    while dst.exists():
      dst, n = self.directory / f"{step}.corrupt{n}", n + 1
    reason = str(error).strip().splitlines()[0][:200] if str(error) else (
        type(error).__name__)
    try:
      src.rename(dst)
      where = str(dst)
    except Exception:  # pylint: disable=broad-except
      where = f"{src} (could not be renamed)"
    log.warning("checkpoint %s does not restore (%s: %s); set aside as %s, "
                "trying the previous one.", src, type(error).__name__, reason,
                where)
    self._manager.reload()
    return where

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
