"""End-to-end training: a tiny config on 8 fake CPU devices, kill -9, resume."""

import importlib.util
import json
import os
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


def _params(workdir, like_state):
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"), 2)
  state, meta = ckpt.restore(like_state)
  ckpt.close()
  return jax.device_get(state.params), meta


def test_train_interrupted_by_kill_resumes_like_uninterrupted(data_dir,
                                                              tmp_path):
  assert jax.device_count() == 8
  config = tiny_config(data_dir)
  ref_dir = str(tmp_path / "uninterrupted")
  ref = train.train_and_evaluate(config, ref_dir)

  # The same run, killed (SIGKILL) once its second step is checkpointed.
  workdir = str(tmp_path / "interrupted")
  env = dict(os.environ, COARSESEG_TEST_DATA_DIR=data_dir)
  proc = subprocess.Popen(
      [sys.executable, "-m", "coarseseg_jax.main",
       "--config=tests/tiny_config.py", f"--workdir={workdir}"],
      cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.time() + 300
  while proc.poll() is None and time.time() < deadline:
    if any(s >= 2 for s in _checkpoint_steps(workdir)):
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-3000:]
  steps_before = _checkpoint_steps(workdir)
  assert steps_before and max(steps_before) < 6, steps_before
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
  train_steps = {r["step"] for r in records if r["split"] == "train"}
  assert train_steps == set(range(1, 7))
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
    assert evaluated["summary"][key] == pytest.approx(results["test"][key])
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
