"""Helpers shared by several test modules (no tests here).

Test modules import this by name (`import helpers`): tests/ is no package and
pytest puts it on sys.path for tests/conftest.py. Fixtures built from these
helpers (`tiny_data_dir`, `tiny_config`) live in conftest.py. Keep imports
light at the top: conftest imports this before any test runs.
"""

import contextlib
import json
import os
import pathlib
import re
from typing import Any, Callable, List

import numpy as np

import tiny_config as tiny_config_lib  # tests/tiny_config.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------ once per test run (xdist)
@contextlib.contextmanager
def shared_lock(root, name: str):
  """Holds the lock file root/<name>.lock (exclusive) across test processes:
  xdist workers wait for each other here."""
  import fcntl  # pylint: disable=g-import-not-at-top
  with open(pathlib.Path(root) / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    yield  # Closing the file releases the lock.


def _plain(value):
  """JSON for NumPy scalars and arrays."""
  if hasattr(value, "tolist"):
    return value.tolist()
  raise TypeError(f"{type(value).__name__} is not JSON")


def run_once(root, name: str, make: Callable[[pathlib.Path], Any]) -> Any:
  """`make(root / name)` once per test run; what it returned, as JSON.

  `root` is a folder every test process of the run shares (conftest's
  `shared_tmp_path`). The first process to ask calls `make` under a lock and
  records what it returns (JSON: paths, numbers, what the processes saw) or
  the error it raised; the others (xdist workers) wait for the lock and read
  the record. So an expensive set-up runs once however the tests of a module
  are spread over workers.
  """
  record = pathlib.Path(root) / f"{name}.json"
  with shared_lock(root, name):
    if not record.exists():
      try:
        value = make(pathlib.Path(root) / name)
      except BaseException as e:
        record.write_text(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        raise
      record.write_text(json.dumps({"value": value}, default=_plain))
  stored = json.loads(record.read_text())
  if "error" in stored:
    raise RuntimeError(f"{name} failed earlier in this test run (in this or "
                       f"another process): {stored['error']}")
  return stored["value"]


# ------------------------------------ command lines in one Python process
_CLI_RUNS = r"""
import contextlib, io, json, sys
from absl import flags
from coarseseg_jax import cli
body = __import__(sys.argv[1], fromlist=["main"]).main
out = []
real_stdout = sys.stdout
for argv in json.loads(sys.stdin.read()):
  flags.FLAGS.unparse_flags()
  std, err, code = io.StringIO(), io.StringIO(), 0
  with contextlib.redirect_stdout(std), contextlib.redirect_stderr(err):
    try:
      cli.main_function(body, on_ctrl_c="")(cli.parse_flags(["cli"] + argv))
    except SystemExit as e:
      code = e.code
  out.append([argv, code, std.getvalue(), err.getvalue()])
print(json.dumps(out), file=real_stdout)
"""


def cli_runs(module: str, argvs: List[List[str]], timeout: int = 300,
             **run_kwargs) -> list:
  """Runs each command line `argvs[i]` of `module`'s entry point (its
  `main`, as `cli.run` runs it: `cli.parse_flags`, `cli.main_function`), in
  order and all in ONE Python process; returns a CompletedProcess (argv,
  exit status, stdout, stderr) for each. No command pays a start-up, and
  equal configs share their compiled programs, as in one experiment. For
  mistakes caught before any work, and for commands without a `--config.*`
  override (ml_collections registers those from the process's own command
  line). A traceback (an error `cli` does not turn into one line) fails the
  process: asserted here."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  proc = subprocess.run([sys.executable, "-c", _CLI_RUNS, module],
                        input=json.dumps(argvs), cwd=ROOT, capture_output=True,
                        text=True, timeout=timeout, **run_kwargs)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return [subprocess.CompletedProcess(*r) for r in json.loads(
      proc.stdout.strip().splitlines()[-1])]


# ----------------------------------------------------------- the tiny config
def tiny_config(data_dir=None, arg=None):
  """A fresh tests/tiny_config.py config (`arg`: e.g. "paper").

  With `data_dir`, config.data.data_dir is that folder; without, it is what
  tiny_config.py reads ($COARSESEG_TEST_DATA_DIR, else "data").
  """
  config = tiny_config_lib.get_config(arg)
  if data_dir is not None:
    config.data.data_dir = str(data_dir)
  return config


def prepare_tiny_data(data_dir) -> str:
  """Prepares the tiny config's synthetic dataset in data_dir; returns it."""
  from coarseseg_jax import datasets  # pylint: disable=g-import-not-at-top
  config = tiny_config(data_dir)
  datasets.prepare(config.data, config.model.num_classes)
  return str(data_dir)


# -------------------------------------------------------- the README's code
def doc_files(folder: str) -> tuple:
  """The Markdown files of a folder of the repository, sorted, as paths
  relative to the repository root (docs/*.md)."""
  return tuple(sorted(
      os.path.relpath(p, ROOT)
      for p in pathlib.Path(ROOT, folder).glob("*.md")))


def readme_commands(relpath: str) -> List[str]:
  """The commands of the ```bash blocks of a README, in order."""
  with open(os.path.join(ROOT, relpath)) as f:
    text = f.read()
  commands = []
  for block in re.findall(r"```bash\n(.*?)```", text, re.S):
    current = ""
    for line in block.splitlines():
      if not current and line.strip().startswith("#"):
        continue
      line = _strip_comment(line)
      if line.endswith("\\"):
        current += line[:-1] + " "
        continue
      current += line
      if current.strip():
        commands.append(" ".join(current.split()))
      current = ""
  return commands


def _strip_comment(line: str) -> str:
  """The line without a trailing `# comment` outside quotes."""
  quote = None
  for i, ch in enumerate(line):
    if ch in "\"'" and quote in (None, ch):
      quote = None if quote else ch
    elif ch == "#" and quote is None and (i == 0 or line[i - 1].isspace()):
      return line[:i].rstrip()
  return line.rstrip()


# ------------------------------------------------------- SLIC propagation
def propagate_reference(label, slic):
  """The loop definition: majority of the segment's labelled pixels."""
  out = label.copy()
  for s in np.unique(slic[slic >= 0]):
    inside = slic == s
    votes = label[inside & (label != 255)]
    if votes.size:
      counts = np.bincount(votes)
      out[inside & (label == 255)] = np.argmax(counts)  # Ties: smaller id.
  return out
