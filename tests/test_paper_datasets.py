"""The paper's datasets (suim, pannuke, cityscapes_coarse) from tiny copies in
their exact on-disk formats (`paper_fixtures.py`): built end to end, read back
with `tfds.load`, and stopped by bad input with one error naming the file.
"""

import io
import os
import shutil

import ml_collections
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

import helpers
import paper_fixtures as pf
from coarseseg_jax import datasets
from coarseseg_jax import errors
from coarseseg_jax.datasets import cityscapes
from coarseseg_jax.datasets import items as items_lib
from coarseseg_jax.datasets import pannuke
from coarseseg_jax.datasets import slic
from coarseseg_jax.datasets import suim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MISMATCHED = "f_r_13_"
CS_SIZE = dict(image_width=64, image_height=32)
tfds.disable_progress_bar()


def data_config(data_dir, dataset, manual_dir, **kwargs):
  return ml_collections.ConfigDict(dict(
      dataset=dataset, data_dir=str(data_dir), manual_dir=str(manual_dir),
      coarse_kernel=7, slic_block=16, slic_compactness=10.0, slic_sigma=1.0,
      builder_kwargs=kwargs))


def read_split(builder, split):
  name = builder.info.full_name.rsplit("/", 1)[0]
  data_dir = os.path.dirname(os.path.dirname(os.path.dirname(
      builder.data_dir)))
  ds = tfds.load(name, split=split, data_dir=data_dir)
  return {ex["id"].decode(): ex for ex in tfds.as_numpy(ds)}


def check_example(ex, num_classes):
  """Shapes, value ranges, coarse never contradicting fine, SLIC ids."""
  h, w = ex["image"].shape[:2]
  assert ex["image"].dtype == np.uint8 and ex["image"].shape[-1] == 3
  assert ex["label_fine"].shape == ex["label_coarse"].shape == (h, w, 1)
  fine, coarse_label = ex["label_fine"][..., 0], ex["label_coarse"][..., 0]
  assert set(np.unique(fine).tolist()) <= set(range(num_classes)) | {255}
  labelled = (coarse_label != 255) & (fine != 255)
  np.testing.assert_array_equal(coarse_label[labelled], fine[labelled])
  assert ex["slic"].shape == (h, w) and slic.is_consecutive(ex["slic"])


def assert_stops(config, path, what):
  """Preparing `config` raises one DatasetError naming `path`; no leftovers."""
  with pytest.raises(errors.DatasetError, match=what) as info:
    datasets.prepare(config, num_workers=1)
  assert path in str(info.value)
  assert not datasets.is_prepared(config)
  for dirpath, dirnames, _ in os.walk(config.data_dir):
    for d in dirnames:
      assert "incomplete" not in d, os.path.join(dirpath, d)
      assert not os.path.isfile(os.path.join(dirpath, d, "dataset_info.json"))


@pytest.fixture(scope="module")
def suim_raw(tmp_path_factory):
  root = tmp_path_factory.mktemp("suim_raw")
  return root, pf.write_suim(str(root), mismatched=(MISMATCHED,))


@pytest.fixture(scope="module")
def pannuke_raw(tmp_path_factory):
  root = tmp_path_factory.mktemp("pannuke_raw")
  return root, pf.write_pannuke(str(root))


@pytest.fixture(scope="module")
def cityscapes_raw(tmp_path_factory):
  root = tmp_path_factory.mktemp("cityscapes_raw")
  return root, pf.write_cityscapes(str(root), extra=True)


# ------------------------------------------------------------------- SUIM --
def test_suim_colour_codes_are_thresholded_at_128():
  mask = np.array([[[0, 0, 255], [127, 128, 0], [255, 255, 255]],
                   [[130, 20, 140], [200, 190, 30], [100, 127, 90]]], np.uint8)
  np.testing.assert_array_equal(suim.mask_to_label(mask),
                                [[1, 2, 7], [5, 6, 0]])
  codes = np.arange(8, dtype=np.uint8)
  np.testing.assert_array_equal(suim.mask_to_label(suim.label_to_mask(codes)),
                                codes)
  assert [suim.CLASS_NAMES[i] for i in (0, 3, 6)] == [
      "background/waterbody", "wrecks/ruins", "fish/vertebrates"]


@pytest.mark.slow  # Builds the dataset in a subprocess.
def test_suim_cli_builds_it_and_tfds_reads_it_back(suim_raw, tmp_path):
  raw, truth = suim_raw
  mask_file = os.path.join(str(raw), "train_val", "masks", MISMATCHED + ".bmp")
  args = ["--num_workers=1", "--coarse_kernel=7", "--dataset=suim",
          f"--manual_dir={raw}", f"--data_dir={tmp_path}",
          "--builder_kwargs=resize=0.5,num_validation=2"]
  with helpers.cli_session("coarseseg_jax.datasets.prepare", env=dict(
      os.environ, TF_CPP_MIN_LOG_LEVEL="3")) as run:
    proc = run(args + ["--on_size_mismatch=error"])
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {mask_file}: mask size 144x96"), last
    proc = run(args + ["--on_size_mismatch=resize"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert mask_file in proc.stderr and "differs" in proc.stderr  # The warning.
  assert "1 masks differed in size" in proc.stdout
  config = data_config(tmp_path, "suim", raw, resize=0.5, num_validation=2,
                       on_size_mismatch="resize")
  builder = datasets.get_builder(config)
  assert builder.is_prepared()
  assert builder.info.metadata["size_mismatches"]["files"] == [mask_file]
  train, val = read_split(builder, "train"), read_split(builder, "validation")
  test = read_split(builder, "test")
  assert (len(train), len(val), len(test)) == (6, 2, 2)
  assert sorted(list(train) + list(val)) == sorted(truth["train_val"])
  assert sorted(test) == sorted(truth["TEST"])
  for split, examples in (("train_val", {**train, **val}), ("TEST", test)):
    for stem, ex in examples.items():
      check_example(ex, 8)
      assert ex["image"].shape == (32, 48, 3)  # 96 x 64 halved.
      expected = truth[split][stem][0][1::2, 1::2]  # Nearest neighbour.
      agree = np.mean(ex["label_fine"][..., 0] == expected)
      assert agree == 1.0 or (stem == MISMATCHED and agree > 0.95), stem
  # The same split again: validation is a fixed, seeded choice.
  again = datasets.get_builder(config)._split_items(None)
  assert sorted(s[0] for s in again["validation"]) == sorted(val)


@pytest.mark.slow  # Prepares a dataset.
@pytest.mark.parametrize("policy", ["resize", "crop", "skip", "error"])
def test_suim_size_mismatch_policies(suim_raw, tmp_path, policy):
  raw, truth = suim_raw
  config = data_config(tmp_path, "suim", raw, on_size_mismatch=policy,
                       num_validation=3)
  builder = datasets.get_builder(config)
  if policy == "error":
    mask = os.path.join(str(raw), "train_val", "masks", MISMATCHED + ".bmp")
    assert_stops(config, mask, "differs from its image's 96x64")
    return
  items = builder._split_items(None)
  assert len(items["validation"]) == 3 and len(items["test"]) == 2
  stems = [it[0] for it in items["train"] + items["validation"]]
  assert len(stems) == (7 if policy == "skip" else 8)
  assert (MISMATCHED in stems) == (policy != "skip")
  assert builder._mismatches == [os.path.join(
      str(raw), "train_val", "masks", MISMATCHED + ".bmp")]
  if policy != "skip":
    item = [it for it in items["train"] + items["validation"]
            if it[0] == MISMATCHED][0]
    loaded = suim.Suim.load_item(item)
    assert loaded.image.shape == (64, 96, 3)
    label, file_label = truth["train_val"][MISMATCHED]
    if policy == "crop":
      np.testing.assert_array_equal(loaded.label_fine, file_label[:64, :96])
    else:
      assert np.mean(loaded.label_fine == label) > 0.95


@pytest.mark.slow  # Prepares a dataset.
@pytest.mark.parametrize("case", ["no_test_folder", "mask_missing"])
def test_suim_bad_input_stops_naming_the_file(suim_raw, tmp_path, case):
  raw = str(tmp_path / "raw")
  shutil.copytree(str(suim_raw[0]), raw)
  if case == "no_test_folder":
    shutil.rmtree(os.path.join(raw, "TEST", "images"))
    path, what = os.path.join(raw, "TEST", "images"), "folder not found"
  else:
    os.remove(os.path.join(raw, "TEST", "masks", "d_r_47_.bmp"))
    path, what = os.path.join(raw, "TEST", "images", "d_r_47_.jpg"), "missing"
  assert_stops(data_config(tmp_path / "data", "suim", raw, num_validation=2),
               path, what)


# ---------------------------------------------------------------- PanNuke --
@pytest.mark.slow  # Prepares a dataset.
def test_pannuke_builds_and_tfds_reads_it_back(pannuke_raw, tmp_path):
  raw, truth = pannuke_raw
  builder = datasets.prepare(data_config(tmp_path, "pannuke", raw),
                             num_workers=1)
  assert datasets.num_classes(builder) == 6
  assert datasets.class_names(builder)[-1] == "background"
  for split, fold in (("train", 1), ("validation", 2), ("test", 3)):
    examples = read_split(builder, split)
    assert sorted(examples) == [f"fold{fold}_{i:05d}" for i in range(3)]
    images, labels = truth[fold]
    for i in range(3):
      ex = examples[f"fold{fold}_{i:05d}"]
      check_example(ex, 6)
      np.testing.assert_array_equal(ex["image"], images[i])
      np.testing.assert_array_equal(ex["label_fine"][..., 0], labels[i])


def test_pannuke_labels_come_from_types_never_summed(pannuke_raw):
  raw, _ = pannuke_raw
  images_path, masks_path = pannuke.fold_paths(str(raw), 1)
  masks = pannuke.open_array(masks_path)
  assert isinstance(masks, np.memmap) and masks.dtype == np.float64
  # Instance ids repeat across channels (summing would mix types up).
  ids = [set(np.unique(masks[0, ..., c]).tolist()) - {0} for c in range(5)]
  assert any(ids[a] & ids[b] for a in range(5) for b in range(a + 1, 5))
  m = np.zeros((1, 4, 6))
  m[0, 0, 0] = 3   # neoplastic, instance 3
  m[0, 1, 1] = 3   # inflammatory, also instance 3
  m[0, 2, 4] = 1   # epithelial
  m[0, 3, 5] = 1   # background channel only
  np.testing.assert_array_equal(pannuke.masks_to_label(m), [[0, 1, 4, 5]])
  item = ("x", images_path, masks_path, 2)
  loaded = pannuke.PanNuke.load_item(item)
  assert loaded.image.dtype == np.uint8 and loaded.image.shape == (256, 256, 3)


def test_pannuke_folds_are_configurable(pannuke_raw, tmp_path):
  raw, _ = pannuke_raw
  builder = datasets.get_builder(data_config(
      tmp_path, "pannuke", raw, train_fold=3, validation_fold=1, test_fold=2))
  items = builder._split_items(None)
  assert [items[s][0][0] for s in ("train", "validation", "test")] == [
      "fold3_00000", "fold1_00000", "fold2_00000"]
  with pytest.raises(errors.ConfigError, match="1, 2, 3 in some order"):
    datasets.get_builder(data_config(tmp_path, "pannuke", raw, test_fold=1))


@pytest.mark.slow  # Prepares a dataset.
@pytest.mark.parametrize("case", ["mask_channels", "image_dtype", "no_fold"])
def test_pannuke_bad_arrays_stop_naming_the_file(pannuke_raw, tmp_path, case):
  raw = str(tmp_path / "raw")
  shutil.copytree(str(pannuke_raw[0]), raw)
  images_path, masks_path = pannuke.fold_paths(raw, 2)
  if case == "mask_channels":
    np.save(masks_path, np.zeros((3, 256, 256, 5)))
    path, what = masks_path, r"expected shape \(n, 256, 256, 6\)"
  elif case == "image_dtype":
    np.save(images_path, np.zeros((3, 256, 256, 3), np.int32))
    path, what = images_path, "expected dtype .* got int32"
  else:
    shutil.rmtree(os.path.join(raw, "Fold 3"))
    path, what = pannuke.fold_paths(raw, 3)[0], "file not found"
  assert_stops(data_config(tmp_path / "data", "pannuke", raw), path, what)


# ------------------------------------------------------------- Cityscapes --
def test_cityscapes_label_table_is_the_official_one():
  lut = cityscapes.LUT
  assert sorted(cityscapes.TRAIN_ID.values()) == list(range(19))
  assert [lut[i] for i in (7, 8, 11, 24, 26, 33)] == [0, 1, 2, 11, 13, 18]
  assert all(lut[i] == 255 for i in (0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16,
                                     18, 29, 30, 255))


@pytest.mark.slow  # Prepares a dataset.
def test_cityscapes_builds_with_gtcoarse_and_city_splits(cityscapes_raw,
                                                         tmp_path):
  raw, truth = cityscapes_raw
  builder = datasets.prepare(data_config(tmp_path, "cityscapes_coarse", raw,
                                         train_extra=True, **CS_SIZE),
                             num_workers=1)
  got = {s: read_split(builder, s)
         for s in ("train", "validation", "test", "train_extra")}
  cities = {s: sorted({k.split("_")[0] for k in v}) for s, v in got.items()}
  assert cities == {"train": ["bochum", "zurich"],
                    "validation": ["aachen", "weimar"],
                    "test": ["frankfurt", "lindau"],
                    "train_extra": ["augsburg"]}
  folder = {"train": "train", "validation": "train", "test": "val",
            "train_extra": "train_extra"}
  conflicts = 0
  for split, examples in got.items():
    for key, ex in examples.items():
      check_example(ex, 19)
      image, fine, coarse_truth = truth[folder[split]][key]
      assert ex["image"].shape == (32, 64, 3)
      fine_got = ex["label_fine"][..., 0]
      coarse_got = ex["label_coarse"][..., 0]
      if fine is None:
        assert (fine_got == 255).all()
        np.testing.assert_array_equal(coarse_got, coarse_truth[1::2, 1::2])
        continue
      np.testing.assert_array_equal(fine_got, fine[1::2, 1::2])
      coarse_truth = coarse_truth[1::2, 1::2]
      clash = ((coarse_truth != fine_got) & (coarse_truth != 255)
               & (fine_got != 255))
      conflicts += int(clash.sum())
      np.testing.assert_array_equal(coarse_got,
                                    np.where(clash, 255, coarse_truth))
  assert conflicts > 0  # The fixture's polygons overlap their neighbours.
  stats = builder.info.metadata["coarse_stats"]
  assert sum(s["conflicts"] for s in stats.values()) == conflicts


def test_cityscapes_mask_conflicts_false_keeps_gtcoarse(cityscapes_raw,
                                                        tmp_path):
  raw, truth = cityscapes_raw
  builder = datasets.get_builder(data_config(
      tmp_path, "cityscapes_coarse", raw, mask_conflicts=False, **CS_SIZE))
  item = [it for it in builder._split_items(None)["train"]
          if it[0] == "bochum_000001_000019"][0]
  _, ex, stats = items_lib.process_item(
      builder._item_loader(), builder.process_spec(), item)
  coarse_got = np.asarray(Image.open(io.BytesIO(ex["label_coarse"])))
  np.testing.assert_array_equal(
      coarse_got, truth["train"][item[0]][2][1::2, 1::2])
  assert stats["conflicts"] > 0


def test_cityscapes_without_gtcoarse_val_generates_test_coarse(tmp_path):
  raw = str(tmp_path / "raw")
  pf.write_cityscapes(raw, coarse_val=False)
  builder = datasets.get_builder(data_config(tmp_path, "cityscapes_coarse",
                                             raw, **CS_SIZE))
  items = builder._split_items(None)
  assert all(it[3] is None for it in items["test"])  # None: generated.
  assert all(it[3] is not None for it in items["train"] + items["validation"])


@pytest.mark.slow  # Prepares a dataset.
@pytest.mark.parametrize("case", ["unknown_id", "fine_missing", "no_gtcoarse"])
def test_cityscapes_bad_input_stops_naming_the_file(cityscapes_raw, tmp_path,
                                                    case):
  raw = str(tmp_path / "raw")
  shutil.copytree(str(cityscapes_raw[0]), raw)
  prefix = os.path.join(raw, "gtFine", "train", "bochum",
                        "bochum_000001_000020")
  if case == "unknown_id":
    path = prefix + "_gtFine_labelIds.png"
    ids = np.asarray(Image.open(path)).copy()
    ids[3, 5] = 40
    Image.fromarray(ids).save(path)
    what = r"unknown label ids \[40\]"
  elif case == "fine_missing":
    os.remove(prefix + "_gtFine_labelIds.png")
    path = os.path.join(raw, "leftImg8bit", "train", "bochum",
                        "bochum_000001_000020_leftImg8bit.png")
    what = "gtFine_labelIds.png is missing"
  else:
    shutil.rmtree(os.path.join(raw, "gtCoarse", "train"))
    path, what = os.path.join(raw, "gtCoarse", "train"), "folder not found"
  assert_stops(data_config(tmp_path / "data", "cityscapes_coarse", raw,
                           **CS_SIZE), path, what)


# ---------------------------------------------------------------- configs --
@pytest.mark.parametrize("name,dataset,kwargs", [
    ("suim", "suim", {"size": 512, "on_size_mismatch": "skip"}),
    ("pannuke", "pannuke", {}),
    ("cityscapes", "cityscapes_coarse",
     {"image_width": 1024, "image_height": 512}),
])
def test_configs_hold_the_papers_settings(name, dataset, kwargs, tmp_path):
  module = __import__(f"coarseseg_jax.configs.{name}", fromlist=["get_config"])
  config = module.get_config()
  assert config.data.dataset == dataset
  builder = datasets.get_builder(config.data)  # The kwargs are the PARAMS.
  for key, value in kwargs.items():
    assert builder.builder_config.params[key] == value
  assert datasets.num_classes(builder) == config.model.num_classes


def test_suim_size_stores_every_pair_square(suim_raw, tmp_path):
  """`size` (configs/suim.py: 512) resizes every pair to size x size."""
  raw, truth = suim_raw
  config = data_config(tmp_path, "suim", raw, size=40, num_validation=3)
  items = datasets.get_builder(config)._split_items(None)
  for item in items["train"][:2] + items["test"][:1]:
    loaded = suim.Suim.load_item(item)
    assert loaded.image.shape == (40, 40, 3)
    assert loaded.label_fine.shape == (40, 40)
    assert set(np.unique(loaded.label_fine)) <= set(range(8))
