"""`--mode=refine`: the fill rule, the baselines, the figures of a refined
mask, bad input, and the README's commands on tiny data in the real formats."""

import csv
import json
import os
import re
import subprocess
import sys

import ml_collections
import numpy as np
from PIL import Image
import pytest

from coarseseg_jax import checkpoints
from coarseseg_jax import config_validation
from coarseseg_jax import datasets
from coarseseg_jax import errors
from coarseseg_jax import input_pipeline
from coarseseg_jax import metrics
from coarseseg_jax import models
from coarseseg_jax import refine
from coarseseg_jax.refine import driver as refine_driver
from coarseseg_jax.refine import figures as refine_figures
from coarseseg_jax.refine import fills
from coarseseg_jax.refine import inputs as refine_inputs
from coarseseg_jax.refine import scores
from coarseseg_jax import sharding
from coarseseg_jax import state as state_lib
from coarseseg_jax import workdir as workdir_lib
from coarseseg_jax.datasets import coarse as coarse_lib
from coarseseg_jax.datasets import synthetic

import helpers  # pylint: disable=g-bad-import-order

ROOT = helpers.ROOT
U = 255


# ------------------------------------------------------------ pure functions
def test_fill_rule_keeps_labels_and_thresholds_confidence():
  coarse = np.array([[0, U, U], [U, 2, U]])
  pred = np.array([[1, 1, 3], [4, 5, 0]])
  conf = np.array([[0.1, 0.5, 0.49], [0.9, 0.0, 0.2]])
  np.testing.assert_array_equal(fills.fill_with_model(coarse, pred, conf),
                                [[0, 1, 3], [4, 2, 0]])
  got = fills.fill_with_model(coarse, pred, conf, min_confidence=0.5)
  np.testing.assert_array_equal(got, [[0, 1, U], [4, 2, U]])
  assert got.dtype == np.uint8
  np.testing.assert_array_equal(
      fills.fill_with_model(coarse, pred, conf, min_confidence=1.0),
      coarse)


def test_nearest_labelled_by_hand_and_by_brute_force():
  coarse = np.array([[0, U, U, U, U, 1, U],
                     [U, U, U, U, U, U, U],
                     [U, U, U, U, U, U, 2]])
  np.testing.assert_array_equal(fills.nearest_labelled(coarse),
                                [[0, 0, 0, 1, 1, 1, 1],
                                 [0, 0, 0, 1, 1, 1, 2],
                                 [0, 0, 0, 1, 2, 2, 2]])
  rng = np.random.default_rng(0)
  for _ in range(5):
    label = rng.integers(0, 4, (13, 17))
    label[rng.random(label.shape) < 0.85] = U
    got = fills.nearest_labelled(label)
    ys, xs = np.nonzero(label != U)
    for y, x in zip(*np.nonzero(label == U)):
      d = (ys - y) ** 2 + (xs - x) ** 2
      nearest = label[ys[d == d.min()], xs[d == d.min()]]
      assert got[y, x] in nearest, (y, x)
    np.testing.assert_array_equal(got[label != U], label[label != U])
  empty = np.full((3, 4), U)
  np.testing.assert_array_equal(fills.nearest_labelled(empty), empty)


@pytest.mark.parametrize("seed", range(3))
def test_slic_propagation_is_the_training_labels_propagation(seed):
  rng = np.random.default_rng(seed)
  slic = rng.integers(0, 12, (24, 31)).astype(np.int32)
  label = rng.integers(0, 5, (24, 31)).astype(np.int32)
  label[rng.random(label.shape) < 0.7] = U
  np.testing.assert_array_equal(
      fills.slic_propagation(label, slic),
      helpers.propagate_reference(label, slic))


def _blocks(seed, h=40, w=48):
  """A fine label of 8x8 blocks of 3 classes and its coarse label (the
  blocks' 4x4 interiors)."""
  rng = np.random.default_rng(seed)
  fine = rng.integers(0, 3, (h // 8, w // 8)).repeat(8, 0).repeat(8, 1)
  rows, cols = np.mgrid[:h, :w]
  inner = (rows % 8 >= 2) & (rows % 8 < 6) & (cols % 8 >= 2) & (cols % 8 < 6)
  return fine, np.where(inner, fine, U)


@pytest.mark.slow  # 12 s on 2 cores (compiles or runs more).
def test_mask_metrics_of_perfect_wrong_and_partial_masks():
  fine, coarse = _blocks(0)
  band = coarse == U
  wrong = np.where(band, (fine + 1) % 3, fine)
  partial = np.where(band & (np.arange(fine.shape[1]) < 24), fine, coarse)
  stack = np.stack([fine, wrong, partial])
  got = scores.mask_metrics(stack, np.stack([coarse] * 3),
                            np.stack([fine] * 3), num_classes=3)
  np.testing.assert_allclose(got["band_accuracy"], [1.0, 0.0, 1.0])
  filled = (band & (partial != U)).sum()
  np.testing.assert_allclose(got["band_correct"],
                             [1.0, 0.0, filled / band.sum()], rtol=1e-6)
  assert got["boundary_f1"][0] == 1.0 and got["boundary_f1"][1] < 1.0
  # The project's functions on the same maps, nothing of its own.
  np.testing.assert_allclose(
      got["boundary_recall"], metrics.boundary_recall(stack,
                                                      np.stack([fine] * 3)))
  cm = np.asarray(got["band_confusion"])
  assert cm[0].trace() == band.sum() and cm[1].trace() == 0
  assert cm[2].sum() == filled
  # Per class: the binary map of class c; with all three classes present
  # every image holds c and another class.
  assert np.asarray(got["class_present"]).all()
  np.testing.assert_allclose(got["class_boundary_f1"][0], 1.0)
  one = np.where(stack == U, U, (stack == 1).astype(int))
  np.testing.assert_allclose(
      got["class_boundary_recall"][:, 1],
      metrics.boundary_recall(one, np.stack([(fine == 1).astype(int)] * 3)))


@pytest.mark.slow  # 19 s on 2 cores (compiles or runs more).
def test_mask_metrics_in_a_padded_canvas_equal_those_at_the_image_size():
  fine, coarse = _blocks(1, 40, 48)
  refined = fills.nearest_labelled(coarse)
  pad = lambda x: np.pad(x, ((0, 24), (0, 16)), constant_values=U)[None]
  alone = scores.mask_metrics(refined[None], coarse[None], fine[None], 3)
  canvas = scores.mask_metrics(pad(refined), pad(coarse), pad(fine), 3,
                               size=np.array([[40, 48]]))
  for key, value in alone.items():
    np.testing.assert_allclose(np.asarray(canvas[key], np.float64),
                               np.asarray(value, np.float64), err_msg=key)


def test_safe_stems():
  assert refine_inputs.safe_stem("aachen/aachen_000000 x") == "aachen_aachen_000000_x"
  assert refine_inputs.safe_stem("../..") == "example"


# --------------------------------------------------------------- bad input
def _write_pair(images, coarse_dir, stem, size, coarse_size=None, ext="png",
                num_classes=6, seed=0):
  image, fine = synthetic.generate(seed, "test", 0, max(size), num_classes)
  h, w = size
  os.makedirs(images, exist_ok=True)
  os.makedirs(coarse_dir, exist_ok=True)
  Image.fromarray(image[:h, :w]).save(os.path.join(images, f"{stem}.{ext}"))
  ch, cw = coarse_size or size
  coarse = coarse_lib.coarse_label(np.ascontiguousarray(fine[:ch, :cw]), 7)
  Image.fromarray(coarse).save(os.path.join(coarse_dir, f"{stem}.png"))
  return image[:h, :w], coarse


@pytest.mark.parametrize("case, pattern", [
    ("size", r"b\.png: coarse label size 40x50 \(WxH\) differs"),
    ("no_coarse", r"c\.jpg: no coarse label c\.png in"),
    ("no_image", r"d\.png: no image named d\.\* in"),
    ("classes", r"b\.png: coarse label values \[7\] are outside 0\.\.5"),
    ("duplicate", r"a\.(png|jpg): another file has the stem 'a'"),
])
def test_bad_folders_name_the_file(tmp_path, case, pattern):
  images, coarse = str(tmp_path / "images"), str(tmp_path / "coarse")
  _write_pair(images, coarse, "a", (48, 40))
  _write_pair(images, coarse, "b", (40, 50),
              coarse_size=(50, 40) if case == "size" else None)
  if case == "no_coarse":
    Image.new("RGB", (8, 8)).save(os.path.join(images, "c.jpg"))
  elif case == "no_image":
    Image.new("L", (8, 8)).save(os.path.join(coarse, "d.png"))
  elif case == "classes":
    label = np.asarray(Image.open(os.path.join(coarse, "b.png"))).copy()
    label[0, 0] = 7
    Image.fromarray(label).save(os.path.join(coarse, "b.png"))
  elif case == "duplicate":
    Image.new("RGB", (48, 40)).save(os.path.join(images, "a.jpg"))
  with pytest.raises(errors.DatasetError, match=pattern):
    refine_inputs.folder_pairs(images, coarse, num_classes=6)


def _env():
  return dict(os.environ, XLA_FLAGS="", PYTHONUNBUFFERED="1")


@pytest.mark.slow  # 13 s on 2 cores (compiles or runs more).
def test_bad_input_names_every_problem_and_writes_nothing(tmp_path):
  """Through the command line: exit status 1, one line `error: <file>: ...`
  per problem (three here, all named in one run), no output folder and
  nothing beside it."""
  config = helpers.tiny_config(str(tmp_path / "data"))
  workdir = str(tmp_path / "wd")
  workdir_lib.record_config(workdir, config)
  images, coarse = str(tmp_path / "images"), str(tmp_path / "coarse")
  _write_pair(images, coarse, "a", (48, 40), coarse_size=(40, 48))
  _write_pair(images, coarse, "b", (48, 40))  # Fine.
  Image.new("RGB", (8, 8)).save(os.path.join(images, "c.jpg"))
  Image.new("L", (8, 8)).save(os.path.join(coarse, "d.png"))
  out = tmp_path / "out" / "refined"
  proc = subprocess.run(
      [sys.executable, "-m", "coarseseg_jax.main", f"--workdir={workdir}",
       "--mode=refine", f"--input_dir={images}", f"--coarse_dir={coarse}",
       f"--output_dir={out}"], cwd=ROOT, env=_env(), capture_output=True,
      text=True, timeout=300)
  assert proc.returncode == 1, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.strip().splitlines()
           if l.startswith("error: ")]
  assert len(lines) == 3, proc.stderr[-2000:]
  wanted = [rf"error: {re.escape(coarse)}/d\.png: no image named d\.\* in",
            rf"error: {re.escape(coarse)}/a\.png: coarse label size",
            rf"error: {re.escape(images)}/c\.jpg: no coarse label c\.png in"]
  for line, pattern in zip(lines, wanted):
    assert re.match(pattern, line), (line, pattern)
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "out").exists()


# ------------------------------------------- a tiny workdir, in-process runs
@pytest.fixture(scope="module")
def untrained(shared_tmp_path, tiny_data_dir):
  """(config, workdir): the tiny synthetic data prepared (conftest's
  tiny_data_dir), config.json and a checkpoint of the initial model (refine
  reads nothing else); the workdir is made once per test run."""
  config = helpers.tiny_config(tiny_data_dir)
  config = config_validation.resolve(config, "split").config

  def make(tmp):
    workdir = str(tmp / "wd")
    workdir_lib.record_config(workdir, config)
    state = state_lib.create_train_state(
        config, models.create_model(config.model), sharding.make_mesh(), 64)
    ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"), 1)
    ckpt.save(0, state, {})
    ckpt.close()
    return workdir
  return config, helpers.run_once(shared_tmp_path, "refine_untrained", make)


def _split(config, split):
  count, examples, _ = refine_inputs.split_examples(
      config_validation.resolve(config, "split"), split)
  examples = list(examples)
  assert len(examples) == count
  return {ex.stem: ex for ex in examples}


@pytest.mark.slow  # Uses the tiny dataset (built once per run).
def test_refine_a_split_keeps_labels_and_reports_what_it_did(untrained,
                                                             tmp_path):
  config, workdir = untrained
  out = tmp_path / "out"
  out.mkdir()
  (out / "mine.txt").write_text("kept")  # An existing folder gains files.
  report = refine_driver.run(config_validation.resolve(config, "split"), workdir, str(out), split="validation")
  examples = _split(config, "validation")
  assert report["num_images"] == len(examples) == 4
  pixels = labelled = 0
  for stem, ex in examples.items():
    label = np.asarray(Image.open(out / f"{stem}.png"))
    assert label.shape == ex.coarse.shape and label.dtype == np.uint8
    known = ex.coarse != U
    np.testing.assert_array_equal(label[known], ex.coarse[known])
    assert (label < 6).all()  # min_confidence 0 fills everything.
    overlay = np.asarray(Image.open(out / f"{stem}_overlay.png"))
    assert overlay.shape == ex.coarse.shape + (3,)
    pixels, labelled = pixels + known.size, labelled + known.sum()
  assert (out / "mine.txt").read_text() == "kept"
  assert report["labelled_share"] == pytest.approx(labelled / pixels)
  for name, m in report["methods"].items():
    assert report["labelled_share"] + m["filled_share"] + m["left_share"] == (
        pytest.approx(1.0)), name
    assert 0 <= m["band_accuracy"] <= 1 and 0 <= m["boundary_f1_mean"] <= 1
    assert set(m["per_class"]) == set(report["class_names"])
  assert report["methods"]["model"]["left_share"] == 0
  assert report["methods"]["nearest_labelled"]["left_share"] == 0
  with open(out / "refine_validation.json") as f:
    assert json.load(f)["methods"] == report["methods"]
  with open(out / "refine_validation.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert sorted(r["stem"] for r in rows) == sorted(examples)
  row = rows[0]
  ex = examples[row["stem"]]
  slic = fills.slic_propagation(ex.coarse, ex.slic)
  band = ex.coarse == U
  assert float(row["slic_propagation_filled_share"]) == pytest.approx(
      (band & (slic != U)).sum() / band.size)
  assert float(row["slic_propagation_band_accuracy"]) == pytest.approx(
      (slic == ex.fine)[band & (slic != U)].mean())
  assert report["line"].startswith("refined 4 images (validation)")
  assert not [p for p in os.listdir(tmp_path) if ".partial-" in p]
  # auto wrote the fill of the best coarse-only score, and every fill.
  chosen = report["chosen"]["method"]
  held_out = report["coarse_only"]["methods"]
  assert set(held_out) == set(refine_driver.METHODS)
  best = max(v["band_correct"] for v in held_out.values())
  assert held_out[chosen]["band_correct"] >= best - scores.AUTO_TOLERANCE
  assert all(held_out[m]["band_correct"] < best - scores.AUTO_TOLERANCE
             for m in refine_driver.METHODS[:refine_driver.METHODS.index(
                 chosen)])
  assert chosen in report["line"] and report["chosen"]["refine_method"] == "auto"
  for stem in examples:
    for m in refine_driver.METHODS:
      assert (out / "fills" / m / f"{stem}.png").exists(), (m, stem)
    np.testing.assert_array_equal(
        np.asarray(Image.open(out / f"{stem}.png")),
        np.asarray(Image.open(out / "fills" / chosen / f"{stem}.png")))


@pytest.mark.slow  # Uses the tiny dataset (built once per run).
def test_min_confidence_one_leaves_the_band_unlabelled(untrained, tmp_path):
  config, workdir = untrained
  out = tmp_path / "out"
  report = refine_driver.run(config_validation.resolve(config, "split"), workdir, str(out), split="test",
                             min_confidence=1.0, method="model")
  for stem, ex in _split(config, "test").items():
    np.testing.assert_array_equal(np.asarray(Image.open(out / f"{stem}.png")),
                                  ex.coarse)
  model = report["methods"]["model"]
  assert model["filled_share"] == 0
  assert model["left_share"] == pytest.approx(1 - report["labelled_share"])


@pytest.mark.slow  # Uses the tiny dataset (built once per run).
def test_an_error_after_the_start_leaves_no_output(untrained, tmp_path):
  config, _ = untrained
  empty = tmp_path / "empty_workdir"
  workdir_lib.record_config(str(empty), config)
  with pytest.raises(errors.CheckpointError):
    refine_driver.run(config_validation.resolve(config, "split"), str(empty), str(tmp_path / "out"), split="test")
  assert sorted(os.listdir(tmp_path)) == ["empty_workdir"]
  with pytest.raises(errors.DatasetError, match="no split 'tset'"):
    refine_driver.run(config_validation.resolve(config, "split"), str(empty), str(tmp_path / "out"), split="tset")


# ------------------------------------- self-training on refined labels
def _refined_config(config, refined_dir, **data):
  config = ml_collections.ConfigDict(config.to_dict())
  config.data.train_labels, config.data.refined_dir = "refined", refined_dir
  config.data.update(data)
  return config


@pytest.mark.slow  # Uses the tiny dataset (built once per run).
def test_training_reads_the_refined_labels_and_records_their_source(
    untrained, tmp_path):
  """train_labels=refined: config.json's refined_from names the refining
  workdir and step; every training label is one of the refined PNGs (no
  augmentation here), so none keeps the coarse band."""
  config, workdir = untrained
  out = str(tmp_path / "refined")
  chosen = refine_driver.run(config_validation.resolve(config, "split"), workdir, out, split="train")["chosen"]
  second = _refined_config(config, out, scale_range=(1.0, 1.0), hflip=False)
  second = config_validation.resolve(second).config
  assert second.data.refined_from == (
      f"{workdir} step 0 min_confidence 0.0 fill {chosen['method']}")
  builder = datasets.get_builder(second.data, second.model.num_classes)
  config_validation.check_dataset(second, builder)
  refined = [np.asarray(Image.open(os.path.join(out, f)))
             for f in sorted(os.listdir(out))
             if f.endswith(".png") and not f.endswith("_overlay.png")]
  assert len(refined) == 16 and all((r != U).all() for r in refined)
  plain = ml_collections.ConfigDict(second.data.to_dict())
  plain.update(train_labels="coarse", refined_dir="")
  coarse_it = input_pipeline.create_train_iterator(
      builder, plain, 8, seed=0, process_index=0, process_count=1)
  refined_it = input_pipeline.create_train_iterator(
      builder, second.data, 8, seed=0, process_index=0, process_count=1)
  for _ in range(2):
    coarse_batch, batch = next(coarse_it), next(refined_it)
    assert (coarse_batch["label"] == U).any() and not (batch["label"] == U).any()
    for label, coarse in zip(batch["label"], coarse_batch["label"]):
      assert any(np.array_equal(label, r) for r in refined)
      known = coarse != U  # The same example: coarse labels kept.
      np.testing.assert_array_equal(label[known], coarse[known])
    np.testing.assert_array_equal(batch["label_fine"],
                                  coarse_batch["label_fine"])
  # config.json records the source, and a resumed run must match it.
  wd = str(tmp_path / "second")
  workdir_lib.record_config(wd, second)
  with open(os.path.join(wd, "config.json")) as f:
    assert json.load(f)["data"]["refined_from"] == second.data.refined_from
  # refined_fill=best_free: the free fill the report's coarse-only scores
  # rank first, read from fills/<it>/, named where the config records it.
  free = _refined_config(config, out, scale_range=(1.0, 1.0), hflip=False)
  free.data.refined_fill = "best_free"
  free = config_validation.resolve(free).config
  with open(os.path.join(out, "refine_train.json")) as f:
    ranked = json.load(f)["coarse_only"]["methods"]
  best = scores.choose(ranked, among=refine.FREE_FILLS)[0]
  assert free.data.refined_fill == best
  assert free.data.refined_from.endswith(f" fill {best}")
  fill_dir = os.path.join(out, "fills", best)
  filled = [np.asarray(Image.open(os.path.join(fill_dir, f)))
            for f in sorted(os.listdir(fill_dir))]
  config_validation.check_dataset(free, builder)
  batch = next(input_pipeline.create_train_iterator(
      builder, free.data, 8, seed=0, process_index=0, process_count=1))
  for label in batch["label"]:
    assert any(np.array_equal(label, r) for r in filled)
  wrong = _refined_config(config, out, refined_fill="slic")
  with pytest.raises(errors.ConfigError, match="refined_fill='slic': use"):
    config_validation.resolve(wrong)
  wrong.data.update(train_labels="coarse", refined_dir="")
  with pytest.raises(errors.ConfigError, match="refined_fill='slic' is read "
                     "only with config.data.train_labels='refined'"):
    config_validation.resolve(wrong)


@pytest.mark.slow  # Uses the tiny dataset (built once per run).
def test_readme_table_and_figure_of_refine_runs(untrained, tmp_path):
  """`python -m coarseseg_jax.refine.figures` (in process): the table of two
  refine runs (min_confidence 0 and 0.5), its JSON and the figure."""
  config, workdir = untrained
  runs = []
  for i, confidence in enumerate((0.0, 0.5)):
    runs.append(str(tmp_path / f"r{i}"))
    refine_driver.run(config_validation.resolve(config, "split"), workdir, runs[-1], split="validation",
               min_confidence=confidence)
  out = str(tmp_path / "table")
  refine_figures.write(workdir, runs, "validation", out, num_figure_images=2)
  with open(out + ".json") as f:
    table = json.load(f)
  labels = [r["method"] for r in table["rows"]]
  assert len(labels) == len(refine_driver.METHODS) + 1, labels
  assert sum(l.startswith("model (") for l in labels) == 2, labels
  assert set(table["per_class"]) == set(refine_driver.METHODS)
  text = open(out + ".md").read()
  assert text.count("\n| ") >= 4 and "Per class" in text
  image = np.asarray(Image.open(out + ".png"))
  assert image.ndim == 3 and image.shape[1] > 600


@pytest.mark.slow  # Uses the tiny dataset (built once per run).
def test_refined_labels_bad_input_is_one_line(untrained, tmp_path):
  config, workdir = untrained
  with pytest.raises(errors.ConfigError, match="needs config.data.refined_dir"):
    config_validation.resolve(_refined_config(config, ""))
  missing = str(tmp_path / "nothing")
  with pytest.raises(errors.ConfigError,
                     match=r"refine_train\.json: not found.*--mode=refine "
                     r"--split=train"):
    config_validation.resolve(_refined_config(config, missing))
  coarse = ml_collections.ConfigDict(config.to_dict())
  coarse.data.refined_dir = missing
  with pytest.raises(errors.ConfigError, match="read only with"):
    config_validation.resolve(coarse)
  # A report of another split, and a train split with an image missing.
  out = str(tmp_path / "val")
  refine_driver.run(config_validation.resolve(config, "split"), workdir, out, split="validation")
  os.rename(os.path.join(out, "refine_validation.json"),
            os.path.join(out, "refine_train.json"))
  with pytest.raises(errors.ConfigError, match="refines synthetic/validation"):
    config_validation.resolve(_refined_config(config, out))
  out = str(tmp_path / "train")
  refine_driver.run(config_validation.resolve(config, "split"), workdir, out, split="train")
  path = os.path.join(out, "refine_train.csv")
  with open(path) as f:
    lines = f.readlines()
  with open(path, "w") as f:
    f.writelines(lines[:-1])
  second = config_validation.resolve(_refined_config(config, out)).config
  builder = datasets.get_builder(second.data, second.model.num_classes)
  with pytest.raises(errors.DatasetError, match="no refined label for example"):
    config_validation.check_dataset(second, builder)


# ------------------------------------------------- the README, as written
def _readme_refine_commands():
  return [c for c in helpers.readme_commands("README.md")
          if "--mode=refine" in c]


@pytest.mark.slow
def test_readme_refine_commands(tmp_path, tiny_data_dir):
  """Both README forms on a tiny trained workdir: a prepared split, and
  photos of odd sizes (PNG, JPEG) with coarse PNGs. The training and the
  two commands run in one process (`helpers.cli_session`)."""
  commands = _readme_refine_commands()
  assert len(commands) == 2 and any("--coarse_dir" in c for c in commands)
  tmp = str(tmp_path)
  env = dict(_env(), COARSESEG_TEST_DATA_DIR=str(tiny_data_dir))
  photos = {}
  for i, (size, ext) in enumerate([((70, 53), "png"), ((64, 64), "jpg"),
                                   ((41, 90), "png")]):
    photos[f"photo{i}"] = _write_pair(f"{tmp}/my_images", f"{tmp}/my_coarse",
                                      f"photo{i}", size, ext=ext, seed=i)[1]
  for i, command in enumerate(commands):
    for old, new in [("=workdirs/", f"={tmp}/workdirs/"),
                     ("=my_images", f"={tmp}/my_images"),
                     ("=my_coarse", f"={tmp}/my_coarse")]:
      command = command.replace(old, new)
    commands[i] = command
    assert command.split()[:3] == ["python", "-m", "coarseseg_jax.main"], (
        command)
  with helpers.cli_session("coarseseg_jax.main", timeout=900,
                           env=env) as run:
    train = run(["--config=tests/tiny_config.py",
                 f"--workdir={tmp}/workdirs/syn", "--config.train.max_steps=1"])
    assert train.returncode == 0, train.stderr[-3000:]
    runs = [run(c.split()[3:]) for c in commands]
  for command, proc in zip(commands, runs):
    assert proc.returncode == 0, (command, proc.stderr[-3000:])
    out = re.search(r"--output_dir=(\S+)", command).group(1)
    assert proc.stdout.strip().startswith("refined "), proc.stdout
    if "--coarse_dir" in command:
      with open(f"{out}/refine_folder.json") as f:
        report = json.load(f)
      assert report["num_images"] == 3 and not report["fine_labels"]
      left = total = 0
      for stem, coarse in photos.items():
        label = np.asarray(Image.open(f"{out}/{stem}.png"))
        assert label.shape == coarse.shape
        np.testing.assert_array_equal(label[coarse != U], coarse[coarse != U])
        left, total = left + (label == U).sum(), total + label.size
      written = report["methods"][report["chosen"]["method"]]
      assert written["left_share"] == pytest.approx(left / total)
    else:
      split = re.search(r"--split=(\w+)", command).group(1)
      config = workdir_lib.config_from_json(
          workdir_lib.load_config(f"{tmp}/workdirs/syn"))
      examples = _split(config, split)
      with open(f"{out}/refine_{split}.json") as f:
        report = json.load(f)
      assert report["num_images"] == len(examples) and report["fine_labels"]
      for stem, ex in examples.items():
        label = np.asarray(Image.open(f"{out}/{stem}.png"))
        known = ex.coarse != U
        np.testing.assert_array_equal(label[known], ex.coarse[known])


@pytest.mark.slow  # 23 s on 2 cores (compiles or runs more).
def test_figures_command_line_errors_are_one_line(tmp_path):
  """`python -m coarseseg_jax.refine.figures` runs on the one CLI runner: a
  missing flag is a usage line (2), a folder without a report one line (1)."""
  base = [sys.executable, "-m", "coarseseg_jax.refine.figures"]
  usage = subprocess.run(base + [f"--workdir={tmp_path}"], cwd=ROOT,
                         env=_env(), capture_output=True, text=True,
                         timeout=300)
  assert usage.returncode == 2, usage.stderr[-2000:]
  assert "Traceback" not in usage.stderr
  missing = subprocess.run(
      base + [f"--workdir={tmp_path}", f"--refined={tmp_path}",
              f"--out={tmp_path}/table"], cwd=ROOT, env=_env(),
      capture_output=True, text=True, timeout=300)
  assert missing.returncode == 1, missing.stderr[-2000:]
  last = missing.stderr.strip().splitlines()[-1]
  assert re.match(rf"error: {re.escape(str(tmp_path))}/refine_validation"
                  r"\.json: no refine report", last), last
  assert "Traceback" not in missing.stderr
  assert not list(tmp_path.iterdir())
