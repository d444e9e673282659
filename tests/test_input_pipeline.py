"""The tf.data input pipeline on a tiny TFDS builder (tests/pipeline_fixtures)."""

import itertools

import jax
import numpy as np
import pytest

from coarseseg_jax.configs import default
from coarseseg_jax import input_pipeline as ip
from coarseseg_jax import sharding

import pipeline_fixtures as fixtures  # pylint: disable=g-bad-import-order

TRAIN_SIZES = fixtures.TinySegmentation.BUILDER_CONFIGS[0].train_sizes
TEST_SIZES = fixtures.TinySegmentation.BUILDER_CONFIGS[0].test_sizes


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
  return fixtures.prepare(str(tmp_path_factory.mktemp("tfds")))


def data_config(**overrides):
  config = default.get_config().data
  config.update(dict(crop_size=32, scale_range=(1.0, 1.0), hflip=True,
                     shuffle_buffer=16, slic_num_segments=64,
                     train_labels="coarse"))
  config.update(overrides)
  return config


def take(iterator, n):
  return list(itertools.islice(iterator, n))


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def train_ids(batch, max_offset=16):
  """Which train example (and x offset) each unflipped, unscaled crop is."""
  originals = [fixtures.make_example(h, w, seed=i)["label_fine"][..., 0]
               for i, (h, w) in enumerate(TRAIN_SIZES)]
  ids = []
  for crop in batch["label_fine"]:
    size = crop.shape[0]
    matches = [i for i, o in enumerate(originals) for x in range(max_offset + 1)
               if np.array_equal(o[:size, x:x + size], crop)]
    assert len(matches) == 1, matches
    ids.append(matches[0])
  return ids


def test_train_batches_shapes_dtypes_and_ranges(builder):
  config = data_config(scale_range=(0.75, 1.5))
  assert ip.steps_per_epoch(builder, 4) == 2
  for batch in take(ip.create_train_iterator(builder, config, 4, seed=0), 3):
    assert set(batch) == {"image", "label", "label_fine", "slic", "mask"}
    assert batch["image"].shape == (4, 32, 32, 3)
    assert batch["image"].dtype == np.float32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    for k in ("label", "label_fine", "slic"):
      assert batch[k].shape == (4, 32, 32) and batch[k].dtype == np.int32, k
    assert set(np.unique(batch["label"])) <= {0, 1, 2, 3, 255}
    assert set(np.unique(batch["label_fine"])) <= {0, 1, 2, 3}
    np.testing.assert_array_equal(batch["mask"], np.ones(4, np.float32))
    assert batch["mask"].dtype == np.float32
    for slic in batch["slic"]:  # Consecutive ids 0..k-1 in every crop.
      ids = np.unique(slic)
      np.testing.assert_array_equal(ids, np.arange(len(ids)))


def test_crop_larger_than_image_is_padded(builder):
  config = data_config(crop_size=80, slic_num_segments=40)
  batch = next(ip.create_train_iterator(builder, config, 4, seed=0))
  assert batch["image"].shape == (4, 80, 80, 3)
  assert np.all(batch["image"][:, 48:] == 0)
  assert np.all(batch["label"][:, 48:] == 255)
  assert np.all(batch["label_fine"][:, 48:] == 255)
  assert np.all(batch["slic"][:, 48:] == -1)
  assert np.all(batch["label_fine"][:, :48, 16:64] != 255)
  # 48x64 images hold 6 * 8 = 48 SLIC blocks: ids >= 40 are dropped.
  assert batch["slic"].max() == 39
  assert np.sum(batch["slic"][:, :48] == -1) > 0


def test_coarse_versus_fine_training_labels(builder):
  fine = next(ip.create_train_iterator(
      builder, data_config(train_labels="fine"), 4, seed=0))
  coarse = next(ip.create_train_iterator(
      builder, data_config(train_labels="coarse"), 4, seed=0))
  np.testing.assert_array_equal(fine["label"], fine["label_fine"])
  np.testing.assert_array_equal(coarse["label_fine"], fine["label_fine"])
  labelled = coarse["label"] != 255
  assert 0.1 < labelled.mean() < 0.5  # The 4x4 interior of 8x8 blocks.
  np.testing.assert_array_equal(coarse["label"][labelled],
                                coarse["label_fine"][labelled])


def test_augmentation_is_joint(builder):
  batches = take(ip.create_train_iterator(
      builder, data_config(crop_size=32), 8, seed=1), 3)
  flips = []
  for batch in batches:
    image = np.round(batch["image"] * 255).astype(np.int64)
    red = fixtures.RED[batch["label_fine"]]
    np.testing.assert_array_equal(image[..., 0], red)
    steps = np.diff(image[..., 1], axis=2)  # Green = 3 * original column.
    assert np.all((steps == 3) | (steps == -3))
    flipped = steps[:, 0, 0] < 0
    assert np.all(steps == np.where(flipped, -3, 3)[:, None, None])
    flips.extend(flipped)
    # Each SLIC id covers one original 8x8 block (read off green and blue).
    block = (image[..., 2] // 3 // 8) * 100 + image[..., 1] // 3 // 8
    for b in range(len(block)):
      pairs = np.unique(np.stack([batch["slic"][b].ravel(),
                                  block[b].ravel()]), axis=1)
      assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == \
          pairs.shape[1]
  assert 0 < sum(flips) < len(flips)


def test_augmentation_with_scaling_keeps_correspondence(builder):
  config = data_config(crop_size=32, scale_range=(0.5, 2.0))
  batch = next(ip.create_train_iterator(builder, config, 8, seed=0))
  red = np.round(batch["image"][..., 0] * 255)
  nearest = np.argmin(np.abs(red[..., None] - fixtures.RED), axis=-1)
  labelled = batch["label_fine"] != 255
  agree = np.mean(nearest[labelled] == batch["label_fine"][labelled])
  assert agree > 0.85, agree
  assert not np.all(np.isin(red, fixtures.RED))  # Bilinear resizing happened.


@pytest.mark.slow  # 3 s on 2 cores (compiles or runs more).
def test_deterministic_with_seed(builder):
  config = data_config(scale_range=(0.75, 1.5))
  a = take(ip.create_train_iterator(builder, config, 4, seed=7), 3)
  b = take(ip.create_train_iterator(builder, config, 4, seed=7), 3)
  c = take(ip.create_train_iterator(builder, config, 4, seed=8), 3)
  assert_batches_equal(a, b)
  assert not all(np.array_equal(x["image"], y["image"]) for x, y in zip(a, c))


@pytest.mark.slow  # 5 s on 2 cores (compiles or runs more).
def test_resume_yields_the_uninterrupted_batches(builder):
  config = data_config(scale_range=(0.75, 1.5))
  fresh = take(ip.create_train_iterator(builder, config, 4, seed=3), 7)
  # 2 steps per epoch: epochs differ, and resuming crosses epoch boundaries.
  assert not np.array_equal(fresh[0]["image"], fresh[2]["image"])
  for start in (1, 2, 3, 5):
    resumed = take(ip.create_train_iterator(
        builder, config, 4, seed=3, start_step=start), 2)
    assert_batches_equal(resumed, fresh[start:start + 2])


def test_every_epoch_visits_each_example_once(builder):
  config = data_config(crop_size=48, hflip=False)
  batches = take(ip.create_train_iterator(builder, config, 5, seed=0), 6)
  epochs = [sorted(train_ids(batches[i]) + train_ids(batches[i + 1]))
            for i in (0, 2, 4)]
  assert all(e == list(range(10)) for e in epochs)
  orders = {tuple(train_ids(batches[i])) for i in (0, 2, 4)}
  assert len(orders) > 1  # Reshuffled every epoch.


def test_train_processes_read_disjoint_shards(builder):
  config = data_config(crop_size=48, hflip=False)
  seen = []
  for p in range(2):
    batches = take(ip.create_train_iterator(
        builder, config, 4, seed=0, process_index=p, process_count=2), 2)
    assert batches[0]["image"].shape == (2, 48, 48, 3)  # Local batch.
    ids = train_ids(batches[0]) + train_ids(batches[1])
    assert len(set(ids)) == 4  # One epoch: no repeats within a process.
    seen.append(set(ids))
  assert not seen[0] & seen[1]


@pytest.mark.slow  # 5 s on 2 cores (compiles or runs more).
@pytest.mark.parametrize("batch_size,process_count", [(2, 1), (4, 2), (8, 8)])
def test_eval_covers_every_image_once(builder, batch_size, process_count):
  config = data_config()
  num = ip.num_eval_batches(builder, "test", batch_size,
                            process_count=process_count)
  assert num == {1: 3, 2: 2, 8: 1}[process_count]
  seen = []
  for p in range(process_count):
    batches = list(ip.create_eval_iterator(
        builder, config, "test", batch_size, process_index=p,
        process_count=process_count))
    assert len(batches) == num
    for batch in batches:
      local = batch_size // process_count
      assert batch["image"].shape == (local, 64, 80, 3)  # Max 64x70 -> 16.
      assert batch["image"].dtype == np.float32
      for k in ("label", "label_fine", "slic", "height", "width"):
        assert batch[k].dtype == np.int32, k
      for i in range(local):
        if batch["mask"][i] == 0:
          assert batch["id"][i] == b"" and batch["height"][i] == 0
          assert np.all(batch["label_fine"][i] == 255)
          continue
        seen.append(batch["id"][i])
        index = int(batch["id"][i].split(b"_")[1])
        h, w = TEST_SIZES[index]
        assert (batch["height"][i], batch["width"][i]) == (h, w)
        original = fixtures.make_example(h, w, seed=1000 + index)
        np.testing.assert_array_equal(batch["label_fine"][i, :h, :w],
                                      original["label_fine"][..., 0])
        np.testing.assert_array_equal(batch["label"][i, :h, :w],
                                      original["label_coarse"][..., 0])
        np.testing.assert_array_equal(batch["slic"][i, :h, :w],
                                      original["slic"])
        np.testing.assert_allclose(batch["image"][i, :h, :w],
                                   original["image"] / 255.0, atol=1e-6)
        pad = np.ones((64, 80), bool)
        pad[:h, :w] = False
        assert np.all(batch["label"][i][pad] == 255)
        assert np.all(batch["label_fine"][i][pad] == 255)
        assert np.all(batch["slic"][i][pad] == -1)
        assert np.all(batch["image"][i][pad] == 0)
  assert sorted(seen) == [f"test_{i}".encode() for i in range(5)]


def test_eval_center_crop(builder):
  config = data_config(eval_center_crop=32, train_labels="fine")
  assert ip.eval_pad_size(builder, config, "test") == (32, 32)
  batches = list(ip.create_eval_iterator(builder, config, "test", 5))
  assert len(batches) == 1
  batch = batches[0]
  assert batch["image"].shape == (5, 32, 32, 3) and batch["mask"].all()
  for i in range(5):
    index = int(batch["id"][i].split(b"_")[1])
    h, w = TEST_SIZES[index]
    ch, cw = min(h, 32), min(w, 32)
    assert (batch["height"][i], batch["width"][i]) == (ch, cw)
    y, x = (h - ch) // 2, (w - cw) // 2
    original = fixtures.make_example(h, w, seed=1000 + index)
    np.testing.assert_array_equal(
        batch["label"][i, :ch, :cw],
        original["label_fine"][y:y + ch, x:x + cw, 0])
    ids = np.unique(batch["slic"][i, :ch, :cw])
    np.testing.assert_array_equal(ids, np.arange(len(ids)))


@pytest.mark.parametrize("num_devices", [1, 8])
def test_shard_batch(builder, num_devices):
  assert jax.device_count() == 8  # tests/conftest.py: 8 fake CPU devices.
  if num_devices == 8:
    mesh = sharding.make_mesh()
  else:
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  assert mesh.axis_names == ("data",) and mesh.size == num_devices
  batch = next(ip.create_eval_iterator(builder, data_config(), "test", 8))
  sharded = sharding.shard_batch(batch, mesh)
  assert "id" not in sharded
  assert set(sharded) == set(batch) - {"id"}
  for k, array in sharded.items():
    assert isinstance(array, jax.Array) and array.shape == batch[k].shape, k
    shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start)
    assert len(shards) == num_devices
    rows = 8 // num_devices
    for j, shard in enumerate(shards):
      assert shard.data.shape[0] == rows, k
      np.testing.assert_array_equal(np.asarray(shard.data),
                                    batch[k][j * rows:(j + 1) * rows])
  with pytest.raises(ValueError, match="local devices"):
    sharding.shard_batch({"mask": np.ones(4, np.float32)}, sharding.make_mesh())


def test_invalid_arguments(builder):
  with pytest.raises(ValueError, match="multiple of 16"):
    ip.create_train_iterator(builder, data_config(crop_size=30), 4, seed=0)
  with pytest.raises(ValueError, match="number of processes"):
    ip.create_train_iterator(builder, data_config(), 5, seed=0,
                             process_index=0, process_count=2)
  with pytest.raises(ValueError, match="fewer than one global batch"):
    ip.steps_per_epoch(builder, 16)
  with pytest.raises(ValueError, match="train_labels"):
    ip.create_eval_iterator(builder, data_config(train_labels="x"), "test", 2)
