"""End-to-end training: a tiny config on 8 fake CPU devices, kill -9, resume.

The tests of `TestKillResume` share one scenario, run by the fixtures below,
each stage once per test run (`helpers.run_once`: xdist workers share it) and
from the stage before: an uninterrupted run in process (`reference`); the same
run started from the command line, which a second process on its workdir is
refused, stopped by SIGTERM (`interrupted`); resumed and killed with SIGKILL
(`killed`); finished in process (`resumed`). Each test checks one behaviour of
it, so a failure names the behaviour (and the tests of later stages error
out, naming the stage that could not run). Under xdist the class runs in one
worker, first (conftest's scheduler), so no other worker waits for a stage.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import types

import jax
import numpy as np
import pytest

from coarseseg_jax import checkpoints
from coarseseg_jax import config_validation
from coarseseg_jax import errors
from coarseseg_jax import evaluate
from coarseseg_jax import host
from coarseseg_jax import interruption
from coarseseg_jax import models
from coarseseg_jax import predictor
from coarseseg_jax import profiling
from coarseseg_jax import sharding
from coarseseg_jax import state as state_lib
from coarseseg_jax import step as step_lib
from coarseseg_jax import train

import helpers  # pylint: disable=g-bad-import-order

ROOT = helpers.ROOT


def _checkpoint_steps(workdir):
  path = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(path):
    return []
  return sorted(int(d) for d in os.listdir(path) if d.isdigit())


def _train_steps(workdir, all_records=False):
  """The largest train step logged (or every one, with all_records)."""
  path = os.path.join(workdir, "metrics.jsonl")
  try:
    with open(path) as f:
      steps = [json.loads(l)["step"] for l in f if '"train"' in l]
  except (OSError, ValueError):
    steps = []
  return steps if all_records else max(steps, default=0)


def _wait_for(condition, proc, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if condition():
      return
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    time.sleep(0.05)
  raise AssertionError("timed out")


def _params(workdir, like_state):
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"), 2)
  state, meta = ckpt.restore(like_state)
  ckpt.close()
  return jax.device_get(state.params), meta


def _env(data_dir, one_device=False):
  """The command line's environment; `one_device`: without the 8 fake
  devices (a process that only needs to restore, predict or refuse compiles
  and runs faster on one)."""
  env = dict(os.environ, COARSESEG_TEST_DATA_DIR=data_dir)
  if one_device:
    env["XLA_FLAGS"] = " ".join(
        f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f)
  return env


# ------------------------------------------- kill, resume: one scenario
# Its tests are slow: it trains 30 steps four times over, in process and from
# the command line. Validation every 5 epochs (steps 10, 20, 30): the resumed
# run must keep the uninterrupted run's schedule across restarts that fall
# between validations.
def _scenario_config(data_dir):
  config = helpers.tiny_config(data_dir)
  config.train.num_epochs = 15  # 30 steps: time to interrupt it, twice.
  config.train.eval_every_epochs = 5
  config.train.checkpoint_every_steps = 100  # In process: epoch ends only.
  return config


def _command(workdir):
  return [sys.executable, "-m", "coarseseg_jax.main",
          "--config=tests/tiny_config.py", f"--workdir={workdir}",
          "--config.train.num_epochs=15", "--config.train.eval_every_epochs=5"]


def _start(workdir, env, *extra):
  return subprocess.Popen(
      _command(workdir) + list(extra), cwd=ROOT, env=env,
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _stop(proc):
  """Ends a process the scenario started if a failure left it running."""
  if proc.poll() is None:
    proc.kill()
    proc.wait()


def _saved_step(err):
  """The step of SIGTERM's last line: 'interrupted by SIGTERM at step N:
  checkpoint N is saved'."""
  line = err.strip().splitlines()[-1]
  return int(re.search(r"interrupted by SIGTERM at step (\d+): checkpoint "
                       r"\1 is saved", line).group(1))


@pytest.fixture(scope="module")
def scenario_config(tiny_data_dir):
  """The in-process runs' config as training leaves it (validated: the
  dataset's number of classes filled in), for the tests' own calls."""
  return config_validation.resolve(_scenario_config(tiny_data_dir)).config


@pytest.fixture
def scenario_workdir(shared_tmp_path, resumed):
  """The finished run's workdir, one test at a time across xdist workers
  (eval writes to it)."""
  with helpers.shared_lock(shared_tmp_path, "kill_resume_workdir"):
    yield resumed.workdir


@pytest.fixture(scope="module")
def reference(shared_tmp_path, tiny_data_dir):
  """The uninterrupted run, in process: its folder and test results."""
  def run(base):
    assert jax.device_count() == 8
    ref_dir = str(base / "uninterrupted")
    ref = train.train_and_evaluate(
        config_validation.resolve(_scenario_config(tiny_data_dir)), ref_dir)
    return dict(base=str(base), ref_dir=ref_dir, test=ref["test"])
  return types.SimpleNamespace(
      **helpers.run_once(shared_tmp_path, "kill_resume", run))


@pytest.fixture(scope="module")
def interrupted(shared_tmp_path, tiny_data_dir, reference):
  """The same run, started as a user would, with every step checkpointed but
  an interval of 4 for this first process: a second process is started on
  its workdir once it trains, then it gets SIGTERM. What each process did,
  and the workdir right after the first ended."""
  def run(_):
    workdir = os.path.join(reference.base, "interrupted")
    env = _env(tiny_data_dir)
    first = _start(workdir, env, "--config.train.checkpoint_every_steps=4")
    try:
      _wait_for(lambda: _train_steps(workdir) >= 3, first)
      second = subprocess.run(_command(workdir), cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
      first_still_training = first.poll() is None
      first.send_signal(signal.SIGTERM)
      _, err = first.communicate(timeout=120)
    finally:
      _stop(first)
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    return dict(
        workdir=workdir, first_pid=first.pid,
        first_returncode=first.returncode, err=err,
        first_still_training=first_still_training,
        second_returncode=second.returncode, second_stderr=second.stderr,
        checkpoint_steps=_checkpoint_steps(workdir),
        train_steps=_train_steps(workdir, all_records=True),
        checkpoint_entries=(os.listdir(checkpoint_dir)
                            if os.path.isdir(checkpoint_dir) else None),
        lock=os.path.exists(os.path.join(workdir, "lock.json")))
  return types.SimpleNamespace(
      **helpers.run_once(shared_tmp_path, "kill_resume_interrupted", run))


@pytest.fixture(scope="module")
def killed(shared_tmp_path, tiny_data_dir, interrupted):
  """Resumed from the command line, then killed (SIGKILL) after a later
  checkpoint: whether lock.json and results.json exist then."""
  def run(_):
    workdir = interrupted.workdir
    saved = _saved_step(interrupted.err)
    third = _start(workdir, _env(tiny_data_dir))
    try:
      _wait_for(lambda: max(_checkpoint_steps(workdir)) >= saved + 2, third)
      third.send_signal(signal.SIGKILL)
      third.wait()
    finally:
      _stop(third)
    return dict(lock=os.path.exists(os.path.join(workdir, "lock.json")),
                results=os.path.exists(os.path.join(workdir, "results.json")))
  return types.SimpleNamespace(
      **helpers.run_once(shared_tmp_path, "kill_resume_killed", run))


@pytest.fixture(scope="module")
def resumed(shared_tmp_path, tiny_data_dir, interrupted, killed):
  """The same command again, in process, to the end: its workdir, test
  results, and whether lock.json exists after."""
  del killed  # Only its order: after the SIGKILL.
  def run(_):
    workdir = interrupted.workdir
    results = train.train_and_evaluate(
        config_validation.resolve(_scenario_config(tiny_data_dir)), workdir)
    return dict(workdir=workdir, test=results["test"],
                lock=os.path.exists(os.path.join(workdir, "lock.json")))
  return types.SimpleNamespace(
      **helpers.run_once(shared_tmp_path, "kill_resume_resumed", run))


def _write_photos(images):
  """a.png (40 x 56), b.jpg (64 x 64) and notes.txt, not an image."""
  from skimage import io as skio  # pylint: disable=g-import-not-at-top
  images.mkdir()
  rng = np.random.default_rng(0)
  skio.imsave(images / "a.png", rng.integers(0, 255, (40, 56, 3), np.uint8))
  skio.imsave(images / "b.jpg", rng.integers(0, 255, (64, 64, 3), np.uint8))
  (images / "notes.txt").write_text("not an image")


@pytest.mark.slow
class TestKillResume:
  """One scenario, a test per behaviour (see the module docstring). A class:
  under xdist its tests run in one worker, in order (conftest's scheduler)."""

  def test_a_second_process_on_the_workdir_is_refused_naming_the_holder(
      self, interrupted):
    """Refused at once, naming the holder; it changes nothing."""
    stderr = interrupted.second_stderr
    assert interrupted.second_returncode == 1, stderr[-2000:]
    assert f"pid {interrupted.first_pid}" in stderr and (
        "in use by a run" in stderr)
    assert interrupted.first_still_training

  def test_sigterm_saves_the_step_in_flight_in_one_line_status_143(
      self, interrupted):
    """The step in flight finishes, is saved, one line, status 143."""
    assert interrupted.first_returncode == 143, interrupted.err[-3000:]
    saved = _saved_step(interrupted.err)
    assert saved in interrupted.checkpoint_steps
    assert saved == max(interrupted.train_steps)  # None lost.
    assert not any("tmp" in d for d in interrupted.checkpoint_entries)
    assert not interrupted.lock

  def test_sigkill_leaves_the_lock_and_no_results(self, killed):
    assert killed.lock
    assert not killed.results

  def test_the_resumed_run_ends_like_the_uninterrupted_one(
      self, reference, resumed, scenario_config, scenario_workdir):
    """Same data in the same order -> the same final parameters and metrics."""
    config = scenario_config
    model_state = state_lib.create_train_state(
        config, models.create_model(config.model),
        sharding.make_mesh(), config.data.crop_size)
    p_ref, _ = _params(reference.ref_dir, model_state)
    p_res, meta = _params(scenario_workdir, model_state)
    assert meta["phase"] == "train"
    for a, b in zip(jax.tree.leaves(p_ref), jax.tree.leaves(p_res)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    for key, value in reference.test.items():
      assert resumed.test[key] == pytest.approx(value, rel=1e-3, abs=1e-4), key
    assert not resumed.lock

  def test_a_finished_run_leaves_results_metrics_events_and_figures(
      self, scenario_workdir):
    """What a run leaves behind."""
    workdir = scenario_workdir
    with open(os.path.join(workdir, "results.json")) as f:
      results = json.load(f)
    for metric in ("accuracy", "boundary_recall", "boundary_f1", "asa", "miou",
                   "superpixel_asa", "slic_asa"):
      assert 0.0 <= results["test"][f"{metric}_mean"] <= 1.0, metric
      assert results["test"][f"{metric}_std"] >= 0.0
    assert results["test"]["num_images"] == 4
    assert results["config"]["train"]["lmbda"] == 0.05
    assert results["machine"] == host.machine()  # For the tables' line.
    records = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == list(range(1, 31))  # Each step once, in order.
    # Whether it fits its labels: the last epoch's (2 steps, each logged).
    last_epoch = [r["accuracy"] for r in records if r["split"] == "train"][-2:]
    assert results["train_accuracy"] == pytest.approx(np.mean(last_epoch))
    assert {"slic", "slic_map", "cross_entropy"} <= set(records[0])
    assert [r["step"] for r in records if r["split"] == "validation"] == [
        10, 20, 30]
    events = [f for _, _, fs in os.walk(os.path.join(workdir, "tensorboard"))
              for f in fs if f.startswith("events.out.tfevents")]
    assert events
    figs = os.listdir(os.path.join(workdir, "figures"))
    assert {"sample_0.png", "sample_1.png", "curves.png"} <= set(figs)

  def test_eval_mode_on_the_best_checkpoint_reproduces_the_test_figures(
      self, scenario_config, scenario_workdir):
    """--mode=eval on the best checkpoint reproduces the test figures."""
    workdir = scenario_workdir
    with open(os.path.join(workdir, "results.json")) as f:
      results = json.load(f)
    evaluated = evaluate.evaluate_checkpoint(
        config_validation.resolve(scenario_config, "split"), workdir, "test")
    assert evaluated["step"] == results["selected_step"]
    for key in ("accuracy_mean", "boundary_recall_mean", "miou_dataset"):
      assert evaluated["test"][key] == pytest.approx(results["test"][key])
    assert os.path.exists(os.path.join(workdir, "eval_test.json"))

  def test_predict_mode_writes_labels_of_each_images_size_and_overlays(
      self, scenario_config, scenario_workdir, tmp_path):
    """--mode=predict: label PNGs of each image's own size, and overlays."""
    from skimage import io as skio  # pylint: disable=g-import-not-at-top
    images = tmp_path / "images"
    _write_photos(images)
    report = predictor.predict_folder(scenario_config, scenario_workdir,
                                      str(images), str(tmp_path / "pred"))
    out = report.output_dir
    assert len(report.written) == 2
    assert [os.path.basename(p) for p, _ in report.skipped] == ["notes.txt"]
    pred_a = skio.imread(os.path.join(out, "a.png"))
    assert pred_a.shape == (40, 56) and pred_a.max() < 6
    assert skio.imread(os.path.join(out, "b_overlay.png")).shape == (64, 64, 3)

  def test_predict_command_names_an_unreadable_file_and_predicts_the_rest(
      self, scenario_workdir, tiny_data_dir, tmp_path):
    """The command line: the workdir alone; an unreadable file is named, the
    rest predicted, the count printed, exit status 1."""
    images = tmp_path / "images"
    _write_photos(images)
    (images / "broken.png").write_bytes(b"\x89PNG but not really")
    proc = subprocess.run(
        [sys.executable, "-m", "coarseseg_jax.main",
         f"--workdir={scenario_workdir}", "--mode=predict",
         f"--input_dir={images}", f"--output_dir={tmp_path / 'pred2'}"],
        cwd=ROOT, env=_env(tiny_data_dir, one_device=True),
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "broken.png" in proc.stderr and "Traceback" not in proc.stderr
    assert "wrote predictions for 2 images" in proc.stdout
    assert "skipped 2 files" in proc.stdout  # broken.png and notes.txt
    assert sorted(os.listdir(tmp_path / "pred2")) == [
        "a.png", "a_overlay.png", "b.png", "b_overlay.png"]


# ------------------------------------------------------- one run each
def test_a_signal_while_the_run_is_set_up_stops_it_before_training(
    tiny_config, tmp_path, monkeypatch):
  """Between dataset preparation and the first step a signal is a stop
  request: a KeyboardInterrupt raised there was once swallowed by library
  code, and the run trained to the end (benchmarks/reliability/soak_interrupt.py)."""
  from coarseseg_jax import config_validation  # pylint: disable=g-import-not-at-top
  real = config_validation.check_dataset

  def check_dataset(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    return real(*args, **kwargs)

  monkeypatch.setattr(config_validation, "check_dataset", check_dataset)
  workdir = str(tmp_path / "w")
  with pytest.raises(errors.Interrupted) as info:
    train.train_and_evaluate(config_validation.resolve(tiny_config), workdir)
  assert info.value.exit_status == 130 and info.value.step is None
  assert "SIGINT" in str(info.value)
  assert _train_steps(workdir) == 0 and not _checkpoint_steps(workdir)
  assert not os.path.exists(os.path.join(workdir, "lock.json"))


def _stop_and_resume(config, workdir, monkeypatch, requested, step: int):
  """Trains `config` in `workdir` until the patched stop check `requested`
  stops it at `step`, then, all patches undone, to the end: (that
  checkpoint's metadata, the results, the second part's seconds)."""
  monkeypatch.setattr(interruption.StopRequest, "requested", requested)
  with pytest.raises(errors.Interrupted,
                     match=f"at step {step}: checkpoint {step}"):
    train.train_and_evaluate(config_validation.resolve(config), workdir)
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"), 2)
  meta = ckpt.read_meta(step)
  ckpt.close()
  monkeypatch.undo()
  tic = time.time()
  results = train.train_and_evaluate(config_validation.resolve(config),
                                     workdir)
  return meta, results, time.time() - tic


@pytest.mark.slow
def test_interruption_during_validation_resumes_it(tiny_config, tmp_path,
                                                   monkeypatch):
  """A stop request that cuts a validation short saves the step with the
  validation pending; the resumed run validates that step first, and its
  selection counts that validation."""
  config = tiny_config
  config.train.num_epochs = 2
  calls, steps = [], []

  def requested(self, step=None):
    if step is not None:  # The loop's check after each step.
      steps.append(step)
    elif steps and not calls:  # The evaluator's first check (the start-up
      calls.append(1)          # check comes before any step).
      self.signum = signal.SIGTERM
    return self.signum is not None

  workdir = str(tmp_path / "run")
  meta, resumed, _ = _stop_and_resume(config, workdir, monkeypatch, requested,
                                      step=2)
  assert meta["pending_validation"] == 2
  records = [json.loads(l) for l in open(os.path.join(workdir,
                                                      "metrics.jsonl"))]
  validations = [r for r in records if r["split"] == "validation"]
  assert [r["step"] for r in validations] == [2, 4]
  key = f"{config.train.select_metric}_mean"
  best = max(validations, key=lambda r: r[key])  # The first if tied.
  assert resumed["selected_step"] == best["step"]
  assert resumed["best_validation"] == pytest.approx(best[key], abs=1e-6)


@pytest.mark.slow
def test_a_resumed_run_counts_the_training_time_of_all_its_parts(
    tiny_config, tmp_path, monkeypatch):
  """results.json's train_seconds: the first part's counted seconds, saved
  with its checkpoint, plus the second part's. The first part runs on a
  clock that jumps 100 s a reading, so that losing it on resume shows."""
  config = tiny_config
  config.train.num_epochs = 2
  clock = iter(range(10**6, 10**9, 100))
  monkeypatch.setattr(train, "time",
                      types.SimpleNamespace(time=lambda: float(next(clock))))

  def requested(self, step=None):
    if step == 1:
      self.signum = signal.SIGTERM
    return self.signum is not None

  meta, resumed, second = _stop_and_resume(
      config, str(tmp_path / "run"), monkeypatch, requested, step=1)
  first = meta["train_seconds"]
  assert first >= 100
  assert first < resumed["train_seconds"] <= first + second


@pytest.mark.slow
def test_a_corrupt_newest_checkpoint_is_set_aside(tiny_data_dir, tiny_config,
                                                  tmp_path):
  config = tiny_config
  config.train.num_epochs = 2  # Checkpoints 3 and 4 kept.
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config_validation.resolve(config), workdir)
  newest = os.path.join(workdir, "checkpoints", "4")
  arrays = os.path.join(newest, "state", "ocdbt.process_0", "d")
  for name in os.listdir(arrays):  # Truncate the arrays' data files.
    data = os.path.join(arrays, name)
    with open(data, "r+b") as f:
      f.truncate(os.path.getsize(data) // 2)
  # Started again (a new process: no cache of the files) with a longer
  # schedule, it resumes from the previous checkpoint.
  env = _env(tiny_data_dir, one_device=True)  # Restored onto one device.
  command = [sys.executable, "-m", "coarseseg_jax.main",
             "--config=tests/tiny_config.py", f"--workdir={workdir}"]
  proc = subprocess.run(command + ["--config.train.num_epochs=3"], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"checkpoint {newest} does not restore" in proc.stderr
  assert "Resumed from step 3" in proc.stderr
  assert os.path.isdir(newest + ".corrupt")  # Set aside, not deleted.
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir,
                                                         "checkpoints"))
                 if d.isdigit())
  assert steps == [5, 6]
  # Nothing restores: one line naming what was set aside, status 1.
  for step in steps:
    for d, _, fs in os.walk(os.path.join(workdir, "checkpoints", str(step))):
      for f in fs:
        with open(os.path.join(d, f), "wb") as handle:
          handle.write(b"garbage")
  proc = subprocess.run(command + ["--config.train.num_epochs=4"], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 1
  error = proc.stderr.strip().splitlines()[-1]
  assert error.startswith("error: no checkpoint in ") and "5.corrupt" in error
  assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_finetune_continues_the_step_count_and_stops(tiny_config, tmp_path):
  config = tiny_config
  config.train.num_epochs = 1
  config.train.finetune = True
  config.train.finetune_max_epochs = 2
  workdir = str(tmp_path / "finetune")
  resolved = config_validation.resolve(config)
  config = resolved.config
  results = train.train_and_evaluate(resolved, workdir)
  records = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  ft_steps = sorted(r["step"] for r in records if r["split"] == "finetune")
  # Train+validation = 20 images = 2 steps per epoch, after training's 2 steps.
  assert ft_steps and ft_steps[0] == 3 and ft_steps[-1] <= 6
  assert results["selected_step"] == ft_steps[-1]
  _, meta = _params(workdir, state_lib.create_train_state(
      config, models.create_model(config.model),
      sharding.make_mesh(), config.data.crop_size))
  assert meta["phase"] == "finetune" and meta["finetune_start"] == 2


@pytest.mark.slow
def test_a_second_seed_in_one_process_reuses_the_first_runs_programs(
    tiny_config, tmp_path):
  """The experiments' runs of one method: a run whose config differs from an
  earlier one's only in the seed traces and compiles nothing (the model,
  optimizer and jitted steps are one object per config in a process), and
  still trains its own seed; another lambda is another train step."""
  config = tiny_config
  config.train.num_epochs = 1
  first = train.train_and_evaluate(config_validation.resolve(config),
                                   str(tmp_path / "seed0"))
  config.seed = 1
  with profiling.CompilationCounter() as counter:
    second = train.train_and_evaluate(config_validation.resolve(config),
                                      str(tmp_path / "seed1"))
  assert counter.count == 0 and not counter.traces, counter.traces
  assert second["test"] != first["test"]
  other = config.copy_and_resolve_references()
  other.train.lmbda = 0.1
  assert step_lib.make_train_step(other) is not step_lib.make_train_step(
      config)
  assert state_lib.create_optimizer(other.train) is (
      state_lib.create_optimizer(config.train))


@pytest.mark.slow
def test_non_finite_update_stops_without_writing_a_checkpoint(tiny_config,
                                                              tmp_path):
  config = tiny_config
  config.train.learning_rate = float("nan")
  workdir = str(tmp_path / "nan")
  with pytest.raises(errors.NonFiniteLossError, match="at step 1"):
    train.train_and_evaluate(config_validation.resolve(config), workdir)
  assert _checkpoint_steps(workdir) == []


@pytest.mark.slow  # The command line in a subprocess: ~10 s of imports.
def test_config_error_is_one_clear_line(tiny_data_dir):
  with helpers.cli_session("coarseseg_jax.main", timeout=240,
                           env=_env(tiny_data_dir, one_device=True)) as run:
    base = ["--config=tests/tiny_config.py", "--workdir=/tmp/unused"]
    proc = run(base + ["--config.data.crop_size=50"])
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert ("error: config.data.crop_size=50 must be a positive multiple of "
            "16" in proc.stderr)
    proc = run(base + ["--config.model.name=resnet"])
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "config.model" in proc.stderr and "resnet" in proc.stderr


@pytest.mark.slow
def test_training_options_profile_and_validation_pictures(tiny_config,
                                                          tmp_path):
  """Warmup-cosine, clipping and class weights train; a profile trace, the
  validation images and per-class figures land in TensorBoard."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from coarseseg_jax.datasets import synthetic  # pylint: disable=g-import-not-at-top
  config = tiny_config
  config.train.num_epochs = 3
  config.train.lr_schedule = "warmup_cosine"
  config.train.warmup_steps = 2
  config.train.grad_clip_norm = 1.0
  config.train.class_weights = (1.0, 2.0, 1.0, 1.0, 1.0, 0.5)
  config.train.profile_steps = 1
  workdir = str(tmp_path / "options")
  results = train.train_and_evaluate(config_validation.resolve(config), workdir)
  names = synthetic.class_names(6)
  assert list(results["test_per_class"]) == list(names)
  assert np.asarray(results["test_confusion"]).shape == (6, 6)
  assert results["validation"]["accuracy_mean"] == results["best_validation"]
  traces = [f for _, _, fs in os.walk(os.path.join(workdir, "tensorboard",
                                                   "profile"))
            for f in fs if f.endswith(".xplane.pb")]
  assert traces
  tags = set()
  for root, _, files in os.walk(os.path.join(workdir, "tensorboard",
                                             "validation")):
    for f in files:
      for event in tf.compat.v1.train.summary_iterator(os.path.join(root, f)):
        tags.update(v.tag for v in event.summary.value)
  assert {"sample_0", "sample_1", "sample_2"} <= tags
  assert f"iou/{names[0]}" in tags or f"iou/{names[0].replace(' ', '_')}" in tags
  records = [json.loads(l) for l in open(os.path.join(workdir,
                                                      "metrics.jsonl"))]
  train_records = [r for r in records if r["split"] == "train"]
  assert {"a4_entropy", "a8_starved_cells"} <= set(train_records[0])
  assert os.path.exists(os.path.join(workdir, "figures", "confusion.png"))
