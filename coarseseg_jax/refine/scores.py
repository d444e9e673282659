"""Scores of refined masks: against fine labels, and without them.

`mask_metrics` scores masks against fine labels (band accuracy, boundary
recall and F1, per class). A user with only coarse labels cannot measure the
band, so `holdout` hides a ring of the labelled pixels (those within half the
band's width of the band, never more than half a region's depth): each fill fills
the widened band of the held-out label, and its score on the ring against
the coarse labels it hid (`mask_metrics` with the coarse label as truth) is
the coarse-only score that `--refine_method=auto` ranks the fills by.
"""

import functools
from typing import Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from coarseseg_jax import metrics
from coarseseg_jax import refine
from coarseseg_jax.labels import IGNORE_LABEL

# What `--refine_method=auto` ranks the fills by (`choose`): the held-out
# ring's share filled right; scores this close to the best tie.
AUTO_SCORE = "band_correct"
AUTO_TOLERANCE = 0.01


def band_width(coarse: np.ndarray) -> float:
  """The band's width in pixels, from the coarse label alone.

  Twice the 90th percentile of the band pixels' distance to the nearest
  labelled pixel (a band of width w has distances up to w / 2); 0 without a
  band, and 0 for an image with no labelled pixel.

  Args:
    coarse: (H, W) int coarse labels, 255 = unlabelled.
  """
  coarse = np.asarray(coarse)
  band = coarse == IGNORE_LABEL
  if not band.any() or band.all():
    return 0.0
  dist = ndimage.distance_transform_edt(band)
  return float(2.0 * np.percentile(dist[band], 90))


def holdout(coarse: np.ndarray,
            width: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
  """Hides a ring of labelled pixels beside the band.

  A labelled pixel is hidden when its distance to the band is at most
  `width`, and at most half the depth of its region (the largest such
  distance within its connected region of one class), so every labelled
  region keeps its core: no region vanishes, and the widened band is about
  twice the band where regions are deep enough.

  Args:
    coarse: (H, W) int coarse labels, 255 = unlabelled.
    width: pixels; default `band_width(coarse) / 2` (at least 1).

  Returns:
    (held, ring): held (H, W) uint8, `coarse` with the ring set to 255;
    ring (H, W) bool, the hidden pixels. Distances are to the band only, so
    the image's edge hides nothing.
  """
  coarse = np.asarray(coarse)
  labelled = coarse != IGNORE_LABEL
  if width is None:
    width = max(1.0, band_width(coarse) / 2)
  if labelled.all() or not labelled.any():
    return coarse.astype(np.uint8), np.zeros(coarse.shape, bool)
  dist = ndimage.distance_transform_edt(labelled)
  limit = np.zeros(coarse.shape, np.float64)
  for c in np.unique(coarse[labelled]):
    regions, n = ndimage.label(coarse == c)
    depth = ndimage.maximum(dist, regions, np.arange(1, n + 1))
    inside = regions > 0
    limit[inside] = np.asarray(depth)[regions[inside] - 1] / 2
  ring = labelled & (dist <= np.minimum(width, limit))
  return np.where(ring, IGNORE_LABEL, coarse).astype(np.uint8), ring


def mask_metrics(refined: jax.Array, coarse: jax.Array, fine: jax.Array,
                 num_classes: int,
                 size: Optional[jax.Array] = None) -> Dict[str, jax.Array]:
  """Figures of refined masks against fine labels, per image (jit-able).

  The band is the pixels the coarse label leaves unlabelled; a refined mask
  fills some or all of them (255 = left unlabelled). Conventions of
  `coarseseg_jax.metrics` (255 = unlabelled, `size` for a padded canvas).

  Args:
    refined: (B, H, W) int refined masks.
    coarse: (B, H, W) int coarse labels they were refined from.
    fine: (B, H, W) int fine labels (255 = unlabelled or padding).
    num_classes: static number of classes C.
    size: optional (B, 2) (height, width) of each image in the canvas.

  Returns:
    Per image: `band_accuracy` (B,), `metrics.pixel_accuracy` over the band
    pixels the mask filled (NaN if none); `band_correct` (B,), the share of
    the band's fine-labelled pixels filled with the right class (unfilled
    ones count as wrong); `boundary_recall` and `boundary_f1` (B,) of the
    whole mask (`metrics.boundary_recall`, the paper's, and
    `metrics.boundary_precision_recall_f1`, default radius); `band_confusion`
    (B, C, C) over the filled band pixels; `class_boundary_recall`,
    `class_boundary_f1` (B, C), the same of the binary map "class c" against
    "any other class"; `class_present` (B, C), whether the fine label holds
    class c and another class (the per-class boundary figures mean nothing
    elsewhere).
  """
  refined, coarse, fine = (jnp.asarray(x, jnp.int32)
                           for x in (refined, coarse, fine))
  band = coarse == IGNORE_LABEL
  filled = band & (refined != IGNORE_LABEL)
  fine_filled = jnp.where(filled, fine, IGNORE_LABEL)
  out = {
      "band_accuracy": metrics.pixel_accuracy(refined, fine_filled),
      "band_correct": metrics.pixel_accuracy(
          jnp.where(filled, refined, -1), jnp.where(band, fine, IGNORE_LABEL)),
      "boundary_recall": metrics.boundary_recall(refined, fine, size=size),
      "boundary_f1": metrics.boundary_precision_recall_f1(
          refined, fine, size=size)[2],
      "band_confusion": metrics.confusion_matrix(refined, fine_filled,
                                                 num_classes),
  }
  b, h, w = refined.shape
  classes = jnp.arange(num_classes)[None, :, None, None]

  def binary(x):  # (B, H, W) -> (B * C, H, W): 1 = class c, 255 kept.
    one = (x[:, None] == classes).astype(jnp.int32)
    return jnp.where(x[:, None] == IGNORE_LABEL, IGNORE_LABEL, one).reshape(
        b * num_classes, h, w)

  csize = None if size is None else jnp.repeat(jnp.asarray(size, jnp.int32),
                                               num_classes, axis=0)
  bin_pred, bin_fine = binary(refined), binary(fine)
  out["class_boundary_recall"] = metrics.boundary_recall(
      bin_pred, bin_fine, size=csize).reshape(b, num_classes)
  out["class_boundary_f1"] = metrics.boundary_precision_recall_f1(
      bin_pred, bin_fine, size=csize)[2].reshape(b, num_classes)
  is_c = fine[:, None] == classes
  other = ~is_c & (fine[:, None] != IGNORE_LABEL)
  out["class_present"] = is_c.any(axis=(2, 3)) & other.any(axis=(2, 3))
  return out



@functools.lru_cache(maxsize=None)
def mask_metrics_fn(num_classes: int):
  """`mask_metrics`, jit-compiled once per number of classes."""
  return jax.jit(functools.partial(mask_metrics, num_classes=num_classes))


def choose(coarse_only: dict, score: str = AUTO_SCORE,
           tolerance: float = AUTO_TOLERANCE,
           among: Optional[Sequence[str]] = None) -> Tuple[str, str]:
  """(method, why): the fill `auto` writes.

  The first fill of `refine.FILLS` (the simplest first) whose coarse-only score
  is within `tolerance` of the best: the held-out ring lies inside regions,
  away from the true borders, so it tells a fill that fails there (a model
  wrong inside regions, SLIC leaving pixels unfilled) from one that does
  not, but not which of the rest places borders best.

  Args:
    coarse_only: the held-out report's `methods` ({method: figures}).
    score: the figure to rank by (missing or NaN: never chosen unless all
      are).
    tolerance: scores this close to the best count as a tie.
    among: the fills to choose from (e.g. `refine.FREE_FILLS`); all of
      `coarse_only` when None.
  """
  if among is not None:
    coarse_only = {m: v for m, v in coarse_only.items() if m in among}
  if not coarse_only:
    raise ValueError(f"no fill to choose from among {among}.")
  values = {m: np.nan_to_num(coarse_only[m].get(score) or np.nan, nan=-1.0)
            for m in coarse_only}
  best = max(values.values())
  order = sorted(coarse_only, key=refine.FILLS.index)
  chosen = next(m for m in order if values[m] >= best - tolerance)
  ranked = sorted(coarse_only, key=lambda m: -values[m])
  figures = ", ".join(f"{m} {coarse_only[m].get(score) or float('nan'):.3f}"
                      for m in ranked)
  why = (f"the simplest fill within {tolerance:g} of the best coarse-only "
         f"score ({score} of a held-out ring of labelled pixels): {figures}")
  return chosen, why


def agreement(coarse_only: dict, fine: dict,
              score: str = AUTO_SCORE) -> dict:
  """How the coarse-only ranking of the fills agrees with the fine one.

  Args:
    coarse_only, fine: {method: figures} of the held-out ring and of the
      band against fine labels.
    score: the figure both rank by.

  Returns:
    `fine_best` (the best fill by fine labels), `coarse_only_best`, the
    fine-label figure of each, `kendall_tau` between the two rankings.
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top
  methods = [m for m in fine if m in coarse_only]
  a = [np.nan_to_num(coarse_only[m].get(score) or np.nan, nan=-1.0)
       for m in methods]
  b = [np.nan_to_num(fine[m].get(score) or np.nan, nan=-1.0)
       for m in methods]
  fine_best = methods[int(np.argmax(b))]
  coarse_best = methods[int(np.argmax(a))]
  return {"fine_best": fine_best, "coarse_only_best": coarse_best,
          f"fine_{score}_of_fine_best": float(np.max(b)),
          f"fine_{score}_of_coarse_only_best": float(b[methods.index(
              coarse_best)]),
          "kendall_tau": float(stats.kendalltau(a, b).statistic)}
