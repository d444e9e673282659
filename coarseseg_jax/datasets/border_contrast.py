"""How much colour alone tells class borders: a dataset statistic.

The regularizer and SLIC compare colours of stride-4 blocks. On a dataset
whose class borders are colour edges, the colour distance between two
neighbouring blocks tells a border from the interior of a region; on one
whose borders are texture borders, much less. `border_auc` measures it:

  1. mean CIELAB colour of every `block` x `block` block (the regularizer's
     `block_mean` image at stride 4);
  2. every pair of horizontally or vertically neighbouring blocks: the
     Euclidean Lab distance of their means;
  3. a pair is a *border* pair if the blocks' majority classes differ and an
     *interior* pair if both blocks are of one class, the same (pairs of a
     mixed block with the same majority are left out, as are blocks with
     unlabelled pixels);
  4. the AUC of the distance as a border-versus-interior score (1: every
     border pair is further apart than every interior pair; 0.5: chance).

Pure NumPy / SciPy / scikit-image; `benchmarks/border_contrast.py` prints it
for the synthetic and texture_mosaic datasets.
"""

from typing import Iterable, Tuple

import numpy as np
from scipy import stats
from skimage import color

from coarseseg_jax.labels import IGNORE_LABEL


def _blocks(array: np.ndarray, block: int) -> np.ndarray:
  """(H // b, W // b, b * b, ...) pixels of each block (edges cropped)."""
  h, w = array.shape[:2]
  hb, wb = h // block, w // block
  out = array[:hb * block, :wb * block].reshape(
      hb, block, wb, block, *array.shape[2:])
  out = np.moveaxis(out, 2, 1)
  return out.reshape(hb, wb, block * block, *array.shape[2:])


def block_pairs(image: np.ndarray, label: np.ndarray, block: int = 4
                ) -> Tuple[np.ndarray, np.ndarray]:
  """(border distances, interior distances) of one image's block pairs.

  Args:
    image: (H, W, 3) uint8 RGB.
    label: (H, W) class ids (255 = unlabelled).
    block: block side in pixels (4: the regularizer's finest grid).

  Returns:
    Two 1-D float arrays: Lab distances of border pairs and interior pairs.
  """
  lab = color.rgb2lab(np.asarray(image, np.float64) / 255.0)
  means = _blocks(lab, block).mean(axis=2)                 # (hb, wb, 3)
  classes = _blocks(np.asarray(label), block)              # (hb, wb, b*b)
  majority = stats.mode(classes, axis=-1, keepdims=False).mode
  pure = np.all(classes == classes[..., :1], axis=-1)
  valid = ~np.any(classes == IGNORE_LABEL, axis=-1)
  border, interior = [], []
  for a, b in (((slice(None, -1), slice(None)), (slice(1, None), slice(None))),
               ((slice(None), slice(None, -1)), (slice(None), slice(1, None)))):
    d = np.linalg.norm(means[a] - means[b], axis=-1)
    both = valid[a] & valid[b]
    differ = majority[a] != majority[b]
    border.append(d[both & differ])
    interior.append(d[both & ~differ & pure[a] & pure[b]])
  return np.concatenate(border), np.concatenate(interior)


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
  """P(a positive scores above a negative), ties counted half (Mann-Whitney).
  """
  positive, negative = np.ravel(positive), np.ravel(negative)
  if not positive.size or not negative.size:
    return float("nan")
  ranks = stats.rankdata(np.concatenate([positive, negative]))
  n = positive.size
  return float((ranks[:n].sum() - n * (n + 1) / 2) / (n * negative.size))


def border_auc(examples: Iterable[Tuple[np.ndarray, np.ndarray]],
               block: int = 4) -> float:
  """The AUC of neighbouring blocks' Lab distance for border vs interior,
  pooled over `examples` ((image, label) pairs; see the module docstring).
  """
  border, interior = [], []
  for image, label in examples:
    b, i = block_pairs(image, label, block)
    border.append(b)
    interior.append(i)
  return auc(np.concatenate(border), np.concatenate(interior))
