"""The feature dictionary shared by every coarseseg dataset builder.

Every example, whatever the dataset, holds:
  image         uint8  (H, W, 3)  RGB, PNG-encoded.
  label_fine    uint8  (H, W, 1)  class ids 0..C-1, 255 = unlabelled, PNG-encoded.
  label_coarse  uint8  (H, W, 1)  same convention; never contradicts label_fine.
  slic          int32  (H, W)     precomputed SLIC superpixel ids 0..K-1
                                  (consecutive), zlib-compressed.
  id            text              the example's name (file stem, index, ...).
"""

import numpy as np
import tensorflow_datasets as tfds



def segmentation_features() -> tfds.features.FeaturesDict:
  """Returns the `tfds.features.FeaturesDict` of a coarseseg example."""
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
      "label_fine": tfds.features.Image(shape=(None, None, 1), dtype=np.uint8),
      "label_coarse": tfds.features.Image(shape=(None, None, 1), dtype=np.uint8),
      "slic": tfds.features.Tensor(
          shape=(None, None), dtype=np.int32,
          encoding=tfds.features.Encoding.ZLIB),
      "id": tfds.features.Text(),
  })
