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
import queue
import re
import subprocess
import sys
import threading
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
# The server side of `CliProcess`: reads one command line (JSON) per line of
# stdin, runs it as `cli.run` would, answers one line on the real stdout.
# sys.stdout and sys.stderr are replaced before anything is imported, so what
# a command prints or logs (absl's handler, tqdm) lands in its own answer;
# only C++ logs write to the process's stderr. ml_collections finds
# `--config.*` overrides in sys.argv when `--config` is parsed and defines a
# flag for each: sys.argv is the command's own, and the previous command's
# override flags are deleted first.
_CLI_SERVER = r"""
import io, json, sys, traceback
real_stdout = sys.stdout
sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
try:
  from absl import flags
  from coarseseg_jax import cli
  body = __import__(sys.argv[1], fromlist=["main"]).main
  for line in sys.stdin:
    argv = json.loads(line)
    flags.FLAGS.unparse_flags()
    for name in [n for n in flags.FLAGS if n.startswith("config.")]:
      delattr(flags.FLAGS, name)
    sys.argv = ["cli"] + argv
    for stream in (sys.stdout, sys.stderr):
      stream.seek(0)
      stream.truncate()
    code = 0
    try:
      cli.main_function(body, on_ctrl_c="")(cli.parse_flags(sys.argv))
    except SystemExit as e:
      code = e.code
    print(_ANSWER + json.dumps(
        [argv, code, sys.stdout.getvalue(), sys.stderr.getvalue()]),
        file=real_stdout, flush=True)
except BaseException:
  sys.__stderr__.write(sys.stderr.getvalue() + traceback.format_exc())
  raise SystemExit(1)
""".replace("_ANSWER", repr("\x1e"))


class CliProcess:
  """One Python process that runs command lines of `module`'s entry point
  (its `main`, as `cli.run` runs it: `cli.parse_flags`,
  `cli.main_function`), one at a time, until `close()`.

  `process(argv)` returns a `subprocess.CompletedProcess` (argv, exit
  status, the command's stdout and stderr). Only the first command pays the
  start-up (about 11 s with TensorFlow), and commands of equal configs share
  their compiled programs, as in one experiment; the test can look at what
  each command left before it runs the next. `--config.*` overrides work as
  on a command line. `popen_kwargs` go to `subprocess.Popen` (`env`, `cwd`:
  the repository root unless given). A traceback (an error `cli` does not
  turn into one line) ends the process and fails the test, and so does a
  command running over `timeout` seconds.
  """

  def __init__(self, module: str, timeout: int = 300, **popen_kwargs):
    popen_kwargs.setdefault("cwd", ROOT)
    self.module, self.timeout = module, timeout
    self._proc = subprocess.Popen(
        [sys.executable, "-c", _CLI_SERVER, module], text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        **popen_kwargs)
    self._answers, self._stderr = queue.Queue(), []
    threading.Thread(target=self._read_answers, daemon=True).start()
    threading.Thread(target=lambda: self._stderr.extend(self._proc.stderr),
                     daemon=True).start()

  def _read_answers(self):
    for line in self._proc.stdout:
      self._answers.put(line)
    self._answers.put(None)

  @property
  def alive(self) -> bool:
    return self._proc.poll() is None

  def __call__(self, argv: List[str]):
    assert self.alive, (f"{self.module} ended before {argv}",
                        "".join(self._stderr)[-3000:])
    self._proc.stdin.write(json.dumps(list(argv)) + "\n")
    self._proc.stdin.flush()
    while True:
      try:
        line = self._answers.get(timeout=self.timeout)
      except queue.Empty:
        self._proc.kill()
        raise AssertionError(f"{self.module}: over {self.timeout} s: "
                             f"{argv}") from None
      assert line is not None, (argv, "".join(self._stderr)[-3000:])
      if line.startswith("\x1e"):
        return subprocess.CompletedProcess(*json.loads(line[1:]))

  def close(self):
    if self.alive:
      self._proc.stdin.close()  # The server's loop ends.
      try:
        self._proc.wait(timeout=30)
      except subprocess.TimeoutExpired:
        self._proc.kill()
    self._proc.wait()


@contextlib.contextmanager
def cli_session(module: str, timeout: int = 300, **popen_kwargs):
  """A `CliProcess` for the `with` block."""
  process = CliProcess(module, timeout, **popen_kwargs)
  try:
    yield process
  finally:
    process.close()


def cli_runs(module: str, argvs: List[List[str]], timeout: int = 300,
             **popen_kwargs) -> list:
  """`cli_session`'s run of each command line of `argvs`, in order, in ONE
  process; a CompletedProcess for each."""
  with cli_session(module, timeout, **popen_kwargs) as run:
    return [run(argv) for argv in argvs]


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
