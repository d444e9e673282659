"""Evaluation on fine labels: a jit-compiled eval step and per-image metrics.

`make_eval_step` builds the pure, sharded part (forward pass, prediction,
pixel accuracy, confusion matrix, ASA, hard superpixels, loss on the training
labels). `evaluate` runs it over a split and computes the boundary metrics per
image on the host, on each image cropped back to its original size (the
paper's boundary recall depends on the image diagonal), then aggregates mean
and std over images. Images padded into the last batch (mask 0) are dropped,
so every image of the split counts exactly once.
"""

import functools
from typing import Any, Callable, Dict, Iterable, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from coarseseg_jax import losses
from coarseseg_jax import metrics
from coarseseg_jax import sharding
from coarseseg_jax import superpixels

# Per-image figures of results.json: name -> key in the per-image table.
PER_IMAGE_METRICS = ("accuracy", "boundary_recall", "boundary_f1", "asa",
                     "miou", "superpixel_asa", "slic_asa")
_HOST_KEYS = ("mask", "height", "width", "label_fine", "label", "slic")


def make_eval_step(model, num_classes: int) -> Callable:
  """Returns `eval_step(variables, batch) -> dict of per-image arrays`.

  Batch keys used: `image` (B, H, W, 3) float32, `label_fine` and `label`
  (B, H, W) int32 (255 = ignored, padding included). Outputs: `pred` (B, H, W),
  `accuracy` (B,), `confusion` (B, C, C), `loss` and `loss_pixels` (B,) (mean
  cross-entropy on the training labels and their count), and for models with
  superpixel upsampling `asa` (B,) and `superpixels` (B, H/4, W/4).
  """

  def eval_step(variables, batch):
    logits, assignments = model.apply(variables, batch["image"], train=False)
    pred = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    fine = batch["label_fine"]
    per_image_ce = jax.vmap(
        lambda l, y: losses.cross_entropy(l[None], y[None]))(
            logits, batch["label"])
    out = {
        "pred": pred,
        "accuracy": metrics.pixel_accuracy(pred, fine),
        "confusion": metrics.confusion_matrix(pred, fine, num_classes),
        "loss": per_image_ce,
        "loss_pixels": jnp.sum(batch["label"] != 255, axis=(1, 2)),
    }
    if assignments:
      out["asa"] = metrics.achievable_segmentation_accuracy(
          assignments, fine, num_classes)
      out["superpixels"] = superpixels.hard_superpixels(assignments)
    return out

  return eval_step


@functools.lru_cache(maxsize=None)
def _jitted(name: str, **static):
  fn = getattr(metrics, name)
  return jax.jit(functools.partial(fn, **static)) if static else jax.jit(fn)


def _segment_asa(segments, label, num_segments):
  # Round the histogram size up to a power of two: few shapes, few compiles.
  size = int(2 ** np.ceil(np.log2(max(int(num_segments), 2))))
  return float(_jitted("segment_asa", num_segments=size)(
      segments[None], label[None])[0])


def _host_metrics(out: Dict[str, np.ndarray], i: int, full: bool) -> dict:
  """The per-image figures of image `i` of a gathered batch."""
  h, w = int(out["height"][i]), int(out["width"][i])
  pred = out["pred"][i, :h, :w][None]
  fine = out["label_fine"][i, :h, :w][None]
  row = {
      "accuracy": float(out["accuracy"][i]),
      "miou": float(metrics.mean_iou(out["confusion"][i])),
      "boundary_recall": float(_jitted("boundary_recall")(pred, fine)[0]),
      "boundary_f1": float(
          _jitted("boundary_precision_recall_f1")(pred, fine)[2][0]),
      "asa": float(out["asa"][i]) if "asa" in out else float("nan"),
  }
  if full:
    if "superpixels" in out:
      sp = out["superpixels"][i]
      row["superpixel_asa"] = _segment_asa(
          sp, out["label_fine"][i], sp.max() + 1)
    slic = out["slic"][i, :h, :w]
    if slic.max() >= 0:
      row["slic_asa"] = _segment_asa(slic, fine[0], slic.max() + 1)
  return row


def evaluate(eval_step: Callable, variables: Any, batches: Iterable[dict],
             mesh: jax.sharding.Mesh, *, full: bool = False,
             num_samples: int = 0):
  """Evaluates a model over a finite iterator of eval batches.

  Args:
    eval_step: the jitted function from `make_eval_step`.
    variables: model variables, replicated over `mesh`.
    batches: process-local eval batches from
      `input_pipeline.create_eval_iterator`.
    mesh: the device mesh; batches are sharded over its `data` axis.
    full: also compute the hard ASA of the learned superpixels and of the
      SLIC maps (slower; for final results).
    num_samples: keep this many images (with predictions) for figures.

  Returns:
    `(summary, rows, samples)`: `summary` maps `<metric>_mean`/`_std` to
    floats plus `miou_dataset`, `loss` and `num_images`; `rows` is the list of
    per-image dicts; `samples` a list of dicts of NumPy arrays.
  """
  rows: List[dict] = []
  samples: List[dict] = []
  confusion = None
  loss_sum, loss_pixels = 0.0, 0
  for batch in batches:
    global_batch = sharding.shard_batch(batch, mesh)
    out = eval_step(variables, global_batch)
    out.update({k: global_batch[k] for k in _HOST_KEYS if k in global_batch})
    if "image" in global_batch and len(samples) < num_samples:
      out["image"] = global_batch["image"]
    out = multihost_utils.process_allgather(out, tiled=True)
    for i in np.flatnonzero(out["mask"] > 0):
      rows.append(_host_metrics(out, i, full))
      cm = out["confusion"][i].astype(np.int64)
      confusion = cm if confusion is None else confusion + cm
      loss_sum += float(out["loss"][i]) * int(out["loss_pixels"][i])
      loss_pixels += int(out["loss_pixels"][i])
      if len(samples) < num_samples and "image" in out:
        samples.append({k: np.asarray(v[i]) for k, v in out.items()
                        if k not in ("confusion",) and np.ndim(v) > 0})
  return summarize(rows, confusion, loss_sum, loss_pixels), rows, samples


def summarize(rows: List[dict], confusion: Optional[np.ndarray],
              loss_sum: float, loss_pixels: int) -> Dict[str, float]:
  """Mean and std over images of every per-image metric, plus dataset mIoU."""
  summary: Dict[str, float] = {"num_images": len(rows)}
  for name in PER_IMAGE_METRICS:
    values = np.array([r.get(name, np.nan) for r in rows], np.float64)
    if values.size and np.isfinite(values).any():
      summary[f"{name}_mean"] = float(np.nanmean(values))
      summary[f"{name}_std"] = float(np.nanstd(values))
  if confusion is not None:
    summary["miou_dataset"] = float(metrics.mean_iou(confusion))
  summary["loss"] = loss_sum / max(loss_pixels, 1)
  return summary
