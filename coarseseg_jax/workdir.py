"""The workdir's claim on a run: its config.json and its lock.

Its files are read and written through `filesystem` (local or gs://).

A workdir remembers its config: `record_config` writes `config.json` at the
start of a run; started again, `check_config` refuses a config that would
change the run (model, data, loss, optimizer, seed, ...) with one line naming
the differing keys. Only the keys in `MAY_CHANGE` may differ: they extend the
run (`train.num_epochs`, `train.max_steps`, fine-tuning afterwards), or say
where the data lives and how often to log, none of which changes what is
learned.

`WorkdirLock`: while a run trains in a workdir, `lock.json` names it (host,
pid, start time); a second process is refused at once with one line naming
the holder (`errors.WorkdirInUse`; `holder()` says who holds it, for a
runner that waits instead), and a lock left by a dead process of the same
host is taken over with a warning. Created atomically (O_EXCL) on local
disks; on gs:// the lock is written and read back (an object store has no
exclusive create), so two starts within the same second could both get it
there.
"""

import datetime
import json
import logging
import os
import socket
import uuid
from typing import Any, Dict, List, Optional, Tuple

from etils import epath
import ml_collections

from coarseseg_jax import errors
from coarseseg_jax import filesystem
from coarseseg_jax.filesystem import PathLike

log = logging.getLogger(__name__)
CONFIG_FILE = "config.json"
LOCK_FILE = "lock.json"
# Keys (dotted) that may differ between starts of one run.
MAY_CHANGE = frozenset({
    "train.num_epochs", "train.max_steps", "train.finetune",
    "train.finetune_max_epochs", "train.log_every_steps",
    "train.checkpoint_every_steps", "train.keep_checkpoints",
    "train.num_figures", "train.num_validation_images", "train.profile_steps",
    # Data locations: where the same data lies (a refined run's labels are
    # named by data.refined_from, which does not move with them).
    "data.data_dir", "data.refined_dir",
    "data.manual_dir", "data.eval_batch_size", "distributed",
    "compilation_cache_dir"})
# Keys added to the configs after runs were recorded, with the value that
# means "as before": a config.json without the key matches that value.
ADDED_DEFAULTS = {
    "model.similarity": "dot", "model.out_of_grid": "mask",
    "model.input_norm": "imagenet", "model.weight_init": "he_fan_out",
    "model.deform_bias": False, "model.pretrained_format": "torchvision",
    "train.slic_resize": "block_mean", "train.slic_position_norm": "cell_side",
    "train.validation_mode": "eval",
    "model.assign_init": "default", "model.parent_bias": None,
    "train.lr_schedule": "constant", "train.warmup_steps": 0,
    "train.grad_clip_norm": None, "train.class_weights": None,
    "train.num_validation_images": 3, "train.profile_steps": 0,
    "data.validation_labels": "fine", "train.finetune_rule": "project",
    "data.refined_dir": "", "data.refined_from": "", "data.refined_fill": "",
    "data.coarse_style": "erosion",
    "compilation_cache_dir": "workdir",
}
def ensure_writable(workdir: PathLike) -> epath.Path:
  """Creates the workdir; one-line ConfigError if it cannot be written."""
  p = filesystem.path(workdir)
  probe = p / ".write_test"
  try:
    p.mkdir(parents=True, exist_ok=True)
    probe.write_text("ok")
    probe.unlink()
  except Exception as e:  # pylint: disable=broad-except
    # OSError locally; gfile raises tf.errors.* for URLs.
    reason = getattr(e, "strerror", None) or getattr(e, "message", None) or e
    raise errors.ConfigError(
        f"--workdir={workdir} cannot be written ({reason}); pass a "
        "directory you can write to.") from None
  return p


def config_as_json(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """The config as plain JSON data (tuples become lists)."""
  return json.loads(json.dumps(config.to_dict(), default=str))


def _flatten(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict) and v:
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v
  return out


def differences(old: Dict[str, Any], new: Dict[str, Any],
                ignore=MAY_CHANGE) -> List[Tuple[str, Any, Any]]:
  """(key, old value, new value) of every dotted key that differs."""
  a, b = _flatten(old), _flatten(new)
  missing = object()
  for key, value in ADDED_DEFAULTS.items():
    a.setdefault(key, value)
    b.setdefault(key, value)
  return [(k, a.get(k, missing), b.get(k, missing))
          for k in sorted(set(a) | set(b))
          if k not in ignore and a.get(k, missing) != b.get(k, missing)]


def describe(diffs, limit: int = 4) -> str:
  def fmt(v):
    return "(absent)" if not isinstance(
        v, (str, int, float, bool, list, dict, type(None))) else json.dumps(v)
  parts = [f"{k}: {fmt(a)} -> {fmt(b)}" for k, a, b in diffs[:limit]]
  if len(diffs) > limit:
    parts.append(f"and {len(diffs) - limit} more")
  return ", ".join(parts)


def load_config(workdir: PathLike) -> Optional[Dict[str, Any]]:
  """The workdir's recorded config as JSON data, or None if it has none."""
  p = filesystem.path(workdir) / CONFIG_FILE
  if not p.exists():
    return None
  try:
    return filesystem.read_json(p)
  except (ValueError, OSError) as e:
    raise errors.ConfigError(
        f"{p} is not a readable config ({e}); restore it, or remove the "
        "workdir to start over.") from None


def check_config(workdir: PathLike, config: ml_collections.ConfigDict) -> bool:
  """Refuses a config that would change the run recorded in `workdir`.

  Returns:
    whether the workdir already records a (compatible) run.
  Raises:
    errors.ConfigError: one line naming the differing keys; nothing in the
      workdir is changed.
  """
  old = load_config(workdir)
  if old is None:
    return False
  diffs = differences(old, config_as_json(config))
  if diffs:
    raise errors.ConfigError(
        f"{workdir} holds a run with another config ({describe(diffs)}); "
        "start it in a new --workdir, or remove this one to start over. Only "
        "num_epochs, max_steps, fine-tuning, logging and data locations may "
        "change when a run is resumed.")
  return True


def record_config(workdir: PathLike, config: ml_collections.ConfigDict) -> None:
  """Writes `config.json` (the config the run's results are labelled with)."""
  filesystem.write_json(filesystem.path(workdir) / CONFIG_FILE,
                        config_as_json(config))


def config_from_json(data: Dict[str, Any]) -> ml_collections.ConfigDict:
  """A ConfigDict from `config.json` data (lists stay lists), completed with
  `ADDED_DEFAULTS` for keys added after it was written."""
  data = json.loads(json.dumps(data))  # A deep copy.
  for key, value in ADDED_DEFAULTS.items():
    section, _, name = key.rpartition(".")
    if not section:
      data.setdefault(name, value)
    elif isinstance(data.get(section), dict):
      data[section].setdefault(name, value)
  return ml_collections.ConfigDict(data)


def _process_alive(pid: int) -> bool:
  """Whether `pid` runs on this host; a zombie (killed, not yet reaped by its
  parent) is dead: it holds nothing and will never release the lock."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Another user's process: alive.
    return True
  return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
  """True when /proc says `pid` is a zombie (state Z); False where /proc is
  missing (macOS) or unreadable."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      stat = f.read()
  except OSError:
    return False
  # The state follows the command name, which is in parentheses and may
  # itself hold spaces or parentheses.
  return stat[stat.rfind(")") + 1:].split()[:1] == ["Z"]


class WorkdirLock:
  """The exclusive claim of a workdir by one training run (see module doc).

  Use as a context manager; only JAX process 0 of a run takes it.
  """

  def __init__(self, workdir: PathLike):
    self.workdir = os.fspath(workdir)
    self.path = filesystem.path(workdir) / LOCK_FILE
    self.token = uuid.uuid4().hex
    self.held = False

  def _info(self) -> Dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "token": self.token}

  def _read(self) -> Optional[Dict[str, Any]]:
    try:
      return json.loads(self.path.read_text())
    except (OSError, ValueError):
      return None

  def _create(self) -> bool:
    """Writes the lock unless one exists; whether it was written."""
    data = json.dumps(self._info())
    if filesystem.is_url(self.path):
      if self.path.exists():
        return False
      self.path.write_text(data)
      return (self._read() or {}).get("token") == self.token
    try:
      fd = os.open(os.fspath(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      f.write(data)
    return True

  def _stale(self, holder: Optional[Dict[str, Any]]) -> bool:
    if holder is None:  # Unreadable or empty: a start that died writing it.
      return True
    return (holder.get("host") == socket.gethostname()
            and not _process_alive(int(holder.get("pid", -1))))

  def holder(self) -> Optional[Dict[str, Any]]:
    """The live run holding the lock (host, pid, started), or None where
    there is no lock or its run is gone (an unreadable lock counts as
    gone, as `acquire` takes it)."""
    holder = self._read()
    return None if self._stale(holder) else holder

  def acquire(self) -> None:
    """Takes the lock; one-line WorkdirInUse (a ConfigError) if a live run
    holds it."""
    if self._create():
      self.held = True
      return
    holder = self._read()
    if not self._stale(holder):
      raise errors.WorkdirInUse(
          f"{self.workdir} is in use by a run started {holder.get('started')} "
          f"on host {holder.get('host')} (pid {holder.get('pid')}); wait for "
          f"it to finish, or if that process is gone, remove {self.path}.")
    log.warning("%s: taking over the lock of a run that is gone (%s); its "
                "checkpoints are resumed.", self.workdir,
                "unreadable lock" if holder is None else
                f"pid {holder.get('pid')} on {holder.get('host')}, started "
                f"{holder.get('started')}")
    filesystem.write_bytes(self.path, json.dumps(self._info()))
    self.held = True

  def release(self) -> None:
    if self.held and (self._read() or {}).get("token") == self.token:
      self.path.unlink()
    self.held = False

  def __enter__(self) -> "WorkdirLock":
    if not self.held:
      self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def claim(config: ml_collections.ConfigDict, workdir: PathLike
          ) -> WorkdirLock:
  """Checks and locks the workdir before a run; records config.json.

  Returns the lock, held by JAX process 0 (use it as a context manager: it
  is released when the run ends; the other processes hold nothing).

  Raises:
    errors.ConfigError: one line, nothing in the workdir changed, if the
      workdir cannot be written, is in use by another run (its lock), or
      holds a run of another config (`check_config`).
  """
  import jax  # pylint: disable=g-import-not-at-top
  ensure_writable(workdir)
  lock = WorkdirLock(workdir)
  if jax.process_index() == 0:
    lock.acquire()
  else:
    lock.held = True  # The run's lock is process 0's: nothing to take here.
  try:
    resumed = check_config(workdir, config)
    if jax.process_index() == 0:
      record_config(workdir, config)
  except BaseException:
    lock.release()
    raise
  if resumed:
    log.info("%s: resuming the run recorded in config.json.", workdir)
  return lock
