"""Evaluation on fine labels: the one evaluator of validation, test and eval.

(Every metric is computed against the batches' `label_fine`, which holds the
coarse labels when validation selects on them: `data.validation_labels`,
`input_pipeline.create_eval_iterator(targets=...)`.)

`make_eval_step` builds the pure, sharded part: the forward pass, the
prediction and every per-image figure (pixel accuracy, confusion matrix,
boundary recall and F1 at each image's own size and default radius, ASA of
the learned superpixels, the loss on the training labels). Eval batches hold
images of any size padded into one canvas (`input_pipeline`), and the
boundary metrics take each image's size (`coarseseg_jax.boundaries`), so a
split compiles the step once, whatever its image sizes.

`Evaluator.run` feeds it a split's batches, gathers the per-image figures on
the host (plus the SLIC maps' ASA, batched, for final results), drops the
images padded into the last batch (mask 0), so every image of the split
counts exactly once, and summarises: mean and std over images, the dataset's
confusion matrix, mIoU, and per-class IoU and accuracy keyed by class name.
`METRICS` is the one list of per-image metric names (`config.train.
select_metric` is validated against `SELECTABLE`).

`evaluate_checkpoint` is `--mode=eval`: a workdir's checkpoint (restored as
`predictor` restores it, `state.restore_for_inference`) on a split.
"""

import dataclasses
import functools
from typing import (Any, Callable, Dict, Iterable, List, Optional, Sequence,
                    Tuple)

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
import tqdm

from coarseseg_jax import assignment_stats
from coarseseg_jax import datasets
from coarseseg_jax import filesystem
from coarseseg_jax import interruption
from coarseseg_jax import losses
from coarseseg_jax import metrics
from coarseseg_jax import sharding
from coarseseg_jax import state as state_lib
from coarseseg_jax import superpixels
from coarseseg_jax.labels import IGNORE_LABEL

# Per-image metrics of every evaluation, in table order (superpixel_asa: the
# hard ASA of the learned superpixels).
METRICS = ("accuracy", "boundary_recall", "boundary_f1", "asa", "miou",
           "superpixel_asa")
# Only in final evaluations (`full=True`): the hard ASA of the precomputed
# SLIC maps (computed on the host).
FULL_METRICS = ("slic_asa",)
# Diagnostics of the learned assignments (`assignment_stats.per_image`, over
# the whole canvas of padded images).
DIAGNOSTICS = tuple(f"a{s}_{name}" for s in (4, 8)
                    for name in ("entropy", "parent_share", "starved_cells"))
PER_IMAGE_METRICS = METRICS + FULL_METRICS + DIAGNOSTICS
# Validation metrics that can select the best checkpoint.
SELECTABLE = METRICS
_HOST_KEYS = ("mask", "height", "width", "label_fine", "label", "slic")


def make_predict_fn(model, train_mode: bool = False) -> Callable:
  """`predict(variables, images) -> (pred, logits, assignments)`.

  `images` (B, H, W, 3) float32 in [0, 1], H and W multiples of 16; `pred`
  (B, H, W) int32 class ids, `logits` float32 (B, H, W, C), `assignments`
  the model's soft superpixels (finest first; empty for models without).
  `train_mode`: the forward pass of training (BN batch statistics, dropout
  from a fixed key), as the authors' code validates
  (`config.train.validation_mode = "train"`); the updated BN statistics are
  discarded.
  """

  def predict(variables, images):
    if train_mode:
      (logits, assignments), _ = model.apply(
          variables, images, train=True, mutable=["batch_stats"],
          rngs={"dropout": jax.random.key(0)})
    else:
      logits, assignments = model.apply(variables, images, train=False)
    return (jnp.argmax(logits, axis=-1).astype(jnp.int32), logits,
            assignments)

  return predict


def make_eval_step(model, num_classes: int,
                   train_mode: bool = False) -> Callable:
  """Returns `eval_step(variables, batch) -> dict of per-image arrays`.

  Batch keys used: `image` (B, H, W, 3) float32, `label_fine` and `label`
  (B, H, W) int32 (255 = ignored, padding included), `height`, `width` (B,)
  int32 (each image's size in the canvas). Outputs: `pred` (B, H, W),
  `accuracy`, `boundary_recall`, `boundary_f1`, `miou` (B,), `confusion`
  (B, C, C),
  `loss` and `loss_pixels` (B,) (mean cross-entropy on the training labels
  and their count); for models with superpixel upsampling `asa` and
  `superpixel_asa` (B,), `superpixels` (B, H/4, W/4) and the `DIAGNOSTICS`
  of the assignments (B,). `train_mode`: see `make_predict_fn`.
  """
  predict = make_predict_fn(model, train_mode)

  def eval_step(variables, batch):
    pred, logits, assignments = predict(variables, batch["image"])
    fine = batch["label_fine"]
    size = jnp.stack([batch["height"], batch["width"]], axis=-1)
    confusion = metrics.confusion_matrix(pred, fine, num_classes)
    per_image_ce = jax.vmap(
        lambda l, y: losses.cross_entropy(l[None], y[None]))(
            logits, batch["label"])
    out = {
        "pred": pred,
        "accuracy": metrics.pixel_accuracy(pred, fine),
        "boundary_recall": metrics.boundary_recall(pred, fine, size=size),
        "boundary_f1": metrics.boundary_precision_recall_f1(
            pred, fine, size=size)[2],
        "confusion": confusion,
        "miou": metrics.mean_iou(confusion),
        "loss": per_image_ce,
        "loss_pixels": jnp.sum(batch["label"] != IGNORE_LABEL, axis=(1, 2)),
    }
    if assignments:
      out["asa"] = metrics.achievable_segmentation_accuracy(
          assignments, fine, num_classes)
      out["superpixels"] = superpixels.hard_superpixels(assignments)
      h, w = assignments[-1].shape[1:3]  # ids < cells of the coarsest grid
      out["superpixel_asa"] = metrics.segment_asa(
          out["superpixels"], fine, num_segments=(h // 2) * (w // 2),
          num_classes=num_classes)
      image_h = batch["image"].shape[1]
      out.update(assignment_stats.per_image(
          assignments, [image_h // a.shape[1] for a in assignments]))
    return out

  return eval_step


@functools.lru_cache(maxsize=32)
def _jitted_eval_step(model, num_classes: int, train_mode: bool) -> Callable:
  """One jitted eval step per (model, C, mode) in a process: evaluators of
  equal models (`models.create_model`) reuse each other's programs."""
  return jax.jit(make_eval_step(model, num_classes, train_mode))


@functools.lru_cache(maxsize=None)
def _segment_asa_fn(num_segments: int, num_classes: int) -> Callable:
  return jax.jit(functools.partial(metrics.segment_asa,
                                   num_segments=num_segments,
                                   num_classes=num_classes))


def slic_asa(slic: np.ndarray, label: np.ndarray, num_classes: int
             ) -> np.ndarray:
  """Hard ASA of a batch of SLIC maps (B, H, W) (-1 = ignored): (B,).

  The histogram size is the batch's largest id rounded up to a power of two,
  so a split compiles a few times at most.
  """
  size = int(2 ** np.ceil(np.log2(max(int(slic.max()) + 1, 2))))
  return np.asarray(_segment_asa_fn(size, num_classes)(slic, label))


@dataclasses.dataclass
class EvalResult:
  """What an evaluation gives (`summary` goes to logs and results.json)."""
  summary: Dict[str, float]
  rows: List[dict]                   # Per-image metrics, split order.
  samples: List[Dict[str, np.ndarray]]  # A few images with predictions.
  confusion: Optional[np.ndarray]    # (C, C) int64, rows = true class.
  per_class: Dict[str, Dict[str, float]]  # Class name -> iou, accuracy.
  class_names: List[str] = dataclasses.field(default_factory=list)

  def to_json(self, name: str) -> Dict[str, Any]:
    """The result under ONE naming rule, for results.json (`name` = "test")
    and eval_<split>.json (`name` = the split): `<name>` (the summary),
    `<name>_per_class`, `<name>_confusion`, `<name>_per_image`,
    `class_names`. The samples (images) are not serialised."""
    return {name: self.summary, f"{name}_per_class": self.per_class,
            f"{name}_confusion": (None if self.confusion is None
                                  else self.confusion.tolist()),
            f"{name}_per_image": self.rows, "class_names": self.class_names}


class Evaluator:
  """Evaluates model variables on eval batches (see the module docstring).

  Args:
    model: the flax module (`models.create_model`).
    num_classes: C.
    mesh: the device mesh; batches are sharded over its `data` axis.
    class_names: names of the C classes (default "0", "1", ...).
  """

  def __init__(self, model, num_classes: int, mesh: jax.sharding.Mesh,
               class_names: Optional[Sequence[str]] = None):
    self.num_classes, self.mesh = num_classes, mesh
    self.class_names = (list(class_names) if class_names
                        else [str(i) for i in range(num_classes)])
    self._steps = {mode: _jitted_eval_step(model, num_classes, mode)
                   for mode in (False, True)}

  def run(self, variables: Any, batches: Iterable[dict], *, full: bool = False,
          num_samples: int = 0, desc: Optional[str] = None,
          total: Optional[int] = None,
          should_stop: Optional[Callable[[], bool]] = None,
          train_mode: bool = False) -> EvalResult:
    """Evaluates over a finite iterator of process-local eval batches.

    Args:
      variables: model variables, replicated over the mesh.
      batches: from `input_pipeline.create_eval_iterator`.
      full: also the hard ASA of the SLIC maps (for final results).
      num_samples: keep this many images (with predictions) for figures.
      desc, total: a progress bar (process 0) with this title and length.
      should_stop: checked after every batch; when it returns True the
        evaluation ends with `interruption.EvalStopped` (single process).
      train_mode: the training forward pass (`make_predict_fn`): validation
        with ``config.train.validation_mode = "train"``.
    """
    step = self._steps[bool(train_mode)]
    rows: List[dict] = []
    samples: List[dict] = []
    confusion = np.zeros((self.num_classes,) * 2, np.int64)
    loss_sum, loss_pixels = 0.0, 0
    bar = tqdm.tqdm(batches, desc=desc, total=total, unit="batch",
                    mininterval=5, leave=False,
                    disable=desc is None or jax.process_index() != 0)
    for batch in bar:
      if should_stop is not None and should_stop():
        bar.close()
        raise interruption.EvalStopped()
      global_batch = sharding.shard_batch(batch, self.mesh)
      out = step(variables, global_batch)
      out.update({k: global_batch[k] for k in _HOST_KEYS
                  if k in global_batch})
      if len(samples) < num_samples:
        out["image"] = global_batch["image"]
      out = multihost_utils.process_allgather(out, tiled=True)
      if full and "slic" in out:
        out["slic_asa"] = slic_asa(out["slic"], out["label_fine"],
                                   self.num_classes)
      for i in np.flatnonzero(out["mask"] > 0):
        rows.append(self._row(out, i))
        confusion += out["confusion"][i].astype(np.int64)
        loss_sum += float(out["loss"][i]) * int(out["loss_pixels"][i])
        loss_pixels += int(out["loss_pixels"][i])
        if len(samples) < num_samples and "image" in out:
          samples.append({k: np.asarray(v[i]) for k, v in out.items()
                          if k != "confusion" and np.ndim(v) > 0})
    bar.close()
    per_class = per_class_results(confusion, self.class_names)
    summary = summarize(rows, confusion if rows else None, loss_sum,
                        loss_pixels)
    return EvalResult(summary, rows, samples, confusion, per_class,
                      list(self.class_names))

  def evaluate_split(self, variables: Any, builder, data_config, split: str,
                     *, targets: str = "fine", **kwargs) -> EvalResult:
    """THE evaluation of a prepared split (training's validation and test,
    `--mode=eval`): its eval batches (`input_pipeline.create_eval_iterator`
    with `data_config`, against its `targets` labels, fine | coarse) through
    `run` (`kwargs`: full, num_samples, should_stop, train_mode), with a
    progress bar titled by the split."""
    # Here, not at the top: the reports import this module without TF.
    from coarseseg_jax import input_pipeline  # pylint: disable=g-import-not-at-top
    size = data_config.eval_batch_size
    batches = input_pipeline.create_eval_iterator(builder, data_config, split,
                                                  size, targets=targets)
    total = input_pipeline.num_eval_batches(builder, split, size)
    return self.run(variables, batches, desc=split, total=total, **kwargs)

  def _row(self, out: Dict[str, np.ndarray], i: int) -> dict:
    row = {name: float(out[name][i]) for name in PER_IMAGE_METRICS
           if name in out}
    row.setdefault("asa", float("nan"))
    if "slic_asa" in row and not (out["slic"][i] >= 0).any():
      del row["slic_asa"]  # An image without SLIC map (e.g. padding).
    return row


def _class_rates(confusion: np.ndarray
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(IoU, accuracy, labelled pixels) per class of a (C, C) confusion
  matrix (rows = true class), in NumPy on the host: `metrics.mean_iou`'s
  per-class terms. NaN where the union (IoU) or the labelled pixels
  (accuracy) are empty."""
  cm = np.asarray(confusion, np.float64)
  inter = np.diag(cm)
  truth, predicted = cm.sum(axis=1), cm.sum(axis=0)
  union = truth + predicted - inter
  with np.errstate(invalid="ignore", divide="ignore"):
    iou = np.where(union > 0, inter / union, np.nan)
    acc = np.where(truth > 0, inter / truth, np.nan)
  return iou, acc, truth


def per_class_results(confusion: np.ndarray, class_names: Sequence[str]
                      ) -> Dict[str, Dict[str, float]]:
  """Per class: IoU, accuracy (recall of the class) and pixel count.

  NaN where the class has no pixel in the union (IoU) or none labelled
  (accuracy).
  """
  iou, acc, truth = _class_rates(confusion)
  return {name: {"iou": float(iou[c]), "accuracy": float(acc[c]),
                 "pixels": int(truth[c])}
          for c, name in enumerate(class_names)}


def summarize(rows: List[dict], confusion: Optional[np.ndarray],
              loss_sum: float, loss_pixels: int) -> Dict[str, float]:
  """Mean and std over images of every per-image metric, plus dataset mIoU."""
  summary: Dict[str, float] = {"num_images": len(rows)}
  for name in PER_IMAGE_METRICS:
    values = np.array([r.get(name, np.nan) for r in rows], np.float64)
    if values.size and np.isfinite(values).any():
      summary[f"{name}_mean"] = float(np.nanmean(values))
      summary[f"{name}_std"] = float(np.nanstd(values))
  if confusion is not None:  # metrics.mean_iou, in NumPy on the host.
    iou = _class_rates(confusion)[0]
    defined = ~np.isnan(iou)
    summary["miou_dataset"] = (float(np.mean(iou[defined])) if defined.any()
                               else float("nan"))
  summary["loss"] = loss_sum / max(loss_pixels, 1)
  return summary


def evaluate_checkpoint(resolved, workdir: str, split: str,
                        which: str = "best") -> dict:
  """`--mode=eval`: the checkpoint `which` (best | latest | pretrained) of
  `workdir` on `split`, every metric of the final test.

  `resolved` is `config_validation.resolve(config, "split")` (the workdir's
  config.json, or for `pretrained` the given config). The dataset is
  prepared first if it is not (e.g. on a new machine), as training does.
  Writes `workdir/eval_<split>.json`: `split`, `step` and the result under
  results.json's key names with the split's name for "test"
  (`EvalResult.to_json`); returns the same.
  """
  config = resolved.config
  builder = datasets.prepare_on_hosts(resolved.builder, config.data,
                                      config.model.num_classes)
  state, model, mesh, step = state_lib.restore_for_inference(config, workdir,
                                                            which)
  evaluator = Evaluator(model, config.model.num_classes, mesh,
                        datasets.class_names(builder))
  result = evaluator.evaluate_split(state_lib.variables(state), builder,
                                    config.data, split, full=True)
  out = {"split": split, "step": step, **result.to_json(split)}
  if jax.process_index() == 0:
    filesystem.write_json(filesystem.path(workdir) / f"eval_{split}.json",
                          out)
  return out
