"""Fills: coarse labels -> dense masks, one pure function per method.

A coarse label leaves a band around class borders unlabelled (255). Every
fill keeps the labelled pixels and gives some or all band pixels a class
(255 = left unfilled). All take one image, `coarse` of shape (H, W) (int,
255 = unlabelled), and return (H, W) uint8. `FILLS` names them for
`--refine_method`; `refine.driver` runs every one on every image.

Free fills (no model):

* `nearest_labelled`: the label of the closest labelled pixel.
* `slic_propagation`: the majority coarse label of the pixel's SLIC
  superpixel (the training-label option `slic_propagated`).
* `slic_then_nearest`: SLIC propagation, then the nearest labelled pixel for
  what it leaves.

Fills that use the model (`probs`, its (H, W, C) softmax probabilities, and
`assignments`, its soft superpixels):

* `fill_with_model`: the model's argmax (the fill of earlier versions).
* `constrained_model`: the model's most probable class among the classes
  *within reach* (`reachable_classes`): a band pixel almost surely belongs to
  one of the classes labelled around it, not to a class labelled far away.
* `superpixel_propagation`: the coarse labels pooled through the model's
  learned soft superpixels (16 -> 8 -> 4) and decoded back, as the SLIC
  regularizer pools colour (`label_votes`).
* `superpixel_constrained`: the product of the model's probabilities and the
  learned-superpixel votes, among the classes within reach.
* `slic_sure_constrained`: SLIC propagation where its superpixel is sure (all
  its labelled pixels agree and they cover `min_share` of it), the
  constrained model elsewhere.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage
import tensorflow as tf

from coarseseg_jax import refine
from coarseseg_jax import superpixels
from coarseseg_jax.datasets import label_ops
from coarseseg_jax.labels import IGNORE_LABEL

FILLS = refine.FILLS
DEFAULT_MARGIN = 4.0  # Pixels; see `reachable_classes`.
DEFAULT_PRIOR = 0.1  # See `superpixel_constrained`.
DEFAULT_MIN_SHARE = 0.25  # See `slic_sure`.


def fill_with_model(coarse: np.ndarray, pred: np.ndarray,
                    confidence: np.ndarray,
                    min_confidence: float = 0.0) -> np.ndarray:
  """The model's argmax in the band.

  Args:
    coarse: int coarse labels of any shape, e.g. (H, W); 255 = unlabelled.
    pred: the model's class ids (argmax), same shape.
    confidence: the model's largest softmax probability, same shape.
    min_confidence: unlabelled pixels with `confidence < min_confidence`
      stay 255; 0 fills every unlabelled pixel.

  Returns:
    uint8, same shape: `coarse` where labelled, else `pred` where confident,
    else 255.
  """
  coarse = np.asarray(coarse)
  confident = np.asarray(confidence) >= min_confidence
  filled = np.where(confident, np.asarray(pred), IGNORE_LABEL)
  return np.where(coarse != IGNORE_LABEL, coarse, filled).astype(np.uint8)


def slic_propagation(coarse: np.ndarray, segments: np.ndarray) -> np.ndarray:
  """Each unlabelled pixel takes its SLIC superpixel's majority coarse label.

  The training-label option `slic_propagated` (`label_ops.propagate_labels`,
  TF ops, run eagerly): ties go to the smaller class id; superpixels without
  a labelled pixel, and pixels without a superpixel (id < 0), stay 255.

  Args:
    coarse: (H, W) int coarse labels, 255 = unlabelled.
    segments: (H, W) int SLIC ids.

  Returns:
    (H, W) uint8.
  """
  out = label_ops.propagate_labels(tf.constant(np.asarray(coarse), tf.int32),
                                   tf.constant(np.asarray(segments), tf.int32))
  return out.numpy().astype(np.uint8)


def nearest_labelled(coarse: np.ndarray) -> np.ndarray:
  """Each unlabelled pixel takes the label of its nearest labelled pixel.

  Euclidean distance (`scipy.ndimage.distance_transform_edt` with
  `return_indices`); among equally near labelled pixels, the one scipy's
  transform picks. Labelled pixels keep their label; a map without any
  labelled pixel stays all 255.

  Args:
    coarse: (H, W) int coarse labels, 255 = unlabelled.

  Returns:
    (H, W) uint8.
  """
  coarse = np.asarray(coarse)
  unlabelled = coarse == IGNORE_LABEL
  if unlabelled.all() or not unlabelled.any():
    return coarse.astype(np.uint8)
  rows, cols = ndimage.distance_transform_edt(
      unlabelled, return_distances=False, return_indices=True)
  return coarse[rows, cols].astype(np.uint8)


def slic_then_nearest(coarse: np.ndarray, segments: np.ndarray) -> np.ndarray:
  """`slic_propagation`, then `nearest_labelled` for the pixels it leaves.

  Args:
    coarse: (H, W) int coarse labels, 255 = unlabelled.
    segments: (H, W) int SLIC ids.

  Returns:
    (H, W) uint8; 255 only where the image has no labelled pixel at all.
  """
  slic = slic_propagation(coarse, segments)
  return np.where(slic == IGNORE_LABEL, nearest_labelled(coarse),
                  slic).astype(np.uint8)


def class_distances(coarse: np.ndarray, num_classes: int) -> np.ndarray:
  """Euclidean distance of every pixel to the nearest pixel of each class.

  Args:
    coarse: (H, W) int coarse labels, 255 = unlabelled.
    num_classes: C.

  Returns:
    (H, W, C) float32; 0 on the class's own pixels, inf for a class the
    image does not label.
  """
  coarse = np.asarray(coarse)
  out = np.full(coarse.shape + (num_classes,), np.inf, np.float32)
  for c in np.unique(coarse[coarse != IGNORE_LABEL]):
    if c < num_classes:
      out[..., c] = ndimage.distance_transform_edt(coarse != c)
  return out


def reachable_classes(coarse: np.ndarray, num_classes: int,
                      margin: float = DEFAULT_MARGIN) -> np.ndarray:
  """Which classes a pixel may take: those labelled within its reach.

  A band pixel at distance d from the nearest labelled pixel may take class
  c when a pixel labelled c lies within d + `margin`; a labelled pixel only
  its own class. A band narrower than 2 * `margin` at a pixel lets both
  sides' classes compete there; a class labelled only far away never does.

  Args:
    coarse: (H, W) int coarse labels, 255 = unlabelled.
    num_classes: C.
    margin: pixels (>= 0).

  Returns:
    (H, W, C) bool; all False where the image labels no pixel.
  """
  coarse = np.asarray(coarse)
  dist = class_distances(coarse, num_classes)
  nearest = dist.min(axis=-1, keepdims=True)
  allowed = np.isfinite(dist) & (dist <= nearest + margin)
  labelled = coarse != IGNORE_LABEL
  allowed[labelled] = dist[labelled] == 0  # Its own class only.
  return allowed


def _argmax_among(scores: np.ndarray, allowed: np.ndarray,
                  coarse: np.ndarray) -> np.ndarray:
  """`coarse` where labelled, else the allowed class of highest score (255
  where no class is allowed)."""
  coarse = np.asarray(coarse)
  masked = np.where(allowed, scores, -np.inf)
  choice = np.argmax(masked, axis=-1)
  choice = np.where(allowed.any(axis=-1), choice, IGNORE_LABEL)
  return np.where(coarse != IGNORE_LABEL, coarse, choice).astype(np.uint8)


def constrained_model(coarse: np.ndarray, probs: np.ndarray,
                      margin: float = DEFAULT_MARGIN) -> np.ndarray:
  """The model's most probable class among the classes within reach.

  Args:
    coarse: (H, W) int coarse labels, 255 = unlabelled.
    probs: (H, W, C) the model's softmax probabilities.
    margin: see `reachable_classes`.

  Returns:
    (H, W) uint8; 255 only where the image has no labelled pixel.
  """
  probs = np.asarray(probs, np.float32)
  allowed = reachable_classes(coarse, probs.shape[-1], margin)
  return _argmax_among(probs, allowed, coarse)


def label_votes(coarse: jax.Array, assignments: Sequence[jax.Array],
                num_classes: int, eps: float = 1e-6):
  """Coarse labels pooled through soft superpixels and decoded back.

  What `losses.slic_loss` does with colour, done with the labels: the
  one-hot coarse labels (unlabelled pixels count 0) and the labelled
  indicator are averaged over blocks down to the finest assignment grid,
  downsampled through every assignment (finest first) and upsampled back
  (`superpixels.reconstruct`), then resized bilinearly to the image. A band
  pixel thus hears the labels of the learned superpixels it belongs to.

  Args:
    coarse: (B, H, W) int coarse labels, 255 = unlabelled.
    assignments: finest first, e.g. [A_4, A_8] of shapes (B, H/4, W/4, 9)
      and (B, H/8, W/8, 9).
    num_classes: C (static).
    eps: guards the division where no label was heard.

  Returns:
    (votes, heard): votes (B, H, W, C) float32, the class shares of the
    labelled mass reaching each pixel (sum 1 where heard); heard (B, H, W)
    float32 in [0, 1], that labelled mass (0: no label reaches the pixel).
  """
  coarse = jnp.asarray(coarse, jnp.int32)
  b, h, w = coarse.shape
  hf, wf = assignments[0].shape[1:3]
  if h % hf or w % wf or h // hf != w // wf:
    raise ValueError(f"label_votes: image {h}x{w} is not a whole multiple of "
                     f"the finest assignment grid {hf}x{wf}.")
  s = h // hf
  labelled = (coarse != IGNORE_LABEL)[..., None].astype(jnp.float32)
  onehot = jax.nn.one_hot(coarse, num_classes, dtype=jnp.float32) * labelled
  x = jnp.concatenate([onehot, labelled], axis=-1)
  x = x.reshape(b, hf, s, wf, s, num_classes + 1).mean((2, 4))
  x = superpixels.reconstruct(x, assignments)
  x = jax.image.resize(x, (b, h, w, num_classes + 1), "bilinear")
  heard = jnp.clip(x[..., -1], 0.0, 1.0)
  votes = jnp.clip(x[..., :-1], 0.0, None)
  votes = votes / (votes.sum(-1, keepdims=True) + eps)
  return votes, heard


def superpixel_propagation(coarse: np.ndarray, votes: np.ndarray,
                           heard: np.ndarray,
                           min_heard: float = 1e-3) -> np.ndarray:
  """Band pixels take the class with most votes (`label_votes`).

  Args:
    coarse: (H, W) int coarse labels, 255 = unlabelled.
    votes: (H, W, C) from `label_votes` (one image).
    heard: (H, W) from `label_votes`.
    min_heard: pixels that hear less labelled mass stay 255.

  Returns:
    (H, W) uint8.
  """
  votes = np.asarray(votes)
  allowed = np.broadcast_to((np.asarray(heard) >= min_heard)[..., None],
                            votes.shape)
  return _argmax_among(votes, allowed, coarse)


def superpixel_constrained(coarse: np.ndarray, probs: np.ndarray,
                           votes: np.ndarray, margin: float = DEFAULT_MARGIN,
                           prior: float = DEFAULT_PRIOR) -> np.ndarray:
  """Model probabilities times learned-superpixel votes, within reach.

  The score of class c is `probs[c] * (votes[c] + prior)`: the superpixels
  sharpen the model where labels reach them, and `prior` keeps the model's
  say where they do not.

  Args:
    coarse: (H, W) int coarse labels, 255 = unlabelled.
    probs: (H, W, C) the model's softmax probabilities.
    votes: (H, W, C) from `label_votes` (one image).
    margin: see `reachable_classes`.
    prior: > 0.

  Returns:
    (H, W) uint8; 255 only where the image has no labelled pixel.
  """
  probs = np.asarray(probs, np.float32)
  allowed = reachable_classes(coarse, probs.shape[-1], margin)
  return _argmax_among(probs * (np.asarray(votes) + prior), allowed, coarse)


def slic_sure(coarse: np.ndarray, segments: np.ndarray,
              min_share: float = DEFAULT_MIN_SHARE) -> np.ndarray:
  """Where SLIC propagation is sure: (H, W) bool.

  A superpixel is sure when all its labelled pixels carry one class and they
  cover at least `min_share` of its pixels.

  Args:
    coarse: (H, W) int coarse labels, 255 = unlabelled.
    segments: (H, W) int SLIC ids (< 0: no superpixel, never sure).
    min_share: in [0, 1].
  """
  coarse, seg = np.asarray(coarse).ravel(), np.asarray(segments).ravel()
  valid = seg >= 0
  n = int(seg.max(initial=-1)) + 1
  if n == 0:
    return np.zeros(np.shape(segments), bool)
  known = valid & (coarse != IGNORE_LABEL)
  size = np.bincount(seg[valid], minlength=n)
  count = np.bincount(seg[known], minlength=n)
  low = np.full(n, np.iinfo(np.int64).max)
  high = np.full(n, -1)
  np.minimum.at(low, seg[known], coarse[known].astype(np.int64))
  np.maximum.at(high, seg[known], coarse[known].astype(np.int64))
  sure = (count > 0) & (low == high) & (count >= min_share * np.maximum(size,
                                                                        1))
  return np.where(valid, sure[np.maximum(seg, 0)], False).reshape(
      np.shape(segments))


def slic_sure_constrained(coarse: np.ndarray, segments: np.ndarray,
                          probs: np.ndarray, margin: float = DEFAULT_MARGIN,
                          min_share: float = DEFAULT_MIN_SHARE) -> np.ndarray:
  """SLIC propagation where it is sure (`slic_sure`), else
  `constrained_model`.

  Args:
    coarse: (H, W) int coarse labels, 255 = unlabelled.
    segments: (H, W) int SLIC ids.
    probs: (H, W, C) the model's softmax probabilities.
    margin, min_share: see `reachable_classes`, `slic_sure`.

  Returns:
    (H, W) uint8.
  """
  sure = slic_sure(coarse, segments, min_share)
  return np.where(sure, slic_propagation(coarse, segments),
                  constrained_model(coarse, probs, margin)).astype(np.uint8)


def all_fills(coarse: np.ndarray, segments: np.ndarray, probs: np.ndarray,
              votes: np.ndarray, heard: np.ndarray,
              margin: float = DEFAULT_MARGIN,
              min_confidence: float = 0.0) -> dict:
  """Every fill of `FILLS` for one image: {name: (H, W) uint8}.

  The same as calling each fill with these arguments (shared parts are
  computed once).

  Args:
    coarse: (H, W) int coarse labels, 255 = unlabelled.
    segments: (H, W) int SLIC ids.
    probs: (H, W, C) the model's softmax probabilities.
    votes, heard: `label_votes` of this image ((H, W, C), (H, W)).
    margin: see `reachable_classes`.
    min_confidence: of `fill_with_model` (the `model` fill only).
  """
  coarse = np.asarray(coarse)
  probs = np.asarray(probs, np.float32)
  near = nearest_labelled(coarse)
  slic = slic_propagation(coarse, segments)
  allowed = reachable_classes(coarse, probs.shape[-1], margin)
  constrained = _argmax_among(probs, allowed, coarse)
  return {
      "nearest_labelled": near,
      "slic_propagation": slic,
      "slic_then_nearest": np.where(slic == IGNORE_LABEL, near,
                                    slic).astype(np.uint8),
      "model": fill_with_model(coarse, probs.argmax(-1), probs.max(-1),
                               min_confidence),
      "constrained": constrained,
      "superpixel": superpixel_propagation(coarse, votes, heard),
      "superpixel_constrained": _argmax_among(
          probs * (np.asarray(votes) + DEFAULT_PRIOR), allowed, coarse),
      "slic_sure_constrained": np.where(
          slic_sure(coarse, segments, DEFAULT_MIN_SHARE), slic,
                   constrained).astype(np.uint8),
  }
