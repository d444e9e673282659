"""Command-line plumbing shared by the entry points (`main`, `experiments`,
`datasets.prepare`).

* `run`: THE way an entry point runs its body: flags parsed by
  `parse_flags`, then one line and an exit status for every way it can fail
  that the user can act on: 2 for the command line (flag errors,
  `app.UsageError`), 1 for a user error (`errors.Error`: config values, data,
  checkpoints), 128 + signal for a stopped run (`errors.Interrupted`, whose
  checkpoint is saved) and 130 for Ctrl-C anywhere else. Anything else is a
  bug and keeps its traceback.

* `resolve_config_path`: `--config` names a config file by path (relative to
  the current folder, or absolute), or one of the configs shipped with the
  package by name (`--config=suim`, or `--config=configs/suim.py` where no
  such file exists here, e.g. after a non-editable `pip install`).
* `parse_flags`: absl's flag parsing, with every mistake on the command line
  (unknown or misspelt `--config.*` field, a value of the wrong type, a missing
  or broken config file) reported as ONE line `error: ...` and exit status 2,
  never a traceback. Pass it to `app.run(main, flags_parser=cli.parse_flags)`.
* `config_overrides`: the `--config.*` values given on the command line.
"""

import importlib.resources
import os
import re
import sys
from typing import Callable, Dict, List, Optional, Sequence

from absl import app
from absl import flags
from ml_collections import config_flags

from coarseseg_jax import errors

PACKAGE_CONFIGS = "coarseseg_jax.configs"
USAGE_EXIT = 2


def packaged_configs() -> List[str]:
  """Names of the configs shipped with the package (configs/*.py)."""
  root = importlib.resources.files(PACKAGE_CONFIGS)
  return sorted(p.name[:-3] for p in root.iterdir()
                if p.name.endswith(".py") and not p.name.startswith("_"))


def resolve_config_path(value: str) -> str:
  """The config file `value` names (see the module docstring).

  Raises:
    FileNotFoundError: with a one-line message naming the shipped configs.
  """
  file_part, sep, args = value.partition(":")
  if os.path.isfile(os.path.expanduser(file_part)):
    return os.path.expanduser(file_part) + sep + args
  name = os.path.basename(file_part)
  name = name[:-3] if name.endswith(".py") else name
  if name in packaged_configs() and (
      os.sep not in file_part or os.path.dirname(file_part) in ("configs",)):
    packaged = importlib.resources.files(PACKAGE_CONFIGS) / f"{name}.py"
    return str(packaged) + sep + args
  raise FileNotFoundError(
      f"--config={value}: no such file; give the path of a config file, or "
      f"one of the configs shipped with coarseseg_jax: "
      f"{', '.join(n for n in packaged_configs() if n != 'default')}.")


def _config_flag_names() -> List[str]:
  """Names of the defined config-file flags (normally just `config`)."""
  return [name for name, flag in flags.FLAGS._flags().items()  # pylint: disable=protected-access
          if flag.flag_type() == "config object"]


def _rewrite_config_args(argv: Sequence[str]) -> List[str]:
  """argv with each `--<config flag>=VALUE` resolved to a file path."""
  names = _config_flag_names()
  out = list(argv)
  for i, arg in enumerate(out):
    for name in names:
      m = re.match(rf"^--?{name}=(.*)$", arg)
      if m:
        out[i] = f"--{name}={resolve_config_path(m.group(1))}"
      elif arg in (f"--{name}", f"-{name}") and i + 1 < len(out):
        out[i + 1] = resolve_config_path(out[i + 1])
  return out


def _field_error(message: str) -> str:
  """One line for a KeyError/AttributeError of ml_collections."""
  text = message.strip("'\"").replace("\\n", "\n").replace("\\'", "'")
  first = text.splitlines()[0].strip("'\" ")
  hint = re.search(r'Did you mean "([^"]+)"', text)
  hint = f" (did you mean {hint.group(1)!r}?)" if hint else ""
  return f"{first!r} is not a config field{hint}"


def _offending_override(argv: Sequence[str], field: str) -> Optional[str]:
  for arg in argv:
    name = arg.split("=", 1)[0].lstrip("-")
    if "." in name and name.split(".")[-1] == field:
      return name
  return None


def parse_flags(argv: Sequence[str]) -> List[str]:
  """absl flag parsing with one-line errors (see the module docstring)."""
  try:
    argv = _rewrite_config_args(argv)
  except FileNotFoundError as e:
    _usage_error(str(e))
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:  # Unknown flag, bad value, missing --config.
    text = str(e)
    if "Error whilst parsing config file" in text:  # get_config raised.
      text = ("the config file failed to load: "
              f"{_last_line(e)}")
    _usage_error(text.splitlines()[0])
  except (KeyError, AttributeError) as e:  # A misspelt --config.* field.
    text = _field_error(str(e.args[0] if e.args else e))
    field = re.match(r"'([^']*)'", text)
    flag = _offending_override(argv, field.group(1)) if field else None
    _usage_error(f"--{flag}: {text}" if flag else text)
  except Exception as e:  # pylint: disable=broad-except
    # A config file that fails to run (SyntaxError, ...): name the file.
    _usage_error(f"the config file failed to load: {type(e).__name__}: "
                 f"{_last_line(e)}")
  raise AssertionError("unreachable")


def _last_line(e: BaseException) -> str:
  lines = [l for l in str(e).splitlines() if l.strip()]
  return lines[-1].strip() if lines else ""


def _usage_error(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(USAGE_EXIT)


def flag_config_file(flag_name: str = "config") -> str:
  """The config file a config flag was given (after `resolve_config_path`)."""
  return config_flags.get_config_filename(flags.FLAGS[flag_name])


def config_overrides(flag_name: str = "config") -> Dict[str, object]:
  """The `--<flag_name>.*` values of the command line, by dotted key."""
  flag = flags.FLAGS[flag_name]
  return dict(config_flags.get_override_values(flag)) if flag.present else {}


def main_function(body: Callable[[], None], *, on_ctrl_c: str,
                  on_stop: str = "") -> Callable[[Sequence[str]], None]:
  """The absl `main` that runs `body()` with `run`'s exits.

  Args:
    body: the entry point's work; it reads its flags itself.
    on_ctrl_c: the line printed for a KeyboardInterrupt that escapes `body`
      (say what was kept and how to go on).
    on_stop: appended to an `errors.Interrupted` message.
  """

  def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
      _usage_error(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
      body()
    except app.UsageError as e:
      _usage_error(str(e))
    except errors.Interrupted as e:  # Before Error: it is one.
      print(f"{e}{on_stop}", file=sys.stderr)
      sys.exit(e.exit_status)
    except KeyboardInterrupt:
      print(on_ctrl_c, file=sys.stderr)
      sys.exit(130)
    except errors.USER_ERRORS as e:
      for line in str(e).splitlines() or [""]:  # One line per problem.
        print(f"error: {line}", file=sys.stderr)
      sys.exit(1)

  return main


def run(body: Callable[[], None], *, on_ctrl_c: str,
        on_stop: str = "") -> None:
  """Parses the flags and runs `body` (see the module docstring)."""
  app.run(main_function(body, on_ctrl_c=on_ctrl_c, on_stop=on_stop),
          flags_parser=parse_flags)
