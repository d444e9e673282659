"""A tiny TFDS builder for input-pipeline tests and benchmarks.

Examples have the features of `coarseseg_jax.datasets.features` and are built
so that tests can check the joint augmentation from the pixels alone:
  * `label_fine` is made of 8x8 blocks of random classes 0..3;
  * the image's red channel is a function of the class, `RED[class]`; the
    green channel is `3 * column` (left to right) and blue `3 * row`, so a
    horizontal flip or a crop can be read off the image;
  * `label_coarse` keeps the class only on the 4x4 interior of each block
    (255 elsewhere), so it never contradicts `label_fine`;
  * `slic` is the block index, consecutive in raster order.
The `bench256` config has noisy 256x256 images (a realistic PNG decode cost).

Import it by name (`import pipeline_fixtures`): pytest puts tests/ on sys.path.
"""

import dataclasses
from typing import Tuple

import numpy as np
import tensorflow_datasets as tfds

from coarseseg_jax.datasets import features as features_lib

RED = np.array([10, 80, 150, 220], np.uint8)  # Red channel of class 0..3.
BLOCK = 8


@dataclasses.dataclass
class TinyConfig(tfds.core.BuilderConfig):
  train_sizes: Tuple[Tuple[int, int], ...] = ()
  test_sizes: Tuple[Tuple[int, int], ...] = ()
  noise: bool = False


def make_example(height: int, width: int, seed: int, noise: bool = False):
  """Returns one example dict (NumPy) of the given size, see module doc."""
  rng = np.random.default_rng(seed)
  bh, bw = -(-height // BLOCK), -(-width // BLOCK)
  classes = rng.integers(0, 4, (bh, bw))
  fine = classes.repeat(BLOCK, 0).repeat(BLOCK, 1)[:height, :width]
  rows, cols = np.mgrid[:height, :width]
  inner = ((rows % BLOCK >= 2) & (rows % BLOCK < 6) &
           (cols % BLOCK >= 2) & (cols % BLOCK < 6))
  coarse = np.where(inner, fine, 255)
  image = np.stack([RED[fine], np.minimum(3 * cols, 255),
                    np.minimum(3 * rows, 255)], -1).astype(np.uint8)
  if noise:
    image = np.clip(image + rng.integers(-8, 9, image.shape), 0, 255)
  slic = (rows // BLOCK) * bw + cols // BLOCK
  return {"image": image.astype(np.uint8),
          "label_fine": fine[..., None].astype(np.uint8),
          "label_coarse": coarse[..., None].astype(np.uint8),
          "slic": slic.astype(np.int32)}


class TinySegmentation(tfds.core.GeneratorBasedBuilder):
  """Random block-structured segmentation examples (see module doc)."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [
      TinyConfig(name="tiny", train_sizes=((48, 64),) * 10,
                 test_sizes=((48, 64), (33, 50), (64, 40), (20, 30),
                             (50, 70))),
      TinyConfig(name="bench256", train_sizes=((256, 256),) * 64,
                 test_sizes=((256, 256),) * 8, noise=True),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, features=features_lib.segmentation_features())

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples("train", self.builder_config
                                             .train_sizes),
            "test": self._generate_examples("test", self.builder_config
                                            .test_sizes)}

  def _generate_examples(self, split, sizes):
    for i, (h, w) in enumerate(sizes):
      example = make_example(h, w, seed=(split == "test") * 1000 + i,
                             noise=self.builder_config.noise)
      example["id"] = f"{split}_{i}"
      yield f"{split}_{i}", example


def prepare(data_dir: str, config: str = "tiny") -> tfds.core.DatasetBuilder:
  """Prepares `TinySegmentation` (config `tiny` or `bench256`) in data_dir."""
  builder = TinySegmentation(config=config, data_dir=data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(
          verify_ssl=False, compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return builder
