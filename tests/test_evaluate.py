"""The evaluator and prediction on images of many sizes: few programs, each
image's own figures, label maps at each image's size."""

import os

import jax
import ml_collections
import numpy as np
from PIL import Image
import pytest

from coarseseg_jax import checkpoints
from coarseseg_jax import evaluate
from coarseseg_jax import input_pipeline
from coarseseg_jax import metrics
from coarseseg_jax import models
from coarseseg_jax import predictor
from coarseseg_jax import profiling
from coarseseg_jax import sharding
from coarseseg_jax import state as state_lib
from coarseseg_jax import train
from coarseseg_jax.configs import default

import pipeline_fixtures  # pylint: disable=g-bad-import-order


def _config(num_classes=4):
  config = default.get_config()
  m = config.model
  m.num_classes, m.stage_blocks, m.width = num_classes, (1, 1, 1), 8
  m.head_channels, m.sim_features, m.deformable = 8, 8, False
  config.data.crop_size = 64
  config.data.eval_batch_size = 8
  return config


def test_bucket_ladder():
  sides = [predictor.bucket_side(n) for n in range(1, 1100)]
  assert sorted(set(sides))[:10] == [64, 80, 96, 112, 128, 160, 192, 224, 256,
                                     320]
  for n, side in zip(range(1, 1100), sides):
    assert side >= n and side % 16 == 0
    assert n <= 64 or side <= 1.25 * n + 1e-9, (n, side)
  assert predictor.bucket_shape(109, 75) == (112, 80)


@pytest.mark.slow
def test_evaluation_of_many_sizes_builds_few_programs(tmp_path):
  builder = pipeline_fixtures.prepare(str(tmp_path))  # Test: 5 sizes.
  config = _config()
  mesh = sharding.make_mesh()
  model = models.create_model(config.model)
  state = state_lib.create_train_state(config, model, mesh, 64)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  data = ml_collections.ConfigDict({"train_labels": "coarse",
                                    "eval_center_crop": None})
  evaluator = evaluate.Evaluator(model, 4, mesh, ["a", "b", "c", "d"])
  with profiling.CompilationCounter() as programs:
    result = evaluator.run(
        variables, input_pipeline.create_eval_iterator(builder, data, "test",
                                                       8),
        full=True, num_samples=5)
  # The eval step is built once for all five sizes, the SLIC ASA's histogram
  # once per power-of-two size; per image size it would be 5 each, and more.
  assert programs.traces["eval_step"] == 1, programs.traces
  assert programs.traces["segment_asa"] <= 2, programs.traces
  assert programs.count <= 4, programs.traces
  assert result.summary["num_images"] == 5
  assert set(result.per_class) == {"a", "b", "c", "d"}
  assert result.confusion.sum() == sum(r["pixels"] for r in
                                       result.per_class.values())
  sizes = {(int(s["height"]), int(s["width"])) for s in result.samples}
  assert len(sizes) == 5
  # Each image's figures are those of the image alone, at its own size.
  for row, s in zip(result.rows, result.samples):
    h, w = int(s["height"]), int(s["width"])
    pred = s["pred"][None, :h, :w]
    fine = s["label_fine"][None, :h, :w]
    assert row["boundary_recall"] == pytest.approx(
        float(metrics.boundary_recall(pred, fine)[0]), abs=1e-6)
    assert row["boundary_f1"] == pytest.approx(
        float(metrics.boundary_precision_recall_f1(pred, fine)[2][0]),
        abs=1e-6, nan_ok=True)
    assert row["accuracy"] == pytest.approx(
        float(metrics.pixel_accuracy(pred, fine)[0]), abs=1e-6)


@pytest.mark.slow
def test_prediction_of_many_sizes_one_program_per_bucket(tmp_path):
  config = _config(num_classes=6)
  workdir = str(tmp_path / "run")
  state = state_lib.create_train_state(
      config, models.create_model(config.model), sharding.make_mesh(), 64)
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"), 1)
  ckpt.save(0, state, {})
  ckpt.close()
  images = tmp_path / "images"
  images.mkdir()
  rng = np.random.default_rng(0)
  sizes = [(h, w) for h in (50, 61, 70, 77) for w in (90, 100, 112)]  # 12
  for i, (h, w) in enumerate(sizes):
    Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(
        images / f"im{i}.png")
  (images / "broken.png").write_bytes(b"not a png")
  with profiling.CompilationCounter() as programs:
    report = predictor.predict_folder(config, workdir, str(images),
                                      str(tmp_path / "out"))
  assert len(report.written) == 12
  assert [os.path.basename(p) for p, _ in report.skipped] == ["broken.png"]
  assert set(report.buckets) == {(64, 96), (64, 112), (80, 96), (80, 112)}
  assert programs.traces["predict_labels"] == len(report.buckets)
  for i, (h, w) in enumerate(sizes):
    label = np.asarray(Image.open(tmp_path / "out" / f"im{i}.png"))
    assert label.shape == (h, w) and label.dtype == np.uint8


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
  from coarseseg_jax.datasets import items  # pylint: disable=g-import-not-at-top
  gray = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
  path = str(tmp_path / "g16.png")
  Image.fromarray(gray).save(path)
  rgb = items.read_image(path)
  assert rgb.dtype == np.uint8 and rgb.shape == (64, 64, 3)
  np.testing.assert_array_equal(rgb[..., 0],
                                np.round(gray / 257.0).astype(np.uint8))
  eight = str(tmp_path / "g8.png")
  Image.fromarray(np.round(gray / 257.0).astype(np.uint8)).save(eight)
  np.testing.assert_array_equal(items.read_image(eight), rgb)
  Image.fromarray(np.zeros((4, 4), np.float32)).save(str(tmp_path / "f.tif"))
  with pytest.raises(Exception, match="f.tif.*floating-point"):
    items.read_image(str(tmp_path / "f.tif"))
