"""JAX's persistent compilation cache, one per workdir by default.

XLA programs (the train step, the eval step, the state's initialisation) are
compiled once and stored in a cache directory; a resumed run, an `eval` or a
`predict` of the same workdir loads them instead of compiling again (on the
2-core CPU the train step of the synthetic config compiles in 10-25 s;
benchmarks/README.md, "Start-up and the compilation cache").

`config.compilation_cache_dir` says where (`cache_dir` resolves it):

* `"workdir"` (the default, `WORKDIR`): `<workdir>/compilation_cache`, unless
  the environment variable `JAX_COMPILATION_CACHE_DIR` names a directory,
  which then wins (one cache shared by many runs, e.g. the test suite's);
* a path (or a gs:// URL): that directory, shared by every run that names it;
* `""`: no persistent cache (each process compiles everything).

Which programs are stored: those that took at least `MIN_COMPILE_TIME_SECS`
to compile (JAX's default is 1 s), whatever their size; loading a stored
program takes a fraction of that. Entries are keyed by the program, the
devices, the compile options and the jax / jaxlib versions, so a cache is
never used for the wrong program; an unreadable or unwritable cache only
costs JAX a warning and a compilation. JAX treats a cache as trusted code:
do not point it at a directory others may write.

`setup(config, workdir, mode)` is the one call, made by `main` before
anything is compiled; only `--mode=summary` leaves a workdir that does not
exist yet untouched (it uses the workdir's cache only if the workdir
exists), so a summary writes nothing new.
"""

import logging
import os
from typing import Mapping, Optional

from coarseseg_jax import errors

log = logging.getLogger(__name__)

WORKDIR = "workdir"  # The config's sentinel: a folder inside the workdir.
SUBDIR = "compilation_cache"
ENV_VAR = "JAX_COMPILATION_CACHE_DIR"
# Programs compiling faster than this are not stored: on the 2-core CPU the
# train, eval and init programs of even the tiny test config take 1-40 s,
# the small ones (random-key splits, conversions, the state's assembly)
# 0.01-0.6 s, for which a cache file costs about as much as compiling.
MIN_COMPILE_TIME_SECS = 0.5
MIN_ENTRY_SIZE_BYTES = 0  # Any size (JAX's own default).


def cache_dir(setting: Optional[str], workdir: Optional[str],
              environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
  """The cache directory a `config.compilation_cache_dir` value stands for.

  Pure: reads nothing but its arguments (`environ` defaults to os.environ).

  Args:
    setting: `WORKDIR` ("workdir", also what a config.json written before
      the key existed reads as) or None: `<workdir>/compilation_cache`, or the environment's
      `JAX_COMPILATION_CACHE_DIR` when that is set and not empty; `""`: off;
      anything else: a directory path or URL.
    workdir: the run's workdir (local path or URL), or None.
    environ: the environment to read `JAX_COMPILATION_CACHE_DIR` from.

  Returns:
    the directory (local paths made absolute, URLs as given), or None for no
    persistent cache (`""`, or the sentinel without a workdir).

  Raises:
    errors.ConfigError: `setting` is not a string.
  """
  if setting is None:
    setting = WORKDIR
  if not isinstance(setting, str):
    raise errors.ConfigError(
        f"config.compilation_cache_dir={setting!r} must be a string: "
        f"{WORKDIR!r} (<workdir>/{SUBDIR}), a directory, or '' (off).")
  if not setting:
    return None
  if setting == WORKDIR:
    env = (os.environ if environ is None else environ).get(ENV_VAR)
    if env:
      return _absolute(env)
    if not workdir:
      return None
    return _absolute(os.path.join(os.fspath(workdir), SUBDIR))
  return _absolute(setting)


def _absolute(p: str) -> str:
  if "://" in p:
    return p
  return os.path.abspath(os.path.expanduser(p))


def enable(directory: str,
           min_compile_time_secs: float = MIN_COMPILE_TIME_SECS,
           min_entry_size_bytes: int = MIN_ENTRY_SIZE_BYTES) -> None:
  """Points JAX's persistent compilation cache at `directory`.

  JAX creates the directory when it stores the first program. If the cache
  was already initialised elsewhere (something compiled before), it is reset
  so that the new directory takes effect.

  Raises:
    errors.ConfigError: `directory` is an existing local file.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental.compilation_cache import compilation_cache as cc  # pylint: disable=g-import-not-at-top
  if "://" not in directory and os.path.exists(directory) and not (
      os.path.isdir(directory)):
    raise errors.ConfigError(
        f"config.compilation_cache_dir: {directory} is a file, not a "
        "directory; pass a directory, or '' to switch the cache off.")
  changed = (jax.config.jax_compilation_cache_dir != directory
             or not jax.config.jax_enable_compilation_cache)
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    float(min_compile_time_secs))
  jax.config.update("jax_persistent_cache_min_entry_size_bytes",
                    int(min_entry_size_bytes))
  if changed:
    cc.reset_cache()


def disable() -> None:
  """Switches JAX's persistent compilation cache off (environment included)."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental.compilation_cache import compilation_cache as cc  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_enable_compilation_cache", False)
  cc.reset_cache()


def setup(config, workdir: Optional[str], mode: str = "train"
          ) -> Optional[str]:
  """Sets up the cache `config.compilation_cache_dir` names for this process.

  Call once, before anything is compiled (`main` does, first thing in
  `_run`). With `mode == "summary"` the workdir's cache is used only if the
  workdir exists (a summary writes nothing new); an explicit directory is
  used in every mode.

  Args:
    config: the run's config (`config.compilation_cache_dir` may be absent:
      the sentinel `"workdir"` then applies).
    workdir: the run's workdir.
    mode: `main`'s `--mode`.

  Returns:
    the cache directory in use, or None (off).
  """
  setting = config.compilation_cache_dir
  directory = cache_dir(setting, workdir)
  if (directory is not None and mode == "summary" and setting in (None, WORKDIR)
      and not os.environ.get(ENV_VAR) and not _exists(workdir)):
    directory = None
  if directory is None:
    disable()
    return None
  enable(directory)
  log.info("compilation cache: %s", directory)
  return directory


def _exists(workdir: Optional[str]) -> bool:
  if not workdir:
    return False
  from coarseseg_jax import filesystem  # pylint: disable=g-import-not-at-top
  try:
    return filesystem.path(workdir).exists()
  except Exception:  # pylint: disable=broad-except
    return False  # An unreachable URL: no cache for a summary.


def num_entries(directory: str) -> int:
  """Number of programs stored in a local cache directory (0 if absent).

  JAX stores each program as `<key>-cache` (plus `<key>-atime` for its
  least-recently-used eviction); other files are not counted.
  """
  if not os.path.isdir(directory):
    return 0
  return sum(1 for name in os.listdir(directory) if name.endswith("-cache"))
