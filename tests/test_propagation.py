"""SLIC label propagation (`data.train_labels = 'slic_propagated'`)."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from coarseseg_jax.configs import default
from coarseseg_jax import config_validation
from coarseseg_jax import input_pipeline as ip
from coarseseg_jax.errors import ConfigError

import helpers  # pylint: disable=g-bad-import-order
import pipeline_fixtures

# The loop definition: majority of the segment's labelled pixels (shared with
# test_refine.py).
propagate_reference = helpers.propagate_reference


def _propagate(label, slic):
  return ip.propagate_labels(tf.constant(label, tf.int32),
                             tf.constant(slic, tf.int32)).numpy()


def test_small_example_by_hand():
  label = np.array([[0, 255, 1, 255],
                    [0, 1, 255, 255],
                    [255, 255, 255, 3]], np.int32)
  slic = np.array([[0, 0, 1, 1],
                   [0, 0, 1, 2],
                   [2, 2, -1, 2]], np.int32)
  # Segment 0: labels {0, 0, 1} -> 0; segment 1: {1} -> 1; segment 2: {3};
  # the pixel without a segment stays unlabelled.
  expected = np.array([[0, 0, 1, 1],
                       [0, 1, 1, 3],
                       [3, 3, 255, 3]], np.int32)
  np.testing.assert_array_equal(_propagate(label, slic), expected)


def test_ties_and_segments_without_labels():
  label = np.array([[2, 1, 255, 255, 255]], np.int32)
  slic = np.array([[0, 0, 0, 1, 1]], np.int32)
  np.testing.assert_array_equal(_propagate(label, slic),
                                [[2, 1, 1, 255, 255]])
  # Nothing labelled at all: unchanged.
  empty = np.full((3, 4), 255, np.int32)
  np.testing.assert_array_equal(_propagate(empty, np.zeros((3, 4), np.int32)),
                                empty)


@pytest.mark.parametrize("seed", range(5))
def test_matches_numpy_loop_reference(seed):
  rng = np.random.default_rng(seed)
  h, w = 24, 31
  slic = rng.integers(0, 12, (h, w)).astype(np.int32)
  slic[rng.random((h, w)) < 0.05] = -1
  label = rng.integers(0, 5, (h, w)).astype(np.int32)
  label[rng.random((h, w)) < 0.7] = 255
  got = _propagate(label, slic)
  np.testing.assert_array_equal(got, propagate_reference(label, slic))
  labelled = label != 255
  np.testing.assert_array_equal(got[labelled], label[labelled])


@pytest.mark.slow  # 4 s on 2 cores (compiles or runs more).
def test_train_batches_are_propagated_before_augmentation(tmp_path):
  builder = pipeline_fixtures.prepare(str(tmp_path))
  config = default.get_config().data
  config.update(dict(crop_size=32, scale_range=(1.0, 1.0), hflip=True,
                     shuffle_buffer=16, slic_num_segments=64,
                     train_labels="slic_propagated"))
  coarse = dict(config.to_dict(), train_labels="coarse")
  coarse = type(config)(coarse)
  got = list(itertools.islice(
      ip.create_train_iterator(builder, config, 4, seed=0), 3))
  ref = list(itertools.islice(
      ip.create_train_iterator(builder, coarse, 4, seed=0), 3))
  for a, b in zip(got, ref):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label_fine"], b["label_fine"])
    labelled = b["label"] != 255
    np.testing.assert_array_equal(a["label"][labelled], b["label"][labelled])
    # Fixture: one SLIC segment per 8x8 block of one class whose 4x4 interior
    # is labelled, so propagation recovers the fine label everywhere.
    np.testing.assert_array_equal(a["label"], a["label_fine"])
    assert (b["label"] == 255).mean() > 0.5
  # Evaluation labels are the coarse ones, unpropagated.
  eval_batch = next(ip.create_eval_iterator(builder, config, "test", 2))
  coarse_batch = next(ip.create_eval_iterator(builder, coarse, "test", 2))
  np.testing.assert_array_equal(eval_batch["label"], coarse_batch["label"])


def test_config_accepts_slic_propagated():
  config = default.get_config()
  config.data.train_labels = "slic_propagated"
  config_validation.resolve(config)
  config.data.train_labels = "propagated"
  with pytest.raises(ConfigError, match="slic_propagated"):
    config_validation.resolve(config)
