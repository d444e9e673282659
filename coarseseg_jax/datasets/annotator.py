"""Annotator-like coarse labels (`config.data.coarse_style=annotator`).

The paper's coarse labels (`coarse.py`, style `erosion`, the default) erode
every region by the same `kernel_size // 2` pixels, so the unlabelled band is
centred on the true border. A person drawing coarse polygons does not work
like that. This style simulates one, region by region (connected components
of each class of the fine label, in a fixed order):

  * a small region (area below `(small_factor * kernel_size)^2` pixels) is
    left unlabelled with probability `p_skip_small`;
  * otherwise, with probability `p_scribble`, it is only scribbled: a few
    points well inside it joined by straight strokes `scribble_width` px
    wide;
  * otherwise it gets a polygon inside it with an uneven margin: the margin
    to the region's border is `kernel_size / 2` times a per-region factor
    (uniform in `margin_range`) times a smooth random field along the image
    (log-normal, `margin_log_std`), so it is narrow on some sides and wide on
    others; the polygon is the outline of what is left, simplified with
    Douglas-Peucker at `tolerance` x its length (a few clicks' worth of
    vertices).

What a polygon covers outside its region becomes 255 (and is counted), so a
coarse label never contradicts the fine one. The image border is not a class
border (no margin there). Pixels unlabelled in the fine label stay
unlabelled. Pure NumPy / SciPy / scikit-image, a pure function of the fine
label, `kernel_size`, the parameters and `seed`: the dataset builders seed it
with a hash of the example's id (`example_seed`), so a prepared dataset does
not depend on the worker count.
"""

import dataclasses
import zlib
from typing import Tuple, Union

import numpy as np
from scipy import ndimage
from skimage import draw
from skimage import morphology

from coarseseg_jax.datasets import coarse
from coarseseg_jax.labels import IGNORE_LABEL

# The values of config.data.coarse_style: `erosion` is the paper's.
STYLES = ("erosion", "annotator")


@dataclasses.dataclass(frozen=True)
class AnnotatorParams:
  """How the simulated annotator behaves (see the module docstring)."""
  p_skip_small: float = 0.5
  small_factor: float = 2.0
  p_scribble: float = 0.15
  scribble_width: int = 3
  scribble_points: Tuple[int, int] = (3, 6)
  margin_range: Tuple[float, float] = (0.5, 1.6)
  margin_log_std: float = 0.45
  margin_min: float = 1.5
  tolerance: float = 0.02


def example_seed(example_id: str) -> int:
  """A stable 32-bit seed from an example's id (same in every process)."""
  return zlib.crc32(str(example_id).encode("utf-8"))


def _smooth_field(rng: np.random.Generator, shape: Tuple[int, int],
                  cells: int = 6) -> np.ndarray:
  """(H, W) smooth random field, about unit variance, `cells` bumps across."""
  coarse_grid = rng.standard_normal((cells + 1, cells + 1))
  field = ndimage.zoom(coarse_grid, (shape[0] / (cells + 1),
                                     shape[1] / (cells + 1)),
                       order=3, mode="nearest", grid_mode=True)
  field = field[:shape[0], :shape[1]]
  return field / max(float(field.std()), 1e-6)


def _scribble(rng: np.random.Generator, allowed: np.ndarray,
              inner: np.ndarray, params: AnnotatorParams) -> np.ndarray:
  """Boolean mask of a few strokes between points of `inner`, clipped to
  `allowed` (both (h, w) boolean)."""
  rows, cols = np.nonzero(inner)
  if rows.size == 0:
    return np.zeros_like(allowed)
  lo, hi = params.scribble_points
  n = int(rng.integers(lo, hi + 1))
  picks = rng.choice(rows.size, size=min(n, rows.size), replace=False)
  # Visit the points in a greedy nearest-neighbour order: one stroke.
  points = [picks[0]]
  left = list(picks[1:])
  while left:
    last = points[-1]
    d = [(rows[i] - rows[last]) ** 2 + (cols[i] - cols[last]) ** 2
         for i in left]
    points.append(left.pop(int(np.argmin(d))))
  line = np.zeros_like(allowed)
  line[rows[points[0]], cols[points[0]]] = True
  for a, b in zip(points[:-1], points[1:]):
    rr, cc = draw.line(rows[a], cols[a], rows[b], cols[b])
    line[rr, cc] = True
  radius = (params.scribble_width - 1) // 2
  if radius > 0:
    line = ndimage.binary_dilation(line, morphology.disk(radius))
  return line & allowed


def _polygon(rng: np.random.Generator, region: np.ndarray, dist: np.ndarray,
             field: np.ndarray, kernel_size: int, params: AnnotatorParams,
             image_edges: Tuple[bool, bool, bool, bool]) -> np.ndarray:
  """Boolean mask of a simplified polygon inside `region`, uneven margin.

  `image_edges` (top, bottom, left, right): which sides of the arrays are
  the image's border; vertices within 2 px of one are put on it, so a
  polygon that reaches the image border covers it (as a person would).
  """
  lo, hi = params.margin_range
  base = 0.5 * kernel_size * rng.uniform(lo, hi)
  margin = np.maximum(base * np.exp(params.margin_log_std * field),
                      params.margin_min)
  kept = region & (dist > margin)
  if not kept.any():
    return kept
  h, w = region.shape
  top, bottom, left, right = image_edges
  polygons = []
  for polygon, is_hole in coarse.mask_polygons(kept, 1, params.tolerance):
    polygon = polygon.copy()
    r, c = polygon[:, 0], polygon[:, 1]
    if top:
      r[r < 1.5] = -1.0
    if bottom:
      r[r > h - 2.5] = h
    if left:
      c[c < 1.5] = -1.0
    if right:
      c[c > w - 2.5] = w
    polygons.append((polygon, is_hole))
  return coarse.fill_polygons(polygons, region.shape)


def _grow(box: Tuple[slice, slice], shape: Tuple[int, int]
          ) -> Tuple[slice, slice]:
  """A bounding box grown by one pixel on every side, within the image."""
  return tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n))
               for s, n in zip(box, shape))


def annotator_label(
    fine: np.ndarray, kernel_size: int = 25, *, seed: int = 0,
    params: AnnotatorParams = AnnotatorParams(),
    return_conflicts: bool = False,
) -> Union[np.ndarray, Tuple[np.ndarray, int]]:
  """An annotator-like coarse label of a fine one.

  Args:
    fine: (H, W) or (H, W, 1) uint8 class ids, 255 = unlabelled.
    kernel_size: the coarseness, as in `coarse.coarse_label`: the mean
      margin is about `kernel_size / 2` px (>= 1).
    seed: the annotator's random choices (the same seed, the same label).
    params: probabilities and sizes (`AnnotatorParams`).
    return_conflicts: also return the number of polygon pixels that fell on
      another class (set to 255).

  Returns:
    The (H, W) uint8 coarse label (same shape as `fine`), and, if asked, the
    number of conflicting pixels.
  """
  squeeze, fine2d = coarse.checked_label(fine, kernel_size)
  rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, kernel_size])
  field = _smooth_field(rng, fine2d.shape)
  coarse_out = np.full(fine2d.shape, IGNORE_LABEL, dtype=np.uint8)
  conflicts = 0
  small_area = (params.small_factor * kernel_size) ** 2
  for c in np.unique(fine2d):
    if c == IGNORE_LABEL:
      continue
    own = fine2d == c
    components, _ = ndimage.label(own)
    for index, tight in enumerate(ndimage.find_objects(components), 1):
      edges = (tight[0].start == 0, tight[0].stop == fine2d.shape[0],
               tight[1].start == 0, tight[1].stop == fine2d.shape[1])
      box = _grow(tight, fine2d.shape)
      region = components[box] == index
      # Each region draws the same number of numbers whatever it becomes,
      # so one region's fate does not shift the others'.
      u_skip, u_scribble = rng.uniform(size=2)
      sub = np.random.default_rng(rng.integers(2 ** 32))
      area = int(np.count_nonzero(region))
      if area < small_area and u_skip < params.p_skip_small:
        continue
      # Distance to the nearest pixel outside the region; the box's grown
      # ring is outside it, and the image border is not a class border (as
      # in the erosion style): EDT treats the array's edge as inert.
      dist = ndimage.distance_transform_edt(region)
      if u_scribble < params.p_scribble:
        inner = dist > max(0.5 * kernel_size, params.scribble_width + 1.0)
        # Strokes stay a stroke's width away from the region's border.
        drawn = _scribble(sub, dist > params.scribble_width, inner, params)
      else:
        drawn = _polygon(sub, region, dist, field[box], kernel_size, params,
                         edges)
      target = coarse_out[box]
      target[drawn & region] = c
      other = fine2d[box]
      conflicts += int(np.count_nonzero(
          drawn & (other != c) & (other != IGNORE_LABEL)))
  if squeeze:
    coarse_out = coarse_out[..., None]
  return (coarse_out, conflicts) if return_conflicts else coarse_out


def make_coarse_label(fine: np.ndarray, style: str, kernel_size: int,
                      example_id: str) -> Tuple[np.ndarray, int]:
  """(coarse label, conflicts) of `fine` in a `STYLES` style.

  `erosion`: `coarse.coarse_label`; `annotator`: `annotator_label` seeded
  with `example_seed(example_id)`.
  """
  if style == "erosion":
    return coarse.coarse_label(fine, kernel_size, return_conflicts=True)
  if style == "annotator":
    return annotator_label(fine, kernel_size, seed=example_seed(example_id),
                           return_conflicts=True)
  raise ValueError(f"coarse style {style!r} is unknown; use one of {STYLES}.")
