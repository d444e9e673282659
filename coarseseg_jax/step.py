"""The train step: one jit-compiled optimisation step, pure.

`train_step(state, batch, settings)` is what the loop in `train.py` runs and
what `memory` measures; `make_train_step(config)` jits it with the config's
loss settings (`losses.LossSettings`), the state donated.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax

from coarseseg_jax import assignment_stats
from coarseseg_jax import losses
from coarseseg_jax import state as state_lib
from coarseseg_jax.labels import IGNORE_LABEL
from coarseseg_jax.models import hcfcn


def train_step(state: state_lib.TrainState, batch: dict,
               settings: losses.LossSettings):
  """One optimisation step. Pure: `(state, batch) -> (state, metrics)`.

  Args:
    state: the replicated train state.
    batch: `image` (B, H, W, 3) float32 in [0, 1], `label` (B, H, W) int32
      training labels (255 = ignored), `slic` (B, H, W) int32 (used when
      kappa > 0).
    settings: the loss (`losses.LossSettings`, static under jit);
      lmbda = kappa = 0 is plain cross-entropy.
  Returns:
    the new state and a dict of scalar metrics: the loss and its terms,
    the training accuracy, the gradient norm and, for models with learned
    superpixels, the assignments' diagnostics (`assignment_stats.summary`)
    and learnable temperatures / parent biases.
  """
  dropout_rng = jax.random.fold_in(state.rng, state.step)

  def loss_fn(params):
    (logits, assignments), new_vars = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats}, batch["image"],
        train=True, rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
    total, terms = settings.loss(logits, batch["label"], batch["image"],
                                 assignments, slic=batch["slic"],
                                 return_terms=True)
    labelled = batch["label"] != IGNORE_LABEL
    correct = (jnp.argmax(logits, -1) == batch["label"]) & labelled
    terms["accuracy"] = correct.sum() / jnp.maximum(labelled.sum(), 1)
    if assignments:
      terms.update(assignment_stats.summary(
          [jax.lax.stop_gradient(a) for a in assignments]))
    return total, (terms, new_vars.get("batch_stats", {}))

  (loss, (terms, batch_stats)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  updated = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  # A step is rejected when its loss, or the parameters it would produce, are
  # not finite (the latter catches a NaN learning rate or overflowing update).
  finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(updated.params))
  keep = lambda new, old: jax.tree.map(
      lambda a, b: jnp.where(finite, a, b), new, old)
  first_bad = jnp.where((state.nonfinite_step < 0) & ~finite, state.step,
                        state.nonfinite_step)
  new_state = updated.replace(
      params=keep(updated.params, state.params),
      opt_state=keep(updated.opt_state, state.opt_state),
      batch_stats=keep(updated.batch_stats, state.batch_stats),
      nonfinite_step=first_bad)
  metrics = {"loss": loss, **terms, "grad_norm": optax.tree.norm(grads),
             **hcfcn.assign_parameters(state.params)}
  return new_state, metrics


def make_train_step(config: ml_collections.ConfigDict):
  """The jitted `train_step` of `config` (its `losses.LossSettings`), the
  state (argument 0) donated: what training runs and `memory` measures.

  One jitted function per settings in a process: a run with the same
  settings, model and optimizer (`models.create_model` and
  `state.create_optimizer` return one object per config) and shapes reuses
  the programs an earlier run traced and compiled (the experiments' seeds).
  """
  return _jitted_train_step(losses.LossSettings.from_config(config))


@functools.lru_cache(maxsize=16)
def _jitted_train_step(settings: losses.LossSettings):
  return jax.jit(functools.partial(train_step, settings=settings),
                 donate_argnums=0)
