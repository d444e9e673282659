"""Boundary metrics: pure, jit-able, per image, on images of any size.

Re-exported by `coarseseg_jax.metrics` (use them as `metrics.boundary_recall`,
...). Conventions as there: batched int maps ``pred`` and ``label`` of shape
``(B, H, W)``, ``label == ignore_index`` marks unlabelled pixels, one float32
value per image.

``boundary_recall`` is the definition of de Jong & Holenderski (arXiv
2510.15756), so its numbers compare with the paper's tables.
``boundary_precision_recall_f1`` gives the standard figures of the superpixel
benchmark literature (Stutz et al., "Superpixels: an evaluation of the
state-of-the-art"), with a 4-neighbour boundary and a square tolerance window.
Both use the default radius ``r = round(0.0025 * sqrt(H^2 + W^2))``
(`default_radius`).

Images of many sizes in one batch: pass ``size``, a ``(B, 2)`` int array of
each image's ``(height, width)``; image ``b`` is the top-left ``size[b]`` part
of its ``(H, W)`` canvas, the rest is padding that takes no part (exactly as
if the image had been given alone at its own size), and the default radius is
each image's own. Then the radius is a traced per-image array and the window
sizes are no longer static: the ``(2r+1)^2`` windows are built from ``r``
repeated 3x3 windows (identical results, since max and min over square
windows compose), looped to the largest radius of the batch. So one
compilation serves every image size that fits the canvas.
"""

import math
from typing import Optional, Tuple, Union

import jax
import jax.numpy as jnp

from coarseseg_jax.labels import IGNORE_LABEL

Radius = Union[int, jax.Array]
# The paper's radius round(diagonal / 400) changes at diagonals 400k + 200;
# the table covers diagonals up to 400 * _MAX_RADIUS px.
_MAX_RADIUS = 64


def default_radius(height: int, width: int) -> int:
  """The paper's boundary tolerance ``round(0.0025 * sqrt(H^2 + W^2))``.

  Python's ``round`` (half to even): 0 for images under ~200 px diagonal (e.g.
  ``(24, 20)``), 1 for ``(256, 256)``, 3 for ``(512, 1024)``, 6 for
  ``(1024, 2048)``.
  """
  return int(round(0.0025 * math.sqrt(height ** 2 + width ** 2)))


def default_radius_array(size: jax.Array) -> jax.Array:
  """`default_radius` of each ``(height, width)`` row of ``(B, 2)`` ints.

  Exact integer arithmetic (jit-able, same values as `default_radius`): the
  radius is the number of thresholds ``(400k + 200)^2`` below the squared
  diagonal, plus one at an exact tie ``d^2 = (400k + 200)^2`` with odd ``k``
  (round half to even).
  """
  size = jnp.asarray(size, jnp.int32)
  d2 = size[:, 0] ** 2 + size[:, 1] ** 2  # (B,), < 2^31 up to 32k px sides.
  k = jnp.arange(_MAX_RADIUS, dtype=jnp.int32)
  t = (400 * k + 200) ** 2  # (K,)
  below = jnp.sum(t[None] < d2[:, None], axis=1)
  tie_odd = jnp.sum((t[None] == d2[:, None]) & (k[None] % 2 == 1), axis=1)
  return (below + tie_odd).astype(jnp.int32)


def _check_maps(pred, label, what):
  if pred.ndim != 3 or pred.shape != label.shape:
    raise ValueError(f"{what}: pred and label must both be (B, H, W), got "
                     f"{tuple(pred.shape)} and {tuple(label.shape)}.")


def inside_mask(shape: Tuple[int, int, int],
                size: Optional[jax.Array]) -> Optional[jax.Array]:
  """(B, H, W) bool: the pixel lies in its image's top-left ``size`` part."""
  if size is None:
    return None
  size = jnp.asarray(size, jnp.int32)
  b, h, w = shape
  rows = jnp.arange(h)[None, :, None] < size[:, 0, None, None]
  cols = jnp.arange(w)[None, None, :] < size[:, 1, None, None]
  return jnp.broadcast_to(rows & cols, (b, h, w))


def _window3(x: jax.Array, init, op) -> jax.Array:
  """3x3 window reduction around every pixel of (B, H, W); outside = init."""
  return jax.lax.reduce_window(x, jnp.asarray(init, x.dtype), op,
                               (1, 3, 3), (1, 1, 1), ((0, 0), (1, 1), (1, 1)))


def _grow(x: jax.Array, n: Radius, init, op) -> jax.Array:
  """The ``(2n+1)^2`` window reduction (``init`` outside), as n 3x3 ones.

  ``n`` is a Python int (unrolled) or a ``(B,)`` int array (image b stops
  after ``n[b]`` steps; the loop runs to the largest).
  """
  if isinstance(n, int):
    for _ in range(n):
      x = _window3(x, init, op)
    return x
  n = jnp.asarray(n, jnp.int32)

  def body(i, y):
    return jnp.where((i < n)[:, None, None], _window3(y, init, op), y)

  return jax.lax.fori_loop(0, jnp.max(n), body, x)


def _radius(radius: Optional[Radius], shape, size) -> Radius:
  if radius is None:
    return (default_radius(*shape[1:3]) if size is None
            else default_radius_array(size))
  if isinstance(radius, int):
    if radius < 0:
      raise ValueError(f"radius must be >= 0, got {radius}.")
    return radius
  return jnp.broadcast_to(jnp.asarray(radius, jnp.int32), shape[:1])


def paper_boundary(x: jax.Array, thickness: Radius,
                   ignore_index: int = IGNORE_LABEL,
                   size: Optional[jax.Array] = None) -> jax.Array:
  """The paper's boundary of a map at a given thickness.

  A pixel is a boundary pixel iff its ``(2t-1) x (2t-1)`` window (t =
  ``thickness``) holds a label different from its own and holds no pixel equal
  to ``ignore_index`` (the centre included). Positions outside the image count
  as the centre's own label, so the image border is no boundary. Thickness 1
  (a 1x1 window) gives an empty boundary.

  Args:
    x: ``(B, H, W)`` int map.
    thickness: int >= 1, or a ``(B,)`` int array (one per image).
    ignore_index: the value of unlabelled pixels.
    size: optional ``(B, 2)`` image sizes in the canvas (module docstring);
      pixels outside are never boundary pixels and count as outside.

  Returns:
    ``(B, H, W)`` bool.
  """
  if isinstance(thickness, int) and thickness < 1:
    raise ValueError(f"thickness must be >= 1, got {thickness}.")
  x = x.astype(jnp.int32)
  inside = inside_mask(x.shape, size)
  steps = thickness - 1
  info = jnp.iinfo(jnp.int32)
  # Outside pixels hold the neutral element, so they never differ.
  lo = x if inside is None else jnp.where(inside, x, info.min)
  hi = x if inside is None else jnp.where(inside, x, info.max)
  ignored = (x == ignore_index) if inside is None else (
      (x == ignore_index) & inside)
  wmax = _grow(lo, steps, info.min, jax.lax.max)
  wmin = _grow(hi, steps, info.max, jax.lax.min)
  near_ignored = _grow(ignored.astype(jnp.int32), steps, 0, jax.lax.max) > 0
  out = ((wmax != x) | (wmin != x)) & ~near_ignored
  return out if inside is None else out & inside


def boundary_recall(pred: jax.Array, label: jax.Array,
                    ignore_index: int = IGNORE_LABEL,
                    radius: Optional[Radius] = None,
                    size: Optional[jax.Array] = None) -> jax.Array:
  """Boundary recall exactly as defined by de Jong & Holenderski.

  With ``B(x, t)`` = `paper_boundary` (applied to ``pred`` and ``label`` alike,
  with the same ``ignore_index``) and ``r = radius``::

    tp = sum(B(pred, 2) & B(label, r + 1))
    fn = sum(~B(pred, r + 1) & B(label, 2))
    recall = tp / (tp + fn + 1e-5)

  Caveats of this definition (kept for comparability with the paper's tables):
  its "tp" counts *predicted* boundary pixels near a true boundary, so a
  thicker or over-segmented prediction scores higher; and ``r = 0`` (the
  default radius of images under ~200 px diagonal) makes ``B(., 1)`` empty
  and the recall 0 whatever the prediction. An image without any true boundary
  pixel also gives 0 (no NaN).

  Args:
    pred: ``(B, H, W)`` int predicted class ids.
    label: ``(B, H, W)`` int true class ids, ``ignore_index`` = unlabelled.
    ignore_index: the value of unlabelled pixels.
    radius: tolerance ``r``: an int, a ``(B,)`` int array, or None for the
      default radius of each image (`default_radius` of its size).
    size: optional ``(B, 2)`` image sizes in the canvas (module docstring).

  Returns:
    ``(B,)`` float32 in ``[0, 1)``.
  """
  _check_maps(pred, label, "boundary_recall")
  r = _radius(radius, label.shape, size)
  pred_2 = paper_boundary(pred, 2, ignore_index, size)
  label_2 = paper_boundary(label, 2, ignore_index, size)
  pred_r = paper_boundary(pred, r + 1, ignore_index, size)
  label_r = paper_boundary(label, r + 1, ignore_index, size)
  tp = jnp.sum(pred_2 & label_r, axis=(1, 2)).astype(jnp.float32)
  fn = jnp.sum(~pred_r & label_2, axis=(1, 2)).astype(jnp.float32)
  return tp / (tp + fn + 1e-5)


def four_neighbour_boundary(x: jax.Array, valid: jax.Array) -> jax.Array:
  """Pixels with a differently labelled valid 4-neighbour.

  Args:
    x: ``(B, H, W)`` int map.
    valid: ``(B, H, W)`` bool; invalid pixels are never boundary pixels, and a
      neighbour pair involving one never makes a boundary.

  Returns:
    ``(B, H, W)`` bool.
  """
  diff_v = (x[:, 1:] != x[:, :-1]) & valid[:, 1:] & valid[:, :-1]  # (B,H-1,W)
  diff_h = (x[:, :, 1:] != x[:, :, :-1]) & valid[:, :, 1:] & valid[:, :, :-1]
  pad_v = lambda d, lo, hi: jnp.pad(d, ((0, 0), (lo, hi), (0, 0)))
  pad_h = lambda d, lo, hi: jnp.pad(d, ((0, 0), (0, 0), (lo, hi)))
  return (pad_v(diff_v, 0, 1) | pad_v(diff_v, 1, 0) |
          pad_h(diff_h, 0, 1) | pad_h(diff_h, 1, 0))


def boundary_precision_recall_f1(
    pred: jax.Array, label: jax.Array, tolerance: Optional[Radius] = None,
    ignore_index: int = IGNORE_LABEL, size: Optional[jax.Array] = None
) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """Boundary precision, recall and F1 of the superpixel benchmark literature.

  A pixel is *valid* iff it is labelled in ``label`` and ``pred`` differs from
  ``ignore_index`` there (and lies in its image, given ``size``). A map's
  boundary pixels are the valid pixels with a valid 4-neighbour of a
  different value (`four_neighbour_boundary`); ignored pixels are therefore
  neither boundary pixels of either map nor make one. A boundary pixel of one
  map is *matched* if the other map has a boundary pixel in its
  ``(2r+1) x (2r+1)`` window (``r = tolerance``)::

    recall    = #matched label boundary pixels / #label boundary pixels
    precision = #matched pred boundary pixels / #pred boundary pixels
    f1        = 2 * precision * recall / (precision + recall)

  Edge cases (NaN-free for any image with a labelled pixel): recall is 1 when
  the label has no boundary pixel (nothing to find), precision is 1 when the
  prediction has none (nothing wrongly claimed), F1 is 0 when precision +
  recall is 0. So a prediction without boundaries on a label with some gets
  (1, 0, 0), one with boundaries on a label without gets (0, 1, 0), and both
  boundary-free give (1, 1, 1). An image without any valid pixel gives NaN
  for all three.

  Args:
    pred: ``(B, H, W)`` int predicted class ids.
    label: ``(B, H, W)`` int true class ids, ``ignore_index`` = unlabelled.
    tolerance: radius ``r`` in pixels: an int, a ``(B,)`` int array, or None
      for each image's `default_radius`.
    ignore_index: the value of unlabelled pixels.
    size: optional ``(B, 2)`` image sizes in the canvas (module docstring).

  Returns:
    ``(precision, recall, f1)``, each ``(B,)`` float32.
  """
  _check_maps(pred, label, "boundary_precision_recall_f1")
  r = _radius(tolerance, label.shape, size)
  valid = (label != ignore_index) & (pred != ignore_index)
  inside = inside_mask(label.shape, size)
  if inside is not None:
    valid = valid & inside
  b_pred = four_neighbour_boundary(pred, valid)
  b_label = four_neighbour_boundary(label, valid)
  dilate = lambda m: _grow(m.astype(jnp.int32), r, 0, jax.lax.max) > 0
  n_pred = jnp.sum(b_pred, axis=(1, 2))
  n_label = jnp.sum(b_label, axis=(1, 2))
  hit_pred = jnp.sum(b_pred & dilate(b_label), axis=(1, 2))
  hit_label = jnp.sum(b_label & dilate(b_pred), axis=(1, 2))
  precision = jnp.where(n_pred > 0, hit_pred / jnp.maximum(n_pred, 1), 1.0)
  recall = jnp.where(n_label > 0, hit_label / jnp.maximum(n_label, 1), 1.0)
  total = precision + recall
  f1 = jnp.where(total > 0, 2 * precision * recall / jnp.where(
      total > 0, total, 1.0), 0.0)
  any_valid = jnp.any(valid, axis=(1, 2))
  nan_if_empty = lambda v: jnp.where(any_valid, v, jnp.nan).astype(jnp.float32)
  return nan_if_empty(precision), nan_if_empty(recall), nan_if_empty(f1)
