"""The photo-texture benchmark (coarseseg_jax.datasets.texture_mosaic).

A tiny draw (64 x 64, a handful per split) is prepared in a tmp data dir, in
both coarse styles.
"""

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from coarseseg_jax import datasets
from coarseseg_jax import errors
from coarseseg_jax.configs import synthetic as synthetic_config
from coarseseg_jax.configs import texture_mosaic as tm_config
from coarseseg_jax.datasets import annotator
from coarseseg_jax.datasets import border_contrast
from coarseseg_jax.datasets import coarse
from coarseseg_jax.datasets import slic
from coarseseg_jax.datasets import synthetic
from coarseseg_jax.datasets import texture_mosaic as tm

TINY = dict(num_classes=4, num_train=4, num_validation=2, num_test=2,
            image_size=64)
tfds.disable_progress_bar()


def data_config(data_dir, coarse_style="erosion", **kwargs):
  return ml_collections.ConfigDict(dict(
      dataset="texture_mosaic", data_dir=str(data_dir), manual_dir=None,
      coarse_kernel=7, coarse_style=coarse_style, slic_block=16,
      slic_compactness=10.0, slic_sigma=1.0, builder_kwargs=kwargs))


def read_split(builder, split):
  ds = builder.as_dataset(split=split)
  return {ex["id"].decode(): ex for ex in tfds.as_numpy(ds)}


@pytest.fixture(scope="module", params=["erosion", "annotator"])
def tiny(request, tmp_path_factory):
  path = tmp_path_factory.mktemp("texture_mosaic")
  config = data_config(path, request.param, **TINY)
  return request.param, datasets.prepare(config, num_workers=1)


@pytest.mark.slow  # Prepares a dataset.
def test_tiny_draw_builds_with_coarse_labels_of_its_style(tiny):
  style, builder = tiny
  suffix = "k7-annotator" if style == "annotator" else "k7"
  assert builder.info.full_name.startswith(
      f"coarseseg_texture_mosaic/{suffix}_s16_c10.0_g1.0_n4_tr4_va2_te2_px64")
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 4, "validation": 2, "test": 2}
  assert datasets.num_classes(builder) == 4
  assert datasets.class_names(builder) == ("brick", "grass", "gravel",
                                           "tissue")
  assert builder.info.metadata["coarse_style"] == style
  for split in ("train", "validation", "test"):
    for key, ex in read_split(builder, split).items():
      index = int(key.split("_")[-1])
      image, label = tm.generate(0, split, index, 64, 4)
      np.testing.assert_array_equal(ex["image"], image)
      np.testing.assert_array_equal(ex["label_fine"][..., 0], label)
      expected = annotator.make_coarse_label(label, style, 7, key)[0]
      np.testing.assert_array_equal(ex["label_coarse"][..., 0], expected)
      labelled = expected != 255
      np.testing.assert_array_equal(expected[labelled], label[labelled])
      assert slic.is_consecutive(ex["slic"])
  stats = builder.info.metadata["coarse_stats"]["train"]
  assert 0 < stats["labelled"] < stats["pixels"] == 4 * 64 * 64


def test_splits_read_disjoint_parts_of_every_source():
  for index in range(len(tm.SOURCES)):
    shape = tm.load_source(index).shape[:2]
    cover = np.zeros(shape, int)
    for split in tm.SPLITS:
      r0, r1, c0, c1 = tm.split_bounds(shape, split)
      assert r1 - r0 >= shape[0] // 2 - 1 and c1 - c0 >= shape[1] // 2 - 1
      cover[r0:r1, c0:c1] += 1
    np.testing.assert_array_equal(cover, 1)  # Disjoint, and every pixel.
  # A patch of a split holds only its part's values, even where the window
  # is larger than the part (mirrored) and at any scale / flip.
  source = np.zeros((100, 140, 1))
  for value, split in enumerate(tm.SPLITS):
    r0, r1, c0, c1 = tm.split_bounds(source.shape, split)
    source[r0:r1, c0:c1] = value
  rng = np.random.default_rng(0)
  for value, split in enumerate(tm.SPLITS):
    r0, r1, c0, c1 = tm.split_bounds(source.shape, split)
    for shape in ((20, 30), (120, 90)):
      patch = tm.sample_patch(source[r0:r1, c0:c1], rng, shape,
                              rng.uniform(0.8, 1.25))
      assert patch.shape == shape + (1,)
      np.testing.assert_allclose(patch, value)


def test_split_statistics_compare_each_part_with_train(monkeypatch):
  # A source whose test quarter is brighter by 1 and twice the contrast.
  rng = np.random.default_rng(0)
  source = rng.standard_normal((64, 64, 1)).repeat(3, -1).astype(np.float32)
  r0, r1, c0, c1 = tm.split_bounds(source.shape, "test")
  source[r0:r1, c0:c1] = 2 * source[r0:r1, c0:c1] + 1
  monkeypatch.setattr(tm, "load_source", lambda index: source)
  stats = tm.split_statistics(0)
  assert stats["train"] == (0.0, 1.0)
  offset, spread = stats["test"]
  assert abs(offset - 1.0) < 0.15 and abs(spread - 2.0) < 0.2
  offset, spread = stats["validation"]
  assert abs(offset) < 0.15 and abs(spread - 1.0) < 0.15


def test_generation_is_deterministic_per_seed_and_split():
  a = tm.generate(3, "train", 5, 96, 6)
  b = tm.generate(3, "train", 5, 96, 6)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[0], tm.generate(4, "train", 5, 96, 6)[0])
  assert not np.array_equal(a[0], tm.generate(3, "test", 5, 96, 6)[0])


def test_labels_layouts_and_classes():
  rng = np.random.default_rng(1)
  kinds = set()
  for _ in range(30):
    label, kind = tm.layout(rng, 96, 6)
    kinds.add(kind)
    assert label.dtype == np.uint8 and label.shape == (96, 96)
    assert 2 <= len(np.unique(label)) <= 4
    assert label.max() < 6
  assert kinds == set(tm.LAYOUTS)
  labels = [tm.generate(0, "train", i, 64, 6)[1] for i in range(24)]
  present = np.unique(np.concatenate([l.ravel() for l in labels]))
  np.testing.assert_array_equal(present, np.arange(6))  # No 255 either.


def test_colour_alone_does_not_give_the_class_nor_the_border():
  data = [tm.generate(0, "train", i, 128, 6) for i in range(24)]
  means = np.stack([np.mean(np.concatenate(
      [im[lab == c] for im, lab in data[:16]]), axis=0) for c in range(6)])
  acc = []
  for image, label in data[16:]:
    d = ((image[:, :, None].astype(float) - means) ** 2).sum(-1)
    acc.append(np.mean(d.argmin(-1) == label))
  assert np.mean(acc) < 0.4  # Chance is 1/6 over 6 classes.
  # Neighbouring blocks' colour tells its borders less than the synthetic's.
  ours = border_contrast.border_auc(data[:12])
  theirs = border_contrast.border_auc(
      synthetic.generate(0, "train", i, 128, 6) for i in range(12))
  assert ours < theirs - 0.1


def test_border_auc_on_known_cases():
  assert border_contrast.auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1
  assert border_contrast.auc(np.array([1.0]), np.array([1.0])) == 0.5
  label = np.zeros((32, 32), np.uint8)
  label[:, 16:] = 1
  image = np.full((32, 32, 3), 100, np.uint8)
  image[:, 16:] = 160  # A flat colour edge on the class border.
  border, interior = border_contrast.block_pairs(image, label)
  # 8 x 8 blocks: 8 pairs across the border, 48 + 56 pairs within.
  assert border.size == 8 and interior.size == 104
  assert border_contrast.border_auc([(image, label)]) == 1.0


def test_missing_source_and_bad_params_are_one_line_errors(monkeypatch,
                                                           tmp_path):
  monkeypatch.setattr(tm, "source_dir", lambda: str(tmp_path))
  with pytest.raises(errors.DatasetError, match="brick.png.*reinstall"):
    tm.check_sources(3)
  cls = datasets.builder_class("texture_mosaic")
  with pytest.raises(errors.ConfigError, match="num_classes=10"):
    cls.make_config(num_classes=len(tm.SOURCES) + 1)
  with pytest.raises(errors.ConfigError, match="image_size"):
    cls.make_config(image_size=16)


def test_config_is_sized_like_the_synthetic_one():
  ours, theirs = tm_config.get_config(), synthetic_config.get_config()
  assert ours.data.dataset == "texture_mosaic"
  for key in ("num_train", "num_validation", "num_test", "image_size",
              "num_classes"):
    assert ours.data.builder_kwargs[key] == theirs.data.builder_kwargs[key]
  assert ours.train.to_dict() == theirs.train.to_dict()
  assert datasets.num_classes(datasets.get_builder(ours.data)) == 6
