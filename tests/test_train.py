"""End-to-end training: a tiny config on 8 fake CPU devices, kill -9, resume."""

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from coarseseg_jax import checkpoints
from coarseseg_jax import datasets
from coarseseg_jax import errors
from coarseseg_jax import inference
from coarseseg_jax import interruption
from coarseseg_jax import models
from coarseseg_jax import sharding
from coarseseg_jax import state as state_lib
from coarseseg_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(data_dir):
  spec = importlib.util.spec_from_file_location(
      "tiny_config", os.path.join(ROOT, "tests", "tiny_config.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.data.data_dir = data_dir
  return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("data"))
  config = tiny_config(path)
  datasets.prepare(config.data, config.model.num_classes)
  return path


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


def test_train_interrupted_by_kill_resumes_like_uninterrupted(data_dir,
                                                              tmp_path):
  assert jax.device_count() == 8
  config = tiny_config(data_dir)
  config.train.num_epochs = 15  # 30 steps: time to interrupt it, twice.
  config.train.checkpoint_every_steps = 100  # In process: epoch ends only.
  ref_dir = str(tmp_path / "uninterrupted")
  ref = train.train_and_evaluate(config, ref_dir)

  # The same run, started as a user would, with every step checkpointed but
  # an interval of 4 for the run interrupted by SIGTERM.
  workdir = str(tmp_path / "interrupted")
  env = dict(os.environ, COARSESEG_TEST_DATA_DIR=data_dir)
  command = [sys.executable, "-m", "coarseseg_jax.main",
             "--config=tests/tiny_config.py", f"--workdir={workdir}",
             "--config.train.num_epochs=15"]
  start = lambda *extra: subprocess.Popen(
      command + list(extra), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True)
  first = start("--config.train.checkpoint_every_steps=4")
  _wait_for(lambda: _train_steps(workdir) >= 3, first)

  # A second process on the same workdir is refused at once, naming the
  # holder; it changes nothing.
  second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
  assert second.returncode == 1, second.stderr[-2000:]
  assert f"pid {first.pid}" in second.stderr and "in use by a run" in (
      second.stderr)
  assert first.poll() is None  # Still training.

  # SIGTERM: the step in flight finishes, is saved, one line, status 143.
  first.send_signal(signal.SIGTERM)
  _, err = first.communicate(timeout=120)
  assert first.returncode == 143, err[-3000:]
  line = err.strip().splitlines()[-1]
  saved = int(re.search(r"interrupted by SIGTERM at step (\d+): checkpoint "
                        r"\1 is saved", line).group(1))
  assert saved in _checkpoint_steps(workdir)
  assert saved == max(_train_steps(workdir, all_records=True))  # None lost.
  assert not any("tmp" in d for d in os.listdir(
      os.path.join(workdir, "checkpoints")))
  assert not os.path.exists(os.path.join(workdir, "lock.json"))

  # Resumed, then killed (SIGKILL) after a later checkpoint: the lock stays.
  third = start()
  _wait_for(lambda: max(_checkpoint_steps(workdir)) >= saved + 2, third)
  third.send_signal(signal.SIGKILL)
  third.wait()
  assert os.path.exists(os.path.join(workdir, "lock.json"))
  assert not os.path.exists(os.path.join(workdir, "results.json"))

  resumed = train.train_and_evaluate(config, workdir)  # Same command again.

  # Same data in the same order -> the same final parameters and metrics.
  model_state = state_lib.create_train_state(
      config, models.create_model(config.model),
      sharding.make_mesh(), config.data.crop_size)
  p_ref, _ = _params(ref_dir, model_state)
  p_res, meta = _params(workdir, model_state)
  assert meta["phase"] == "train"
  for a, b in zip(jax.tree.leaves(p_ref), jax.tree.leaves(p_res)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  for key, value in ref["test"].items():
    assert resumed["test"][key] == pytest.approx(value, rel=1e-3, abs=1e-4), key
  assert not os.path.exists(os.path.join(workdir, "lock.json"))

  # What a run leaves behind.
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  for metric in ("accuracy", "boundary_recall", "boundary_f1", "asa", "miou",
                 "superpixel_asa", "slic_asa"):
    assert 0.0 <= results["test"][f"{metric}_mean"] <= 1.0, metric
    assert results["test"][f"{metric}_std"] >= 0.0
  assert results["test"]["num_images"] == 4
  assert results["config"]["train"]["lmbda"] == 0.05
  records = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  train_steps = [r["step"] for r in records if r["split"] == "train"]
  assert train_steps == list(range(1, 31))  # Each step once, in order.
  assert {"slic", "slic_map", "cross_entropy"} <= set(records[0])
  assert any(r["split"] == "validation" for r in records)
  events = [f for _, _, fs in os.walk(os.path.join(workdir, "tensorboard"))
            for f in fs if f.startswith("events.out.tfevents")]
  assert events
  figs = os.listdir(os.path.join(workdir, "figures"))
  assert {"sample_0.png", "sample_1.png", "curves.png"} <= set(figs)

  # --mode=eval on the best checkpoint reproduces the test figures.
  evaluated = inference.evaluate_checkpoint(config, workdir, "test")
  assert evaluated["step"] == results["selected_step"]
  for key in ("accuracy_mean", "boundary_recall_mean", "miou_dataset"):
    assert evaluated["test"][key] == pytest.approx(results["test"][key])
  assert os.path.exists(os.path.join(workdir, "eval_test.json"))

  # --mode=predict: label PNGs of each image's own size, and overlays.
  from skimage import io as skio  # pylint: disable=g-import-not-at-top
  images = tmp_path / "images"
  images.mkdir()
  rng = np.random.default_rng(0)
  skio.imsave(images / "a.png", rng.integers(0, 255, (40, 56, 3), np.uint8))
  skio.imsave(images / "b.jpg", rng.integers(0, 255, (64, 64, 3), np.uint8))
  (images / "notes.txt").write_text("not an image")
  report = inference.predict_folder(config, workdir, str(images),
                                    str(tmp_path / "pred"))
  out = report.output_dir
  assert len(report.written) == 2
  assert [os.path.basename(p) for p, _ in report.skipped] == ["notes.txt"]
  pred_a = skio.imread(os.path.join(out, "a.png"))
  assert pred_a.shape == (40, 56) and pred_a.max() < 6
  assert skio.imread(os.path.join(out, "b_overlay.png")).shape == (64, 64, 3)

  # The command line: the workdir alone; an unreadable file is named, the
  # rest predicted, the count printed, exit status 1.
  (images / "broken.png").write_bytes(b"\x89PNG but not really")
  proc = subprocess.run(
      [sys.executable, "-m", "coarseseg_jax.main", f"--workdir={workdir}",
       "--mode=predict", f"--input_dir={images}",
       f"--output_dir={tmp_path / 'pred2'}"], cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "broken.png" in proc.stderr and "Traceback" not in proc.stderr
  assert "wrote predictions for 2 images" in proc.stdout
  assert "skipped 2 files" in proc.stdout  # broken.png and notes.txt
  assert sorted(os.listdir(tmp_path / "pred2")) == [
      "a.png", "a_overlay.png", "b.png", "b_overlay.png"]


def test_a_signal_while_the_run_is_set_up_stops_it_before_training(
    data_dir, tmp_path, monkeypatch):
  """Between dataset preparation and the first step a signal is a stop
  request: a KeyboardInterrupt raised there was once swallowed by library
  code, and the run trained to the end (benchmarks/soak_interrupt.py)."""
  from coarseseg_jax import config_validation  # pylint: disable=g-import-not-at-top
  real = config_validation.check_dataset

  def check_dataset(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    return real(*args, **kwargs)

  monkeypatch.setattr(config_validation, "check_dataset", check_dataset)
  workdir = str(tmp_path / "w")
  with pytest.raises(errors.Interrupted) as info:
    train.train_and_evaluate(tiny_config(data_dir), workdir)
  assert info.value.exit_status == 130 and info.value.step is None
  assert "SIGINT" in str(info.value)
  assert _train_steps(workdir) == 0 and not _checkpoint_steps(workdir)
  assert not os.path.exists(os.path.join(workdir, "lock.json"))


def test_interruption_during_validation_resumes_it(data_dir, tmp_path,
                                                   monkeypatch):
  """A stop request that cuts a validation short saves the step with the
  validation pending; the resumed run validates that step first."""
  config = tiny_config(data_dir)
  config.train.num_epochs = 2
  ref = train.train_and_evaluate(config, str(tmp_path / "ref"))
  calls, steps = [], []

  def requested(self, step=None):
    if step is not None:  # The loop's check after each step.
      steps.append(step)
    elif steps and not calls:  # The evaluator's first check (the start-up
      calls.append(1)          # check comes before any step).
      self.signum = signal.SIGTERM
    return self.signum is not None

  monkeypatch.setattr(interruption.StopRequest, "requested", requested)
  workdir = str(tmp_path / "run")
  with pytest.raises(errors.Interrupted, match="at step 2: checkpoint 2"):
    train.train_and_evaluate(config, workdir)
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"), 2)
  assert ckpt.read_meta(2)["pending_validation"] == 2
  ckpt.close()
  monkeypatch.undo()
  resumed = train.train_and_evaluate(config, workdir)
  records = [json.loads(l) for l in open(os.path.join(workdir,
                                                      "metrics.jsonl"))]
  assert [r["step"] for r in records if r["split"] == "validation"] == [2, 4]
  assert resumed["selected_step"] == ref["selected_step"]
  assert resumed["test"]["accuracy_mean"] == pytest.approx(
      ref["test"]["accuracy_mean"], abs=1e-6)


def test_a_corrupt_newest_checkpoint_is_set_aside(data_dir, tmp_path):
  config = tiny_config(data_dir)
  config.train.num_epochs = 2  # Checkpoints 3 and 4 kept.
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  newest = os.path.join(workdir, "checkpoints", "4")
  arrays = os.path.join(newest, "state", "ocdbt.process_0", "d")
  for name in os.listdir(arrays):  # Truncate the arrays' data files.
    data = os.path.join(arrays, name)
    with open(data, "r+b") as f:
      f.truncate(os.path.getsize(data) // 2)
  # Started again (a new process: no cache of the files) with a longer
  # schedule, it resumes from the previous checkpoint.
  env = dict(os.environ, COARSESEG_TEST_DATA_DIR=data_dir)
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


def test_finetune_continues_the_step_count_and_stops(data_dir, tmp_path):
  config = tiny_config(data_dir)
  config.train.num_epochs = 1
  config.train.finetune = True
  config.train.finetune_max_epochs = 2
  workdir = str(tmp_path / "finetune")
  results = train.train_and_evaluate(config, workdir)
  records = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  ft_steps = sorted(r["step"] for r in records if r["split"] == "finetune")
  # Train+validation = 20 images = 2 steps per epoch, after training's 2 steps.
  assert ft_steps and ft_steps[0] == 3 and ft_steps[-1] <= 6
  assert results["selected_step"] == ft_steps[-1]
  _, meta = _params(workdir, state_lib.create_train_state(
      config, models.create_model(config.model),
      sharding.make_mesh(), config.data.crop_size))
  assert meta["phase"] == "finetune" and meta["finetune_start"] == 2


def test_non_finite_update_stops_without_writing_a_checkpoint(data_dir,
                                                              tmp_path):
  config = tiny_config(data_dir)
  config.train.learning_rate = float("nan")
  workdir = str(tmp_path / "nan")
  with pytest.raises(errors.NonFiniteLossError, match="at step 1"):
    train.train_and_evaluate(config, workdir)
  assert _checkpoint_steps(workdir) == []


def test_config_error_is_one_clear_line(data_dir):
  env = dict(os.environ, COARSESEG_TEST_DATA_DIR=data_dir)
  proc = subprocess.run(
      [sys.executable, "-m", "coarseseg_jax.main",
       "--config=tests/tiny_config.py", "--config.data.crop_size=50",
       "--workdir=/tmp/unused"], cwd=ROOT, env=env, capture_output=True,
      text=True, timeout=120)
  assert proc.returncode == 1
  assert "Traceback" not in proc.stderr
  assert "error: config.data.crop_size=50 must be a multiple of 16" in proc.stderr
  proc = subprocess.run(
      [sys.executable, "-m", "coarseseg_jax.main",
       "--config=tests/tiny_config.py", "--config.model.name=resnet",
       "--workdir=/tmp/unused"], cwd=ROOT, env=env, capture_output=True,
      text=True, timeout=120)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert "config.model" in proc.stderr and "resnet" in proc.stderr


def test_summary_mode_prints_parameter_table():
  proc = subprocess.run(
      [sys.executable, "-m", "coarseseg_jax.main",
       "--config=configs/synthetic.py", "--mode=summary"], cwd=ROOT,
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "Total" in proc.stdout or "total" in proc.stdout


@pytest.mark.slow
def test_training_options_profile_and_validation_pictures(data_dir, tmp_path):
  """Warmup-cosine, clipping and class weights train; a profile trace, the
  validation images and per-class figures land in TensorBoard."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from coarseseg_jax.datasets import synthetic  # pylint: disable=g-import-not-at-top
  config = tiny_config(data_dir)
  config.train.num_epochs = 3
  config.train.lr_schedule = "warmup_cosine"
  config.train.warmup_steps = 2
  config.train.grad_clip_norm = 1.0
  config.train.class_weights = (1.0, 2.0, 1.0, 1.0, 1.0, 0.5)
  config.train.profile_steps = 1
  workdir = str(tmp_path / "options")
  results = train.train_and_evaluate(config, workdir)
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
