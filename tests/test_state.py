"""The train state module: the optimizer's options, the phase state, and the
class-weighted cross-entropy."""

import dataclasses
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from coarseseg_jax import errors
from coarseseg_jax import losses
from coarseseg_jax import state as state_lib


def _train(**kw):
  t = dict(learning_rate=1e-2, optimizer="adam", weight_decay=0.0,
           lr_schedule="constant", warmup_steps=0, grad_clip_norm=None)
  t.update(kw)
  return ml_collections.ConfigDict(t)


def _updates(tx, grads_seq, params):
  opt = tx.init(params)
  out = []
  for g in grads_seq:
    u, opt = tx.update(g, opt, params)
    out.append(u)
  return out


GRADS = [{"w": jnp.array([100.0, -50.0, 3.0])},
         {"w": jnp.array([0.5, 0.1, -0.2])},
         {"w": jnp.array([-30.0, 2.0, 1.0])}]
PARAMS = {"w": jnp.zeros(3)}


def test_default_optimizer_is_the_papers_adam():
  got = _updates(state_lib.create_optimizer(_train()), GRADS, PARAMS)
  want = _updates(optax.adam(1e-2), GRADS, PARAMS)
  for g, w in zip(got, want):
    np.testing.assert_array_equal(g["w"], w["w"])


def test_gradient_clipping_is_adam_on_clipped_gradients():
  got = _updates(state_lib.create_optimizer(_train(grad_clip_norm=1.0)),
                 GRADS, PARAMS)
  def clip(g):
    norm = float(jnp.linalg.norm(g["w"]))
    return {"w": g["w"] * min(1.0, 1.0 / norm)}
  want = _updates(optax.adam(1e-2), [clip(g) for g in GRADS], PARAMS)
  plain = _updates(optax.adam(1e-2), GRADS, PARAMS)
  for g, w, p in zip(got, want, plain):
    np.testing.assert_allclose(g["w"], w["w"], rtol=1e-5)
  assert not np.allclose(got[1]["w"], plain[1]["w"])  # It did something.


def test_warmup_cosine_schedule():
  lr = state_lib.learning_rate(_train(lr_schedule="warmup_cosine",
                                      warmup_steps=10), total_steps=110)
  assert float(lr(0)) == 0.0
  assert float(lr(5)) == pytest.approx(5e-3)
  assert float(lr(10)) == pytest.approx(1e-2)
  assert float(lr(60)) == pytest.approx(5e-3, rel=1e-3)  # Half-way down.
  assert float(lr(110)) == pytest.approx(0.0, abs=1e-9)
  tx = state_lib.create_optimizer(_train(lr_schedule="warmup_cosine",
                                         warmup_steps=10), total_steps=110)
  first = _updates(tx, GRADS[:1], PARAMS)[0]
  np.testing.assert_array_equal(first["w"], 0.0)  # Step 0: rate 0.
  constant = state_lib.create_optimizer(
      _train(lr_schedule="warmup_cosine"), constant=True)
  assert np.abs(_updates(constant, GRADS[:1], PARAMS)[0]["w"]).max() > 0


def test_class_weighted_cross_entropy():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 5, 6, 3)), jnp.float32)
  labels = rng.integers(0, 3, (2, 5, 6))
  labels[0, 0, :] = 255
  labels = jnp.asarray(labels)
  plain = losses.cross_entropy(logits, labels)
  ones = losses.cross_entropy(logits, labels, class_weights=jnp.ones(3))
  np.testing.assert_allclose(ones, plain, rtol=1e-6)
  w = np.array([1.0, 3.0, 0.5], np.float32)
  logp = np.asarray(jax.nn.log_softmax(logits, -1))
  lab = np.asarray(labels)
  keep = lab != 255
  nll = -np.take_along_axis(logp, np.where(keep, lab, 0)[..., None], -1)[..., 0]
  pixel_w = np.where(keep, w[np.where(keep, lab, 0)], 0.0)
  want = (pixel_w * nll).sum() / pixel_w.sum()
  got = losses.cross_entropy(logits, labels, class_weights=jnp.asarray(w))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  grads = jax.grad(lambda l: losses.cross_entropy(
      l, labels, class_weights=jnp.asarray(w)))(logits)
  assert np.isfinite(np.asarray(grads)).all()


def test_phase_state_versions():
  ps = state_lib.PhaseState(phase="finetune", best_metric=0.5, best_step=10,
                            epoch_losses=[1.0], target_loss=0.7,
                            finetune_start=20)
  data = ps.to_json()
  assert data["version"] == state_lib.PhaseState.VERSION
  assert state_lib.PhaseState.from_json(data) == ps
  # The untyped meta dict of checkpoints written before the dataclass.
  old = {"phase": "train", "best_metric": 0.4, "best_step": 5,
         "train_loss": 1.2, "epoch_losses": []}
  assert state_lib.PhaseState.from_json(old).best_step == 5
  assert state_lib.PhaseState.from_json(None) == state_lib.PhaseState()
  # Checkpoints written before the training accuracy was kept: unknown
  # until an epoch ends after the resume.
  assert state_lib.PhaseState.from_json(old).train_accuracy is None
  assert state_lib.PhaseState.from_json(old).epoch_accuracies == []
  kept = dataclasses.replace(ps, epoch_accuracies=[0.5], train_accuracy=0.9)
  assert state_lib.PhaseState.from_json(kept.to_json()) == kept
  # Checkpoints written before train_seconds: the run's total is unknown.
  assert state_lib.PhaseState.from_json(old).train_seconds is None
  resumed_old = state_lib.PhaseState.from_json(old)
  resumed_old.count_seconds(5.0)
  assert resumed_old.train_seconds is None
  ps.count_seconds(2.5)
  ps.count_seconds(1.0)
  assert state_lib.PhaseState.from_json(ps.to_json()).train_seconds == 3.5
  with pytest.raises(errors.CheckpointError, match="newer coarseseg-jax"):
    state_lib.PhaseState.from_json(dict(data, version=99), "ckpt/7")
  with pytest.raises(errors.CheckpointError, match="does not know"):
    state_lib.PhaseState.from_json(dict(old, surprise=1), "ckpt/7")


def test_restore_attempts_report_library_errors_in_one_line(capsys):
  """While a damaged checkpoint is tried, neither a library's
  logging.exception nor an exception in a library thread prints a traceback.
  """
  import logging  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  from coarseseg_jax import checkpoints  # pylint: disable=g-import-not-at-top
  handler = logging.StreamHandler(sys.stderr)
  before = threading.excepthook
  root = logging.getLogger()
  root.addHandler(handler)
  try:
    with checkpoints._one_line_errors():  # pylint: disable=protected-access
      try:
        raise ValueError("tensorstore: truncated file\nsecond line")
      except ValueError:
        logging.getLogger("orbax.fake").exception("restore failed")
      t = threading.Thread(target=lambda: 1 / 0, name="reader")
      t.start()
      t.join()
  finally:
    root.removeHandler(handler)
  err = capsys.readouterr().err
  assert "Traceback" not in err
  assert "restore failed" in err
  assert "thread reader: ZeroDivisionError" in err
  assert threading.excepthook is before  # Restored.
