"""The command line: overriding any config field, configs from anywhere, the
workdir's config.json, and one-line errors."""

import glob
import json
import os
import shutil
import subprocess
import time
import sys
import zipfile

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags
import pytest

from coarseseg_jax import cli
from coarseseg_jax import datasets
from coarseseg_jax import errors
from coarseseg_jax import workdir as workdir_lib

import helpers  # pylint: disable=g-bad-import-order

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.basename(p)[:-3]
                 for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if not os.path.basename(p).startswith("_"))
SAMPLE = {int: "7", float: "0.5", str: "x", bool: "true"}


def _parse(config_path, *overrides):
  """Parses `--config=... overrides` with a fresh FlagValues (in process)."""
  argv = ["prog", f"--config={config_path}", *overrides]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv,
                                  lock_config=True, sys_argv=argv)
  fv(argv)
  return fv.config


def _leaves(config, prefix=""):
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", config.get_type(key)


def test_packaged_configs_are_the_repository_configs():
  assert cli.packaged_configs() == CONFIGS
  assert {"default", "synthetic", "folder", "suim", "pannuke",
          "cityscapes"} <= set(CONFIGS)


@pytest.mark.parametrize("name", [c for c in CONFIGS if c != "default"])
def test_every_field_can_be_overridden(name):
  """Typed placeholders: even fields whose default is None take a value."""
  path = os.path.join(ROOT, "configs", f"{name}.py")
  base = _parse(path)
  overrides = []
  for key, kind in _leaves(base):
    if kind in SAMPLE:
      overrides.append(f"--config.{key}={SAMPLE[kind]}")
  assert len(overrides) > 40
  config = _parse(path, *overrides)
  for arg in overrides:
    key, value = arg[len("--config."):].split("=")
    got = config
    for part in key.split("."):
      got = got[part]
    assert str(got).lower() == value.lower() or got == type(got)(value), key


@pytest.mark.parametrize("name", [c for c in CONFIGS if c != "default"])
def test_configs_list_every_dataset_parameter(name):
  """builder_kwargs holds each parameter of the dataset's builder, so each
  can be overridden (a folder's number of classes is model.num_classes)."""
  config = _parse(os.path.join(ROOT, "configs", f"{name}.py"))
  params = set(datasets.builder_class(config.data.dataset).PARAMS)
  if config.data.dataset == "folder":
    params.discard("num_classes")
  assert set(config.data.builder_kwargs) == params


def test_config_resolves_by_name_and_from_any_folder(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # No configs/ here.
  for value in ("suim", "configs/suim.py"):
    resolved = cli.resolve_config_path(value)
    assert os.path.samefile(resolved, os.path.join(ROOT, "configs", "suim.py"))
  absolute = os.path.join(ROOT, "configs", "folder.py")
  assert cli.resolve_config_path(absolute) == absolute
  with pytest.raises(FileNotFoundError, match="suim, synthetic"):
    cli.resolve_config_path("configs/nope.py")


@pytest.mark.slow  # The command line in a subprocess.
def test_command_line_from_another_folder(tmp_path):
  """The config by absolute path, and by name, from outside the repo."""
  with helpers.cli_session("coarseseg_jax.main", cwd=tmp_path,
                           env=dict(os.environ, XLA_FLAGS="")) as run:
    for config in (os.path.join(ROOT, "configs", "suim.py"), "pannuke"):
      proc = run([f"--config={config}", "--mode=summary",
                  "--config.model.width=8", "--config.model.stage_blocks=(1,1,1)",
                  "--config.data.crop_size=64"])
      assert proc.returncode == 0, proc.stderr[-3000:]
      assert "parameters" in proc.stdout
  assert os.listdir(tmp_path) == []


def test_wheel_ships_the_configs(tmp_path):
  """A non-editable install has coarseseg_jax.configs (from configs/)."""
  src = tmp_path / "src"  # A copy: building writes build/ and *.egg-info.
  src.mkdir()
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(os.path.join(ROOT, name), src / name)
  for name in ("coarseseg_jax", "configs"):
    shutil.copytree(os.path.join(ROOT, name), src / name,
                    ignore=shutil.ignore_patterns("__pycache__"))
  proc = subprocess.run(
      [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
       "-q", "-w", str(tmp_path), str(src)], capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  wheel, = glob.glob(str(tmp_path / "*.whl"))
  names = zipfile.ZipFile(wheel).namelist()
  for name in CONFIGS:
    assert f"coarseseg_jax/configs/{name}.py" in names
  for package in ("coarseseg_jax/datasets/", "coarseseg_jax/models/"):
    assert any(n.startswith(package) for n in names)
  # Every package of the source tree is listed in pyproject.toml.
  sources = {os.path.dirname(os.path.relpath(p, ROOT)) for p in glob.glob(
      os.path.join(ROOT, "coarseseg_jax", "**", "__init__.py"), recursive=True)}
  assert {s for s in sources} <= {os.path.dirname(n) for n in names}


# ------------------------------------------------------ the workdir's config


def _config(**train):
  config = ml_collections.ConfigDict({
      "seed": 0, "data": {"data_dir": "data", "dataset": "synthetic"},
      "model": {"name": "hcfcn", "num_classes": 6},
      "train": {"lmbda": 0.05, "num_epochs": 10, "max_steps": None}})
  config.train.update(train)
  return config


def test_workdir_refuses_a_changed_run_and_accepts_an_extension(tmp_path):
  workdir = str(tmp_path / "run")
  assert not workdir_lib.check_config(workdir, _config())
  workdir_lib.record_config(workdir, _config())
  assert workdir_lib.check_config(workdir, _config(num_epochs=20,
                                                    max_steps=5))
  before = sorted(os.listdir(workdir))
  with pytest.raises(errors.ConfigError) as e:
    workdir_lib.check_config(workdir, _config(lmbda=0.0, seed=1))
  assert "train.lmbda: 0.05 -> 0.0" in str(e.value)
  assert "\n" not in str(e.value)
  assert sorted(os.listdir(workdir)) == before


def test_a_refined_run_resumes_where_its_labels_moved_but_not_from_others(
    tmp_path):
  """An archive restored under another --workdir_root moves the teacher's
  refined labels (data.refined_dir); what they are (data.refined_from: the
  teacher's recorded workdir, step and fill) must stay."""
  def refined(refined_dir, fill):
    config = _config()
    config.data.update(train_labels="refined", refined_dir=refined_dir,
                       refined_from=f"/a/seed0 step 625 fill {fill}")
    return config
  workdir = str(tmp_path / "run")
  workdir_lib.record_config(workdir, refined("/a/seed0/refined_train", "auto"))
  assert workdir_lib.check_config(
      workdir, refined("/b/seed0/refined_train", "auto"))
  with pytest.raises(errors.ConfigError, match="data.refined_from"):
    workdir_lib.check_config(
        workdir, refined("/b/seed0/refined_train", "nearest_labelled"))


@pytest.mark.slow  # The command line in a subprocess: ~10 s of imports.
def test_refused_restart_writes_nothing(tmp_path):
  """The README's `--config.train.lmbda=0` in a used workdir: one line,
  exit 1, no file touched."""
  workdir = tmp_path / "run"
  workdir.mkdir()
  recorded = workdir_lib.config_as_json(_parse(
      os.path.join(ROOT, "tests", "tiny_config.py")))
  recorded["model"]["num_classes"] = 6
  (workdir / "config.json").write_text(json.dumps(recorded))
  stamp = os.stat(workdir / "config.json").st_mtime_ns
  env = dict(os.environ, XLA_FLAGS="",
             COARSESEG_TEST_DATA_DIR=str(tmp_path / "data"))
  proc = subprocess.run(
      [sys.executable, "-m", "coarseseg_jax.main",
       "--config=tests/tiny_config.py", f"--workdir={workdir}",
       "--config.train.lmbda=0", f"--config.data.data_dir={recorded['data']['data_dir']}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "train.lmbda: 0.05 -> 0.0" in lines[0]
  assert "Traceback" not in proc.stderr
  assert os.listdir(workdir) == ["config.json"]
  assert os.stat(workdir / "config.json").st_mtime_ns == stamp


# A misspelt field, a bad value, a field that is not there: each one line.
MISTAKES = [
    ("--config.train.lmdba=0.1", "'lmdba' is not a config field (did you "
                                 "mean 'lmbda'?)"),
    ("--config.train.lmbda=abc", "could not convert string to float"),
    ("--config.data.builder_kwargs.nope=1", "'nope' is not a config field"),
]


def test_command_line_mistakes_are_one_line():
  """MISTAKES, one command line each, in one process (`cli_session`)."""
  with helpers.cli_session("coarseseg_jax.main", timeout=120) as run:
    for override, message in MISTAKES:
      proc = run(["--config=configs/suim.py", override, "--mode=summary"])
      assert proc.returncode == 2, (override, proc.stderr)
      assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
      assert message in proc.stderr and "Traceback" not in proc.stderr
      assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.slow  # Six command lines in subprocesses: ~5 s of imports each.
@pytest.mark.parametrize("module", ["coarseseg_jax.main",
                                    "coarseseg_jax.experiments",
                                    "coarseseg_jax.datasets.prepare"])
@pytest.mark.parametrize("args,message", [
    (["--no_such_flag=1"], "error: Unknown command line flag 'no_such_flag'"),
    (["stray"], "error: unexpected arguments: stray"),
])
def test_every_entry_point_reports_flag_errors_in_one_line(module, args,
                                                           message):
  """One runner (`cli.run`): the same line and exit status 2 everywhere."""
  proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines() == [message], proc.stderr[-2000:]


def test_the_runner_maps_each_failure_to_one_line_and_a_status(capsys):
  def raising(exc):
    def body():
      raise exc
    return cli.main_function(body, on_ctrl_c="stopped; run again.",
                             on_stop=" (resumes.)")

  cases = [(app.UsageError("--x: bad"), 2, "error: --x: bad"),
           (errors.DatasetError("a.png: broken"), 1, "error: a.png: broken"),
           (errors.Interrupted(15, 7, saved=True), 143, None),
           (KeyboardInterrupt(), 130, "stopped; run again.")]
  for exc, status, line in cases:
    with pytest.raises(SystemExit) as exit_info:
      raising(exc)(["prog"])
    assert exit_info.value.code == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    if line:
      assert err[0] == line
    else:
      assert err[0] == f"{exc} (resumes.)"
  with pytest.raises(RuntimeError):  # A bug keeps its traceback.
    raising(RuntimeError("bug"))(["prog"])


def _lock_held_by(workdir, pid):
  """Takes the workdir's lock, then rewrites lock.json to name `pid` as its
  holder (this host); returns the lock object that took it."""
  lock = workdir_lib.WorkdirLock(workdir)
  lock.acquire()
  path = os.path.join(workdir, "lock.json")
  data = json.loads(open(path).read())
  data["pid"] = pid
  with open(path, "w") as f:
    json.dump(data, f)
  return lock


def test_workdir_lock(tmp_path, caplog):
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  first = workdir_lib.WorkdirLock(workdir)
  first.acquire()
  with pytest.raises(errors.ConfigError) as e:
    workdir_lib.WorkdirLock(workdir).acquire()
  assert f"pid {os.getpid()}" in str(e.value) and "lock.json" in str(e.value)
  first.release()
  assert not os.path.exists(os.path.join(workdir, "lock.json"))
  # A lock of a process that is gone (same host) is taken over, with a warning.
  dead = subprocess.Popen(["true"])
  dead.wait()
  with workdir_lib.WorkdirLock(workdir):
    pass
  holder = _lock_held_by(workdir, dead.pid)
  with caplog.at_level("WARNING"):
    taker = workdir_lib.WorkdirLock(workdir)
    taker.acquire()
  assert f"pid {dead.pid}" in caplog.text and "taking over" in caplog.text
  holder.release()  # Not its lock any more: left alone.
  assert os.path.exists(os.path.join(workdir, "lock.json"))
  taker.release()
  # An empty lock file (a start that died writing it) is stale too.
  open(os.path.join(workdir, "lock.json"), "w").close()
  with workdir_lib.WorkdirLock(workdir) as lock:
    assert lock.held


@pytest.mark.slow  # The command line in a subprocess: ~10 s of imports.
def test_unwritable_workdir_is_one_line_before_any_data_work(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  env = dict(os.environ, XLA_FLAGS="")
  proc = subprocess.run(
      [sys.executable, "-m", "coarseseg_jax.main",
       "--config=tests/tiny_config.py", f"--workdir={blocker}/run",
       f"--config.data.data_dir={tmp_path}/data"], cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1
  lines = proc.stderr.strip().splitlines()
  assert lines[-1].startswith(f"error: --workdir={blocker}/run cannot be "
                              "written")
  assert "Traceback" not in proc.stderr
  assert not os.path.exists(tmp_path / "data")  # Checked before preparing.


def test_workdir_lock_of_a_zombie_is_taken_over(tmp_path, caplog):
  """A holder that was killed but not yet reaped (a zombie) is dead."""
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  zombie = subprocess.Popen(["sleep", "60"])
  zombie.kill()
  for _ in range(100):  # Until the kernel marks it Z (not reaped: no wait).
    if workdir_lib._is_zombie(zombie.pid):  # pylint: disable=protected-access
      break
    time.sleep(0.05)
  assert workdir_lib._is_zombie(zombie.pid)  # pylint: disable=protected-access
  _lock_held_by(workdir, zombie.pid)
  with caplog.at_level("WARNING"):
    with workdir_lib.WorkdirLock(workdir) as lock:
      assert lock.held
  assert f"pid {zombie.pid}" in caplog.text and "taking over" in caplog.text
  zombie.wait()
  assert not workdir_lib._is_zombie(os.getpid())  # pylint: disable=protected-access
