"""Fine-tuning's stop rules (coarseseg_jax/finetune.py), paper mode's
fine-tuning on tiny data, and the authors' rule against their loop."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coarseseg_jax import config_validation
from coarseseg_jax import finetune
from coarseseg_jax import losses
from coarseseg_jax import models
from coarseseg_jax import train

import helpers


def authors_finetune_epochs(prev_train_loss, val_losses, max_epochs):
  """Their `train_eval.finetune` loop, with epoch k's validation loss
  scripted as `val_losses[k]` (the training inside it left out)."""
  epoch = 0
  val_loss = prev_train_loss + 1
  while (epoch < max_epochs) and val_loss > prev_train_loss:
    val_loss = val_losses[epoch]
    epoch += 1
  return epoch


SCRIPTS = [  # (target, validation losses, max epochs)
    (1.0, [1.3, 1.1, 0.8, 0.5, 0.4], 5),   # Stops at the first <= target.
    (1.0, [1.0, 2.0], 2),                  # Equal stops (theirs: not >).
    (1.0, [1.5, 1.4, 1.3], 3),             # Never: max_epochs.
    (0.5, [0.9, 0.7, 0.6, 0.4], 3),        # The cap before the drop.
    (2.0, [1.9], 15),                      # First epoch.
]


@pytest.mark.parametrize("target,val_losses,max_epochs", SCRIPTS)
def test_stop_rule_is_the_authors_loop(target, val_losses, max_epochs):
  assert finetune.epochs_run(target, val_losses, max_epochs) == (
      authors_finetune_epochs(target, val_losses, max_epochs))


def test_epochs_run_needs_enough_losses():
  with pytest.raises(ValueError, match="max_epochs=3"):
    finetune.epochs_run(0.1, [0.5, 0.4], 3)


@pytest.mark.slow  # 39 s on 2 cores (compiles or runs more).
def test_loss_step_is_each_images_loss_with_the_regularizer():
  config = helpers.tiny_config(arg="paper")
  config.model.num_classes = 4
  model = models.create_model(config.model)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.random((3, 32, 32, 3)), jnp.float32)
  labels = rng.integers(0, 4, (3, 32, 32)).astype(np.int32)
  labels[1, :20] = 255
  labels = jnp.asarray(labels)
  variables = model.init({"params": jax.random.key(0)}, images)
  settings = losses.LossSettings(lmbda=0.5, slic_resize="bilinear",
                                 slic_position_norm="stride_squared")
  batch = {"image": images, "label": labels,
           "slic": jnp.zeros((3, 32, 32), jnp.int32)}
  got = finetune.make_loss_step(model, settings)(variables, batch)
  logits, assignments = model.apply(variables, images, train=False)
  for i in range(3):
    want = losses.regularized_loss(
        logits[i:i + 1], labels[i:i + 1], images[i:i + 1],
        [a[i:i + 1] for a in assignments], lmbda=0.5, m=0.0,
        slic_resize="bilinear", slic_position_norm="stride_squared")
    np.testing.assert_allclose(got[i], want, rtol=1e-5)
  assert float(got[0]) > float(losses.cross_entropy(logits[:1], labels[:1]))


@pytest.mark.slow
def test_paper_mode_finetunes_with_the_authors_rule(tiny_data_dir, tmp_path,
                                                    monkeypatch):
  """Paper mode on tiny data: trains, fine-tunes on train + validation and
  stops where the authors' loop stops on the scripted validation losses; the
  losses it would compare are computed (finite) on the right splits."""
  config = helpers.tiny_config(tiny_data_dir, arg="paper")
  assert (config.train.finetune, config.train.finetune_rule,
          config.data.validation_labels) == (True, "authors", "coarse")
  config.train.kappa = 0.0  # tiny_config's; not the authors'.
  config.train.num_epochs = 1
  config.train.finetune_max_epochs = 4
  target, scripted = 1.0, [1.3, 1.1, 0.8, 0.5]
  calls, real = [], []
  measured = train._Run.loss_of_split  # pylint: disable=protected-access

  def scripted_loss(run, state, split, targets, train_mode):
    real.append(measured(run, state, split, targets, train_mode))
    calls.append((split, targets, train_mode))
    return target if len(calls) == 1 else scripted[len(calls) - 2]

  monkeypatch.setattr(train._Run, "loss_of_split", scripted_loss)  # pylint: disable=protected-access
  workdir = str(tmp_path / "paper")
  results = train.train_and_evaluate(config_validation.resolve(config), workdir)
  epochs = authors_finetune_epochs(target, scripted, 4)
  assert epochs == 3
  # The target: the train split in eval mode; then validation as validated.
  assert calls == [("train", "coarse", False)] + [
      ("validation", "coarse", True)] * epochs
  assert all(np.isfinite(real)) and min(real) > 0
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  ft_val = [r for r in records
            if r["split"] == "validation" and "finetune_loss" in r]
  assert [r["finetune_loss"] for r in ft_val] == scripted[:epochs]
  assert {r["finetune_target"] for r in ft_val} == {target}
  # 16 train images = 2 steps; train + validation = 20 = 2 steps per epoch.
  ft_steps = sorted(r["step"] for r in records if r["split"] == "finetune")
  assert ft_steps[-1] == 2 + 2 * epochs
  assert results["selected_step"] == 2 + 2 * epochs
