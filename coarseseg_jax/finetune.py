"""Fine-tuning on train + validation: when it stops (`train.finetune_rule`).

Both rules fix a target loss when fine-tuning starts and stop at the end of
the first fine-tuning epoch whose validation loss is no higher, after at
most `train.finetune_max_epochs` epochs; the state tested is the last one.

* ``project``: the validation cross-entropy (against
  `data.validation_labels`, in the validation pass) against the mean
  training cross-entropy of the last training epoch.
* ``authors`` (their `train_eval.finetune`): the validation loss with the
  regularizer (cross-entropy + lmbda * SLIC loss; in the validation pass,
  `train.validation_mode`) against the same loss on the train split, in eval
  mode (BN running averages, no dropout), of the state fine-tuning starts
  from. Their loop is ``while epoch < max_epochs and val_loss >
  prev_train_loss`` (the loss starting above the target): `stops` is its
  test and `epochs_run` replays it on a sequence of validation losses.

Where this differs from their code: a split's loss is the mean over its
images of each image's loss (theirs: the mean over batches of each batch's
loss; the same when batches are full and images equally labelled), and the
train split is read as evaluation reads it (whole images, or the
`data.eval_center_crop`; theirs: the training loader's random crops and
flips, the same at SUIM's 512 x 512).
"""

import functools
from typing import Callable, Sequence

import jax
from jax.experimental import multihost_utils
import numpy as np

from coarseseg_jax import evaluate
from coarseseg_jax import losses
from coarseseg_jax import sharding

RULES = ("project", "authors")


def stops(validation_loss: float, target: float) -> bool:
  """Whether fine-tuning stops after an epoch with this validation loss."""
  return validation_loss <= target


def epochs_run(target: float, validation_losses: Sequence[float],
               max_epochs: int) -> int:
  """How many epochs fine-tuning runs when epoch k ends with validation loss
  ``validation_losses[k]`` (at least `max_epochs` values, or a stop among
  them)."""
  for epoch, loss in enumerate(validation_losses[:max_epochs], start=1):
    if stops(loss, target):
      return epoch
  if len(validation_losses) < max_epochs:
    raise ValueError(f"{len(validation_losses)} losses do not reach a stop "
                     f"or max_epochs={max_epochs}.")
  return max_epochs


def make_loss_step(model, settings: losses.LossSettings,
                   train_mode: bool = False) -> Callable:
  """`loss_step(variables, batch) -> (B,)` each image's training loss.

  `batch`: an eval batch (`image` (B, H, W, 3) float32 in [0, 1], `label`
  (B, H, W) int32, 255 = unlabelled, `slic` (B, H, W) int32). The loss is
  `settings.loss` (cross-entropy + regularizer terms) of each image alone,
  from one forward pass of the batch (`evaluate.make_predict_fn`: eval mode,
  or with `train_mode` the training pass as validation runs it).
  """
  predict = evaluate.make_predict_fn(model, train_mode)

  def loss_step(variables, batch):
    _, logits, assignments = predict(variables, batch["image"])

    def one(logit, label, image, slic, *assign):
      return settings.loss(logit[None], label[None], image[None],
                           [a[None] for a in assign], slic=slic[None])

    return jax.vmap(one)(logits, batch["label"], batch["image"],
                         batch["slic"], *assignments)

  return loss_step


def split_loss(loss_step: Callable, variables, batches, mesh) -> float:
  """The mean over the images of `batches` (eval batches of a split,
  `input_pipeline.create_eval_iterator`; padding examples left out) of
  `loss_step`'s per-image loss, over all processes."""
  total, count = 0.0, 0
  for batch in batches:
    global_batch = sharding.shard_batch(batch, mesh)
    out = multihost_utils.process_allgather(
        {"loss": loss_step(variables, global_batch),
         "mask": global_batch["mask"]}, tiled=True)
    keep = np.asarray(out["mask"]) > 0
    total += float(np.sum(np.asarray(out["loss"], np.float64)[keep]))
    count += int(keep.sum())
  return total / max(count, 1)


@functools.lru_cache(maxsize=8)
def jit_loss_steps(model, settings: losses.LossSettings) -> dict:
  """`make_loss_step` jitted for both passes: {False: eval, True: train};
  one pair per (model, settings) in a process (do not mutate the dict)."""
  return {mode: jax.jit(make_loss_step(model, settings, mode))
          for mode in (False, True)}

