"""TFDS builders (synthetic, folder), SLIC maps, bad input and the prepare CLI.

Datasets are tiny (64 x 64 images, a handful per split) and built in tmp
data dirs.
"""

import os
import subprocess
import sys

import ml_collections
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from coarseseg_jax import datasets
from coarseseg_jax import errors
from coarseseg_jax.datasets import annotator
from coarseseg_jax.datasets import coarse
from coarseseg_jax.datasets import folder
from coarseseg_jax.datasets import slic
from coarseseg_jax.datasets import synthetic

import helpers  # pylint: disable=g-bad-import-order

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(num_train=6, num_validation=2, num_test=2, image_size=64)
tfds.disable_progress_bar()


def data_config(data_dir, dataset="synthetic", manual_dir=None, **kwargs):
  return ml_collections.ConfigDict(dict(
      dataset=dataset, data_dir=str(data_dir), manual_dir=manual_dir and
      str(manual_dir), coarse_kernel=7, slic_block=16, slic_compactness=10.0,
      slic_sigma=1.0, builder_kwargs=kwargs))


def read_split(builder, split):
  ds = tfds.load(builder.info.full_name.rsplit("/", 1)[0], split=split,
                 data_dir=os.path.dirname(os.path.dirname(os.path.dirname(
                     builder.data_dir))))
  return {ex["id"].decode(): ex for ex in tfds.as_numpy(ds)}


def check_examples(examples, size, num_classes):
  for ex in examples.values():
    assert ex["image"].shape == (size, size, 3)
    assert ex["image"].dtype == np.uint8
    assert ex["label_fine"].shape == ex["label_coarse"].shape == (size, size, 1)
    assert ex["label_coarse"].dtype == ex["label_fine"].dtype == np.uint8
    assert ex["slic"].shape == (size, size) and ex["slic"].dtype == np.int32
    fine, coarse_label = ex["label_fine"], ex["label_coarse"]
    assert set(np.unique(fine)) <= set(range(num_classes)) | {255}
    labelled = coarse_label != 255
    assert labelled.any()
    np.testing.assert_array_equal(coarse_label[labelled], fine[labelled])
    assert slic.is_consecutive(ex["slic"])


@pytest.fixture(scope="module")
def tiny_synthetic(tmp_path_factory):
  path = tmp_path_factory.mktemp("synthetic")
  config = data_config(path, **TINY)
  builder = datasets.prepare(config, num_workers=2)  # Through the pool.
  return config, builder


# ---------------------------------------------------------------- synthetic --
@pytest.mark.slow  # Prepares a dataset.
def test_synthetic_builds_and_loads_with_tfds(tiny_synthetic):
  config, builder = tiny_synthetic
  assert datasets.is_prepared(config)
  assert builder.info.full_name.startswith(
      "coarseseg_synthetic/k7_s16_c10.0_g1.0_n6_tr6_va2_te2_px64_seed0")
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 6, "validation": 2, "test": 2}
  assert datasets.num_classes(builder) == 6
  assert datasets.class_names(builder) == synthetic.class_names(6)
  for split, n in (("train", 6), ("validation", 2), ("test", 2)):
    examples = read_split(builder, split)
    assert len(examples) == n
    check_examples(examples, 64, 6)
  stats = builder.info.metadata["coarse_stats"]["train"]
  assert 0 < stats["labelled"] < stats["pixels"] == 6 * 64 * 64


@pytest.mark.slow  # Prepares a dataset.
def test_synthetic_examples_are_the_generator_output(tiny_synthetic):
  _, builder = tiny_synthetic
  ex = read_split(builder, "validation")["validation_00001"]
  image, label = synthetic.generate(0, "validation", 1, 64, 6)
  np.testing.assert_array_equal(ex["image"], image)
  np.testing.assert_array_equal(ex["label_fine"][..., 0], label)
  np.testing.assert_array_equal(ex["label_coarse"][..., 0],
                                coarse.coarse_label(label, 7))
  np.testing.assert_array_equal(ex["slic"], slic.slic_map(image))


@pytest.mark.slow  # Prepares a dataset.
def test_worker_count_does_not_change_the_data(tiny_synthetic, tmp_path):
  _, pooled = tiny_synthetic
  inline = datasets.prepare(data_config(tmp_path, **TINY), num_workers=1)
  a, b = read_split(pooled, "train"), read_split(inline, "train")
  assert sorted(a) == sorted(b)
  for key in a:
    for feature in ("image", "label_fine", "label_coarse", "slic"):
      np.testing.assert_array_equal(a[key][feature], b[key][feature])


def test_synthetic_is_deterministic_from_the_seed():
  a = synthetic.generate(3, "train", 5, 96, 6)
  b = synthetic.generate(3, "train", 5, 96, 6)
  c = synthetic.generate(4, "train", 5, 96, 6)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[0], c[0])


def test_synthetic_classes_overlap_in_colour_but_borders_are_edges():
  data = [synthetic.generate(0, "train", i, 128, 6) for i in range(16)]
  means = np.stack([np.mean(np.concatenate(
      [im[lab == c] for im, lab in data[:10]]), axis=0) for c in range(6)])
  acc, asa = [], []
  for image, label in data[10:]:
    d = ((image[:, :, None].astype(float) - means) ** 2).sum(-1)
    acc.append(np.mean(d.argmin(-1) == label))
    seg = slic.slic_map(image)
    hist = np.zeros((seg.max() + 1, 6))
    np.add.at(hist, (seg.ravel(), label.ravel()), 1)
    asa.append(hist.max(1).sum() / label.size)
  assert len(np.unique(np.concatenate([l.ravel() for _, l in data]))) == 6
  assert np.mean(acc) < 0.7  # Colour alone does not give the class ...
  assert np.mean(asa) > 0.9  # ... but SLIC segments follow class borders.


def test_config_names_parse_back_and_parameters_cache_separately(tmp_path):
  cls = datasets.builder_class("synthetic")
  config = cls.make_config(coarse_kernel=15, slic_sigma=0.5, num_train=9)
  again = cls.parse_config_name(config.name)
  assert (again.name, again.params, again.coarse_kernel, again.slic_sigma) == (
      config.name, config.params, 15, 0.5)
  builder = tfds.builder(f"coarseseg_synthetic/{config.name}",
                         data_dir=str(tmp_path))
  assert builder.builder_config.params["num_train"] == 9
  a = datasets.get_builder(data_config(tmp_path, **TINY))
  b = datasets.get_builder(data_config(tmp_path, **dict(TINY, seed=1)))
  assert a.builder_config.name != b.builder_config.name
  with pytest.raises(errors.ConfigError, match="num_trian"):
    datasets.get_builder(data_config(tmp_path, num_trian=3))
  with pytest.raises(errors.ConfigError, match="num_classes"):
    datasets.get_builder(data_config(tmp_path, num_classes=3))
  with pytest.raises(errors.ConfigError, match="unknown"):
    datasets.builder_class("cityscapes")


def test_slic_map_ids_are_consecutive_and_sized_by_block():
  image, _ = synthetic.generate(0, "test", 0, 128, 6)
  seg = slic.slic_map(image, block=16)
  assert seg.dtype == np.int32 and slic.is_consecutive(seg)
  assert 32 <= seg.max() + 1 <= 96  # About (128 / 16) ** 2 = 64 segments.
  np.testing.assert_array_equal(seg, slic.slic_map(image, block=16))
  assert slic.slic_map(image, block=8).max() > seg.max()
  np.testing.assert_array_equal(
      slic.relabel_consecutive(np.array([[5, 9], [9, 2]])), [[1, 2], [2, 0]])


# ------------------------------------------------------------------- folder --
def write_folder(root, splits=(("train", 6), ("validation", 2), ("test", 2)),
                 with_coarse=False, classes=True, jpeg_first=True):
  """A folder dataset of synthetic 64x64 images; returns {split: [stems]}."""
  stems = {}
  for split, n in splits:
    for sub in ("images", "labels") + (("coarse",) if with_coarse else ()):
      os.makedirs(os.path.join(root, split, sub), exist_ok=True)
    for i in range(n):
      image, label = synthetic.generate(1, split, i, 64, 6)
      stem = f"{split[:2]}{i}"
      ext = ".jpg" if jpeg_first and i == 0 else ".png"
      Image.fromarray(image).save(os.path.join(root, split, "images",
                                               stem + ext))
      Image.fromarray(label).save(os.path.join(root, split, "labels",
                                               stem + ".png"))
      if with_coarse:
        Image.fromarray(coarse.coarse_label(label, 3)).save(
            os.path.join(root, split, "coarse", stem + ".png"))
      stems.setdefault(split, []).append(stem)
  if classes:
    with open(os.path.join(root, "classes.txt"), "w") as f:
      f.write("\n".join(synthetic.class_names(6)) + "\n")
  return stems


@pytest.mark.slow  # Prepares a dataset.
def test_folder_generates_coarse_labels(tmp_path):
  raw = tmp_path / "mydata"
  stems = write_folder(str(raw))
  config = data_config(tmp_path / "data", "folder", raw)
  builder = datasets.prepare(config, num_workers=1)
  assert builder.info.full_name.startswith("coarseseg_folder/mydata-")
  assert datasets.num_classes(builder) == 6
  assert datasets.class_names(builder) == synthetic.class_names(6)
  for split in ("train", "validation", "test"):
    examples = read_split(builder, split)
    assert sorted(examples) == sorted(stems[split])
    check_examples(examples, 64, 6)
  ex = read_split(builder, "test")["te1"]
  np.testing.assert_array_equal(ex["label_coarse"][..., 0], coarse.coarse_label(
      ex["label_fine"][..., 0], 7))
  assert datasets.is_prepared(config)
  # Without manual_dir, the prepared copy is found by its parameters.
  assert datasets.is_prepared(data_config(tmp_path / "data", "folder"), 6)


@pytest.mark.slow  # Prepares a dataset.
def test_folder_uses_native_coarse_labels_and_num_classes_flag(tmp_path):
  raw = tmp_path / "raw"
  write_folder(str(raw), with_coarse=True, classes=False)
  config = data_config(tmp_path / "data", "folder", raw)
  with pytest.raises(errors.DatasetError, match="number of classes"):
    datasets.prepare(config, num_workers=1)
  builder = datasets.prepare(config, num_classes=6, num_workers=1)
  assert datasets.num_classes(builder) == 6
  for key, ex in read_split(builder, "train").items():
    fine = ex["label_fine"][..., 0]
    np.testing.assert_array_equal(ex["label_coarse"][..., 0],
                                  coarse.coarse_label(fine, 3))


@pytest.mark.slow  # Prepares a dataset.
def test_folder_coarse_style_annotator(tmp_path):
  """Generated coarse labels follow data.coarse_style, seeded by the stem;
  a folder's own coarse/ labels are kept whatever the style."""
  raw = tmp_path / "mydata"
  write_folder(str(raw), splits=(("train", 3), ("validation", 1),
                                 ("test", 1)))
  config = data_config(tmp_path / "data", "folder", raw)
  config.coarse_style = "annotator"
  builder = datasets.prepare(config, num_workers=1)
  assert "_k7-annotator_s16_" in builder.info.full_name
  for stem, ex in read_split(builder, "train").items():
    fine = ex["label_fine"][..., 0]
    np.testing.assert_array_equal(
        ex["label_coarse"][..., 0], annotator.annotator_label(
            fine, 7, seed=annotator.example_seed(stem)))
  native = tmp_path / "native"
  write_folder(str(native), splits=(("train", 2), ("test", 1)),
               with_coarse=True)
  config = data_config(tmp_path / "data", "folder", native,
                       validation_fraction=0.5)
  config.coarse_style = "annotator"
  builder = datasets.prepare(config, num_workers=1)
  for ex in read_split(builder, "train").values():
    np.testing.assert_array_equal(ex["label_coarse"][..., 0],
                                  coarse.coarse_label(
                                      ex["label_fine"][..., 0], 3))


@pytest.mark.slow  # Prepares a dataset.
def test_folder_without_validation_splits_train_deterministically(tmp_path):
  raw = tmp_path / "raw"
  stems = write_folder(str(raw), splits=(("train", 10), ("test", 2)))
  builder = datasets.prepare(data_config(tmp_path / "data", "folder", raw),
                             num_workers=1)
  train, val = read_split(builder, "train"), read_split(builder, "validation")
  assert len(val) == 1 and len(train) == 9
  assert sorted(list(train) + list(val)) == sorted(stems["train"])
  items = [(s, "i", "l", None) for s in stems["train"]]
  expected = folder.split_validation(items, 0.1, 0)[1]
  assert [v[0] for v in expected] == list(val)
  other = folder.split_validation(items, 0.3, 1)
  assert other == folder.split_validation(items, 0.3, 1)
  assert len(other[1]) == 3


def test_classes_txt_and_num_classes_must_agree(tmp_path):
  raw = tmp_path / "raw"
  write_folder(str(raw), splits=(("train", 2), ("test", 1)))
  with pytest.raises(errors.DatasetError, match="classes.txt lists 6"):
    datasets.get_builder(data_config(tmp_path, "folder", raw), 8)


# ---------------------------------------------------------------- bad input --
def _break(raw, case):
  """Damages a good folder in one way; returns the file the error names."""
  label = os.path.join(raw, "train", "labels", "tr2.png")
  image = os.path.join(raw, "train", "images", "tr2.png")
  if case == "missing_label":
    os.remove(label)
    return image, "missing"
  if case == "unreadable_image":
    with open(image, "wb") as f:
      f.write(b"this is not a png")
    return image, "cannot read"
  if case == "label_size":
    Image.fromarray(np.zeros((60, 64), np.uint8)).save(label)
    return label, "differs"
  if case == "label_value":
    bad = np.asarray(Image.open(label)).copy()
    bad[3, 3] = 9
    Image.fromarray(bad).save(label)
    return label, r"\[9\] are outside 0..5"
  raise ValueError(case)


def _no_prepared_leftovers(data_dir):
  for dirpath, dirnames, _ in os.walk(data_dir):
    for d in dirnames:
      full = os.path.join(dirpath, d)
      if d.startswith("incomplete") or d.endswith(".incomplete"):
        return False, full
      if os.path.isfile(os.path.join(full, "dataset_info.json")):
        return False, full
  return True, None


@pytest.mark.slow  # Prepares a dataset.
@pytest.mark.parametrize("case", ["missing_label", "unreadable_image",
                                  "label_size", "label_value"])
def test_bad_input_stops_with_an_error_naming_the_file(tmp_path, case):
  raw = str(tmp_path / "raw")
  write_folder(raw, splits=(("train", 4), ("test", 1)), jpeg_first=False)
  path, what = _break(raw, case)
  config = data_config(tmp_path / "data", "folder", raw)
  with pytest.raises(errors.DatasetError, match=what) as info:
    datasets.prepare(config, num_workers=1)
  assert path in str(info.value)
  assert not datasets.is_prepared(config)
  ok, leftover = _no_prepared_leftovers(str(tmp_path / "data"))
  assert ok, leftover


@pytest.mark.slow  # Prepares a dataset.
def test_error_in_worker_arrives_unchanged_and_rerun_after_fix_works(tmp_path):
  raw = str(tmp_path / "raw")
  write_folder(raw, splits=(("train", 4), ("test", 1)), jpeg_first=False)
  label = os.path.join(raw, "train", "labels", "tr2.png")
  good = np.asarray(Image.open(label)).copy()
  path, what = _break(raw, "label_value")
  config = data_config(tmp_path / "data", "folder", raw)
  with pytest.raises(errors.DatasetError, match=what) as info:
    datasets.prepare(config, num_workers=2)
  assert path in str(info.value) and "Traceback" not in str(info.value)
  assert not datasets.is_prepared(config)
  # A killed run leaves a temporary directory behind; it is ignored.
  stale = tmp_path / "data" / "coarseseg_folder" / "x" / "incomplete.AB_1.0.0"
  os.makedirs(stale)
  Image.fromarray(good).save(label)  # Fixed.
  builder = datasets.prepare(config, num_workers=1)
  assert builder.is_prepared() and datasets.is_prepared(config)
  assert len(read_split(builder, "train")) == 3  # + 1 for validation.
  assert len(read_split(builder, "validation")) == 1


@pytest.mark.slow  # Prepares a dataset.
def test_missing_directory_and_missing_test_split(tmp_path):
  with pytest.raises(errors.DatasetError, match="directory not found") as info:
    datasets.prepare(data_config(tmp_path, "folder", tmp_path / "nope"), 6)
  assert str(tmp_path / "nope") in str(info.value)
  raw = str(tmp_path / "raw")
  write_folder(raw, splits=(("train", 3),))
  with pytest.raises(errors.DatasetError, match="no test/images"):
    datasets.prepare(data_config(tmp_path, "folder", raw), num_workers=1)


def test_read_label_rejects_colour_labels(tmp_path):
  path = str(tmp_path / "colour.png")
  rgb = np.zeros((8, 8, 3), np.uint8)
  rgb[..., 0] = 7
  Image.fromarray(rgb).save(path)
  with pytest.raises(errors.DatasetError, match="colour image"):
    folder.read_label(path)
  grey = np.full((8, 8, 3), 4, np.uint8)
  Image.fromarray(grey).save(path)
  np.testing.assert_array_equal(folder.read_label(path), 4)


@pytest.mark.slow  # The prepare command line, in a subprocess.
def test_cli_prints_one_line_error_without_traceback(tmp_path):
  raw = str(tmp_path / "raw")
  write_folder(raw, splits=(("train", 3), ("test", 1)), jpeg_first=False)
  path, _ = _break(raw, "label_size")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run(
      [sys.executable, "-m", "coarseseg_jax.datasets.prepare",
       "--dataset=folder", f"--manual_dir={raw}",
       f"--data_dir={tmp_path / 'data'}", "--num_workers=1",
       "--coarse_kernel=7"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and path in last and "differs" in last


@pytest.mark.slow  # The prepare command line, in a subprocess.
def test_cli_prepares_the_dataset_a_config_reads(tmp_path):
  """`prepare --config` builds exactly the dataset the config trains on;
  dataset flags beside it are refused in one line; a dataset that needs
  raw files and has none stops in one line naming the command."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
             COARSESEG_TEST_DATA_DIR=str(tmp_path / "data"))
  base = ["--config=tests/tiny_config.py", "--num_workers=1"]
  with helpers.cli_session("coarseseg_jax.datasets.prepare", env=env) as run:
    proc = run(base + ["--config.data.coarse_kernel=9"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    config = helpers.tiny_config(tmp_path / "data")
    config.data.coarse_kernel = 9
    assert datasets.is_prepared(config.data, config.model.num_classes)
    config.data.coarse_kernel = 7  # The config's own: not what was asked.
    assert not datasets.is_prepared(config.data, config.model.num_classes)
    proc = run(base + ["--dataset=suim", "--coarse_kernel=9"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: --dataset, --coarse_kernel: --config gives the dataset; pass "
        "its settings as --config.data.* overrides instead (e.g. "
        "--config.data.manual_dir=PATH).")
    proc = run(["--config=configs/suim.py",
                f"--config.data.data_dir={tmp_path / 'data'}"])
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: dataset 'suim' is not prepared in ") and (
      "--config.data.manual_dir=PATH" in last), last


def test_builder_defaults_are_the_configs_and_datasets_import_no_config():
  """The builders own their parameters' defaults; configs/default.py repeats
  them (what a run prepares when it sets none), and datasets/ reads no
  config module for them."""
  from coarseseg_jax.configs import default  # pylint: disable=g-import-not-at-top
  data = default.get_config().data
  assert {k: data[k] for k in datasets.BUILDER_DEFAULTS} == (
      datasets.BUILDER_DEFAULTS)
  assert data.data_dir == datasets.DEFAULT_DATA_DIR
  root = os.path.dirname(datasets.__file__)
  for name in sorted(os.listdir(root)):
    if name.endswith(".py"):
      with open(os.path.join(root, name)) as f:
        assert "coarseseg_jax.configs" not in f.read(), name
