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
`<step>.corrupt` and never deleted, with a warning naming it and the reason
(`describe`), and the next newest is tried. While it tries, library log
records lose their tracebacks and an exception in a library thread is logged
as one line (`_one_line_errors`), and a failed read leaves no other read
pending (`_settled_reads`): a damaged checkpoint is reported by that warning
only.
"""

import asyncio
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

try:  # Where orbax runs its coroutines (not public API: see _settled_reads).
  from orbax.checkpoint._src import asyncio_utils as _orbax_asyncio  # pylint: disable=g-import-not-at-top
except ImportError:  # Another layout: restores work, without the settling.
  _orbax_asyncio = None

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


def describe(error: BaseException) -> str:
  """`Type: first line` of the innermost explicit cause of `error`.

  For a damaged array that is TensorStore's reason (e.g. `ValueError:
  OUT_OF_RANGE: Error reading "params/.../0.0" in OCDBT database at ...`),
  not orbax's wrapper around it, whose message dumps the array's whole
  TensorStore spec over 60 lines.
  """
  while error.__cause__ is not None:
    error = error.__cause__
  text = str(error).strip()
  line = text.splitlines()[0][:300] if text else ""
  return f"{type(error).__name__}: {line}" if line else type(error).__name__


async def _settling(coro):
  """Awaits `coro`; if it fails, first cancels the other tasks of the running
  event loop and waits until each has ended. Their errors are the same damage
  and are dropped: the caller reports `coro`'s."""
  try:
    return await coro
  except BaseException:
    current = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not current]
    for task in others:
      task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    raise


_settle_lock = threading.Lock()
_settle_depth = 0
_orbax_run_sync = None


def _run_sync_settled(coro):
  return _orbax_run_sync(_settling(coro))


@contextlib.contextmanager
def _settled_reads():
  """While restoring, a failed orbax read leaves no other read pending.

  Orbax reads a checkpoint's arrays as concurrent tasks (`asyncio.gather`)
  on an event loop of its own (`asyncio_utils.run_sync`) and closes that loop
  as soon as the first read fails, with the other reads still pending.
  Python reports each of them later, whenever it collects them ("Exception
  ignored in: <coroutine object _read_array_index_and_device_put>" and a
  traceback; TensorStore adds "Event loop is closed" for each read finishing
  after the close): on a loaded machine, 120 tracebacks in the middle of the
  run that resumed from the previous checkpoint. Here every coroutine orbax
  runs is wrapped by `_settling`, so when it fails the other tasks of its
  loop are cancelled and awaited before the loop is closed, as `asyncio.run`
  does. Orbax's own behaviour is otherwise unchanged; the wrapper is removed
  when the outermost restore ends.
  """
  global _settle_depth, _orbax_run_sync
  if _orbax_asyncio is None:
    yield
    return
  with _settle_lock:
    if _settle_depth == 0:
      _orbax_run_sync = _orbax_asyncio.run_sync
      _orbax_asyncio.run_sync = _run_sync_settled
    _settle_depth += 1
  try:
    yield
  finally:
    with _settle_lock:
      _settle_depth -= 1
      if _settle_depth == 0:
        _orbax_asyncio.run_sync = _orbax_run_sync


@contextlib.contextmanager
def reported_as_damaged(where: Union[str, os.PathLike], advice: str):
  """Turns a failure to read the checkpoint `where` into one line:
  `errors.CheckpointError("checkpoint <where> does not restore (<reason>);
  <advice>")`. A `errors.Error` passes unchanged (a readable checkpoint
  refused, e.g. one of a newer version)."""
  try:
    yield
  except errors.Error:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # Orbax / TensorStore raise many types for damaged files.
    raise errors.CheckpointError(
        f"checkpoint {where} does not restore ({describe(e)}); {advice}"
    ) from e


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
    with _one_line_errors(), _settled_reads():
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
    try:
      src.rename(dst)
      where = str(dst)
    except Exception:  # pylint: disable=broad-except
      where = f"{src} (could not be renamed)"
    log.warning("checkpoint %s does not restore (%s); set aside as %s, "
                "trying the previous one.", src, describe(error), where)
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
