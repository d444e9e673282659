"""Evaluation metrics on fine labels: pure, jit-able, per image.

Conventions
-----------
Every metric takes batched integer maps ``pred`` and ``label`` of shape
``(B, H, W)`` (class ids; ``label == ignore_index`` marks unlabelled pixels) and
returns one float32 value per image, shape ``(B,)``, so results can be averaged
over images or given a spread. Ratios over labelled pixels (accuracy, ASA) are
NaN for an image without any labelled pixel: aggregate with ``nanmean``.

Every function is ``jax.jit``-able as is; keyword arguments that set a size
(``num_classes``, ``num_segments``) must be static (bind them with
``functools.partial``).

The boundary metrics (``boundary_recall``, the paper's definition;
``boundary_precision_recall_f1``; ``paper_boundary``; ``default_radius``) live
in `coarseseg_jax.boundaries` and are re-exported here. They take an optional
``size`` (B, 2) of each image's size in a padded canvas, so images of many
sizes share one compilation.
"""

from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from coarseseg_jax import superpixels
from coarseseg_jax.labels import IGNORE_LABEL
# pylint: disable=unused-import
from coarseseg_jax.boundaries import (  # Re-exported: metrics.boundary_recall.
    boundary_precision_recall_f1, boundary_recall, default_radius,
    default_radius_array, four_neighbour_boundary, paper_boundary)
# pylint: enable=unused-import


def _check_maps(pred, label, what):
  if pred.ndim != 3 or pred.shape != label.shape:
    raise ValueError(f"{what}: pred and label must both be (B, H, W), got "
                     f"{tuple(pred.shape)} and {tuple(label.shape)}.")


def _safe_div(num, den):
  """num / den as float32, NaN where den == 0."""
  num = num.astype(jnp.float32)
  den = den.astype(jnp.float32)
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), jnp.nan)


def pixel_accuracy(pred: jax.Array, label: jax.Array,
                   ignore_index: int = IGNORE_LABEL) -> jax.Array:
  """Fraction of labelled pixels whose prediction equals the label.

  Args:
    pred: ``(B, H, W)`` int predicted class ids.
    label: ``(B, H, W)`` int true class ids, ``ignore_index`` = unlabelled.
    ignore_index: the label value of unlabelled pixels.

  Returns:
    ``(B,)`` float32; NaN for an image without any labelled pixel.
  """
  _check_maps(pred, label, "pixel_accuracy")
  valid = label != ignore_index
  correct = jnp.sum(valid & (pred == label), axis=(1, 2))
  return _safe_div(correct, jnp.sum(valid, axis=(1, 2)))


def _resize_bilinear(x: jax.Array, height: int, width: int) -> jax.Array:
  """(B, h, w, C) -> (B, height, width, C), bilinear, half-pixel centres.

  No antialiasing: equal to ``torch.nn.functional.interpolate(x,
  mode='bilinear', align_corners=False)`` for integer down- and upscaling
  factors (checked against a NumPy transcription of PyTorch's formula in the
  tests).
  """
  b, _, _, c = x.shape
  return jax.image.resize(x, (b, height, width, c), "bilinear",
                          antialias=False)


def achievable_segmentation_accuracy(assignments: Sequence[jax.Array],
                                     label: jax.Array, num_classes: int,
                                     ignore_index: int = IGNORE_LABEL
                                     ) -> jax.Array:
  """The paper's (soft) achievable segmentation accuracy of learned superpixels.

  The one-hot label (ignored pixels all zero) is resized bilinearly to the
  finest assignment resolution, pooled into the coarsest cells with
  `superpixels.downsample` through every assignment (finest first), decoded
  back with `superpixels.upsample` (coarsest first), resized bilinearly to the
  full size and argmaxed; the result is the accuracy of that map over the
  labelled pixels. Resizes use half-pixel centres without antialiasing, as
  ``torch.nn.functional.interpolate(mode='bilinear', align_corners=False)``.

  Args:
    assignments: assignments ordered finest first as produced by the model,
      e.g. ``[A_4, A_8]`` of shapes ``(B, H/4, W/4, 9)`` and
      ``(B, H/8, W/8, 9)``.
    label: ``(B, H, W)`` int true class ids, ``ignore_index`` = unlabelled.
    num_classes: static number of classes C (labels in ``[0, C)``; other
      values get an all-zero one-hot row, like ignored pixels, but still
      count as labelled unless equal to ``ignore_index``).
    ignore_index: the value of unlabelled pixels.

  Returns:
    ``(B,)`` float32; NaN for an image without any labelled pixel.
  """
  if not assignments:
    raise ValueError("achievable_segmentation_accuracy needs an assignment.")
  b, h, w = label.shape
  valid = label != ignore_index
  onehot = jax.nn.one_hot(jnp.where(valid, label, -1), num_classes,
                          dtype=jnp.float32)  # all zero for -1
  x = _resize_bilinear(onehot, *assignments[0].shape[1:3])
  x = superpixels.reconstruct(x, assignments)
  x = _resize_bilinear(x, h, w)
  pred = jnp.argmax(x, axis=-1).astype(label.dtype)
  return pixel_accuracy(pred, label, ignore_index)


def _per_image_histogram(index: jax.Array, counted: jax.Array,
                         bins: int) -> jax.Array:
  """(B, H, W) int bin ids and bool weights -> (B, bins) int32 counts.

  A scatter-add per image (vmapped, so a batch sharded over devices stays
  sharded); pixels with ``counted`` False add nothing.
  """
  b = index.shape[0]
  return jax.vmap(lambda i, m: jax.ops.segment_sum(m, i, num_segments=bins))(
      index.reshape(b, -1), counted.reshape(b, -1).astype(jnp.int32))


def _num_segments_of(segments) -> int:
  try:
    return int(np.max(np.asarray(segments))) + 1
  except (jax.errors.TracerArrayConversionError,
          jax.errors.ConcretizationTypeError) as e:
    raise ValueError(
        "segment_asa: pass num_segments (a static int) when segments is "
        "traced, e.g. under jax.jit.") from e


def segment_asa(segments: jax.Array, label: jax.Array,
                num_segments: Optional[int] = None, num_classes: int = 256,
                ignore_index: int = IGNORE_LABEL) -> jax.Array:
  """Hard achievable segmentation accuracy of any segmentation.

  Each segment takes its majority label over the labelled pixels it covers;
  the result is the fraction of counted pixels whose label equals their
  segment's majority label, i.e. ``sum_s max_c n[s, c] / sum_{s,c} n[s, c]``
  with ``n`` the per-image (segment, label) histogram.

  A pixel is counted iff its label is in ``[0, num_classes)`` and differs
  from ``ignore_index``, and its segment id is >= 0 (negative ids = ignored,
  as in the precomputed SLIC maps).

  ``segments`` may be coarser than ``label`` by integer factors (e.g. the
  ``(B, H/4, W/4)`` ids of `superpixels.hard_superpixels`): they are then
  upsampled by nearest neighbour, every id covering an ``(H/h) x (W/w)``
  block of label pixels. ``H/h`` and ``W/w`` must be integers.

  Memory: the histogram is ``B * num_segments * num_classes`` int32 (e.g.
  2048 segments x 256 classes = 2 MiB per image), built with a scatter-add
  (`jax.ops.segment_sum`) from a ``(B, H, W)`` int32 index, never a one-hot
  tensor of size ``H * W * num_segments``.

  Args:
    segments: ``(B, h, w)`` int segment ids, ids in ``[0, num_segments)``.
    label: ``(B, H, W)`` int class ids, ``ignore_index`` = unlabelled.
    num_segments: static histogram size; None = ``max(segments) + 1``, which
      needs a concrete (not traced) ``segments``. An image with a counted
      pixel whose id is ``>= num_segments`` gives NaN (so a too small size is
      never silently wrong).
    num_classes: static number of label bins; the default 256 covers all
      ``uint8`` labels.
    ignore_index: the label value of unlabelled pixels.

  Returns:
    ``(B,)`` float32 in ``[0, 1]``; NaN for an image without any counted pixel.
  """
  if segments.ndim != 3 or label.ndim != 3 or segments.shape[0] != label.shape[0]:
    raise ValueError(f"segment_asa: segments and label must be (B, h, w) and "
                     f"(B, H, W), got {tuple(segments.shape)} and "
                     f"{tuple(label.shape)}.")
  b, h, w = label.shape
  sh, sw = segments.shape[1:]
  if h % sh or w % sw:
    raise ValueError(f"segment_asa: label size {(h, w)} must be an integer "
                     f"multiple of the segments' size {(sh, sw)}.")
  if num_segments is None:
    num_segments = _num_segments_of(segments)
  num_segments = max(int(num_segments), 1)
  segments = segments.astype(jnp.int32)
  if (sh, sw) != (h, w):
    segments = jnp.repeat(jnp.repeat(segments, h // sh, axis=1), w // sw, axis=2)
  label = label.astype(jnp.int32)
  counted = ((label != ignore_index) & (label >= 0) & (label < num_classes) &
             (segments >= 0))
  out_of_range = jnp.any(counted & (segments >= num_segments), axis=(1, 2))
  counted = counted & (segments < num_segments)
  index = jnp.where(counted, segments * num_classes + label, 0)
  hist = _per_image_histogram(index, counted, num_segments * num_classes)
  hist = hist.reshape(b, num_segments, num_classes)
  agree = jnp.sum(jnp.max(hist, axis=-1), axis=-1)
  asa = _safe_div(agree, jnp.sum(counted, axis=(1, 2)))
  return jnp.where(out_of_range, jnp.nan, asa)


def confusion_matrix(pred: jax.Array, label: jax.Array, num_classes: int,
                     ignore_index: int = IGNORE_LABEL) -> jax.Array:
  """Per-image confusion matrices.

  Args:
    pred: ``(B, H, W)`` int predicted class ids.
    label: ``(B, H, W)`` int true class ids, ``ignore_index`` = unlabelled.
    num_classes: static number of classes C.
    ignore_index: the label value of unlabelled pixels.

  Returns:
    ``(B, C, C)`` int32; entry ``[b, i, j]`` counts the pixels of image b with
    true label i (row) predicted as j (column). Ignored pixels, and pixels
    with ``label`` or ``pred`` outside ``[0, C)``, are not counted. Sum over
    images for the dataset matrix (in int64 on the host for large datasets).
  """
  _check_maps(pred, label, "confusion_matrix")
  b = label.shape[0]
  c = num_classes
  pred = pred.astype(jnp.int32)
  label = label.astype(jnp.int32)
  counted = ((label != ignore_index) & (label >= 0) & (label < c) &
             (pred >= 0) & (pred < c))
  index = jnp.where(counted, label * c + pred, 0)
  return _per_image_histogram(index, counted, c * c).reshape(b, c, c)


def mean_iou(cm) -> jax.Array:
  """Mean intersection over union from confusion matrices.

  Args:
    cm: ``(..., C, C)`` confusion matrices (rows = true label, columns =
      prediction), e.g. one image's matrix or the sum over a dataset. Any
      integer or float dtype; it is converted to float32 first, so int64
      host sums beyond the int32 range are fine.

  Returns:
    ``(...)`` float32: the mean over classes with a non-zero union
    (``row sum + column sum - diagonal``) of ``diagonal / union``; NaN where
    no class has a non-zero union.
  """
  cm = jnp.asarray(cm, jnp.float32)
  inter = jnp.diagonal(cm, axis1=-2, axis2=-1)
  union = jnp.sum(cm, axis=-1) + jnp.sum(cm, axis=-2) - inter
  present = union > 0
  iou = jnp.where(present, inter / jnp.where(present, union, 1.0), 0.0)
  return _safe_div(jnp.sum(iou, axis=-1), jnp.sum(present, axis=-1))
