"""From coarse annotations to dense masks: `--mode=refine` and its baselines.

A coarse label leaves a band around class borders unlabelled (255). Refining
it gives every unlabelled pixel a class and keeps every labelled one:

* the model (`fill_with_model`): the trained model's prediction, or 255 where
  its confidence (the largest softmax probability) is below `min_confidence`
  (0, the default, fills every pixel);
* SLIC propagation (`slic_propagation`): the majority coarse label of the
  pixel's SLIC superpixel, the training-label option `slic_propagated`
  (`label_ops.propagate_labels`); superpixels without a labelled pixel stay
  255;
* the nearest labelled pixel (`nearest_labelled`): the label of the closest
  labelled pixel (Euclidean; ties as scipy's `distance_transform_edt`).

`mask_metrics` scores refined masks against fine labels with the project's
metric functions (`coarseseg_jax.metrics`). `run` refines a prepared split
(`refine_inputs`: its stored coarse labels, fine labels and SLIC maps) or a
folder of images with coarse label PNGs matched by stem (SLIC
maps computed with the config's SLIC settings), and writes `<stem>.png`
(uint8 class ids at the image's size, the model's refinement) and
`<stem>_overlay.png` as `--mode=predict` does, plus the report of
`refine_report` (`refine_<split>.json` and `.csv`).
Inputs are checked before anything is computed; everything is written into a
temporary folder beside `output_dir` and moved into place at the end, so an
error leaves no partial output. Local output folders only; one process.
"""

import functools
import logging
import os
from typing import Dict, Iterator, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage
import tensorflow as tf
import tqdm

from coarseseg_jax import config_validation
from coarseseg_jax import evaluate
from coarseseg_jax import figures as figures_lib
from coarseseg_jax import inference
from coarseseg_jax import metrics
from coarseseg_jax import refine_inputs
from coarseseg_jax import refine_report
from coarseseg_jax import state as state_lib
from coarseseg_jax.datasets import items
from coarseseg_jax.datasets import label_ops
from coarseseg_jax.labels import IGNORE_LABEL

log = logging.getLogger(__name__)
METHODS = refine_report.METHODS


# --------------------------------------------------------- pure functions --
def fill_with_model(coarse: np.ndarray, pred: np.ndarray,
                    confidence: np.ndarray,
                    min_confidence: float = 0.0) -> np.ndarray:
  """The fill rule of `--mode=refine`.

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
def _mask_metrics_fn(num_classes: int):
  return jax.jit(functools.partial(mask_metrics, num_classes=num_classes))


# ------------------------------------------------------------------ driver --
def _predicted(examples: Iterator[refine_inputs.Example], model, variables,
               batch_size: int) -> Iterator[
                   Tuple[refine_inputs.Example, np.ndarray, np.ndarray]]:
  """(example, pred, confidence) at each image's size; images are batched by
  `inference.bucket_shape` (padded bottom/right), as `--mode=predict` does."""
  predict = evaluate.make_predict_fn(model)

  @jax.jit
  def pred_confidence(variables, images):
    pred, logits, _ = predict(variables, images)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    return pred, jnp.max(probs, axis=-1)

  pending: Dict[Tuple[int, int], List[refine_inputs.Example]] = {}

  def flush(shape):
    group = pending.pop(shape)
    batch = np.zeros((batch_size,) + shape + (3,), np.float32)
    for i, ex in enumerate(group):
      batch[i, :ex.image.shape[0], :ex.image.shape[1]] = ex.image / 255.0
    pred, conf = jax.device_get(pred_confidence(variables, batch))
    for i, ex in enumerate(group):
      h, w = ex.image.shape[:2]
      yield ex, pred[i, :h, :w], conf[i, :h, :w]

  for ex in examples:
    shape = inference.bucket_shape(*ex.image.shape[:2])
    pending.setdefault(shape, []).append(ex)
    if len(pending[shape]) == batch_size:
      yield from flush(shape)
  for shape in list(pending):
    yield from flush(shape)


def _figures(masks: Dict[str, np.ndarray], ex: refine_inputs.Example,
             num_classes: int) -> Dict[str, Dict[str, np.ndarray]]:
  """`mask_metrics` of each method's mask, in a canvas of the bucket shape
  (so images of many sizes compile once per bucket)."""
  h, w = ex.coarse.shape
  hb, wb = inference.bucket_shape(h, w)
  pad = lambda x: np.pad(x, ((0, hb - h), (0, wb - w)),
                         constant_values=IGNORE_LABEL)[None]
  fn = _mask_metrics_fn(num_classes)
  size = np.array([[h, w]], np.int32)
  out = {}
  for method, mask in masks.items():
    figures = jax.device_get(fn(pad(mask), pad(ex.coarse), pad(ex.fine),
                                size=size))
    out[method] = {k: np.asarray(v)[0] for k, v in figures.items()}
  return out


def run(config, workdir: str, output_dir: str, *, split: Optional[str] = None,
        input_dir: Optional[str] = None, coarse_dir: Optional[str] = None,
        min_confidence: float = 0.0) -> dict:
  """`--mode=refine`: refines a prepared `split`, or the images of
  `input_dir` with the coarse PNGs of `coarse_dir` (see the module
  docstring). Returns the report (`refine_report.summarize`), with `line`,
  the one-line summary."""
  if config.model.num_classes is None:  # A config.json not written by train.
    config_validation.resolve_num_classes(config)
  num_classes = int(config.model.num_classes)
  if input_dir is not None:
    name = "folder"
    pairs = refine_inputs.folder_pairs(input_dir, coarse_dir, num_classes)
    count, examples, class_names = (len(pairs),
                                    refine_inputs.folder_examples(config, pairs), None)
    source = {"input_dir": input_dir, "coarse_dir": coarse_dir}
  else:
    name = split
    count, examples, class_names = refine_inputs.split_examples(
        config, split)
    source = {"split": split, "dataset": config.data.dataset}
  with refine_report.staged_output(output_dir) as tmp:
    state, model, _, step = state_lib.restore_for_inference(config, workdir)
    acc = refine_report.Accumulator(METHODS, num_classes, class_names)
    for ex, pred, conf in tqdm.tqdm(
        _predicted(examples, model, state_lib.variables(state),
                   int(config.data.eval_batch_size)),
        total=count, desc="refine", unit="image", mininterval=2):
      masks = {"model": fill_with_model(ex.coarse, pred, conf,
                                        min_confidence),
               "slic_propagation": slic_propagation(ex.coarse, ex.slic),
               "nearest_labelled": nearest_labelled(ex.coarse)}
      with open(os.path.join(tmp, f"{ex.stem}.png"), "wb") as f:
        f.write(items.encode_png(masks["model"]))
      overlay = 0.5 * ex.image / 255.0 + 0.5 * figures_lib.colorize(
          masks["model"], num_classes)
      with open(os.path.join(tmp, f"{ex.stem}_overlay.png"), "wb") as f:
        f.write(items.encode_png((np.clip(overlay, 0, 1) * 255).astype(
            np.uint8)))
      acc.add(ex.stem, ex.source, ex.coarse, ex.fine, masks,
              None if ex.fine is None else _figures(masks, ex, num_classes))
    report = acc.summarize(
        name=name, workdir=workdir, step=step, source=source,
        min_confidence=min_confidence)
    refine_report.write(report, acc.rows(), tmp, name)
  report["line"] = refine_report.summary_line(report, output_dir)
  return report
