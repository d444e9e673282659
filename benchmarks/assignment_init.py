r"""HCFCN-16's soft assignments per similarity option: at init, then trained.

  python benchmarks/assignment_init.py                 # the init table
  python benchmarks/assignment_init.py --train         # + the training probe
  python benchmarks/assignment_init.py --train --skip_init --options=dot,cosine
  python benchmarks/assignment_init.py --quick --train # tiny, a smoke test

Issue 15: the paper's code (``similarity="dot"``, tau 0.07) saturates the
assignment softmax of an untrained model. For every option in `OPTIONS`:
the similarity experiment's (`coarseseg_jax.experiments.methods.SIMILARITY_OPTIONS`,
which `--experiment=similarity` runs) and two diagnostics of issue 15 built
on them, `dot_zero` (``dot`` with the fine projection zero-initialised) and
`hcformer_pb2` (``hcformer`` with a learnable parent bias from 2):

1. **At initialisation**, for the experiments' model
   (`coarseseg_jax.experiments.methods.FULL_SYNTHETIC`: width 32, stage_blocks
   (3, 4, 6), 160 px)
   and the default model (``configs/synthetic.py``: width 64, 256 px), on
   ``--images`` synthetic training images (`synthetic.generate`, no dataset
   preparation) and ``--seeds`` init seeds, in train mode (batch statistics,
   as the first training step sees them):
   `assignment_stats.summary` of ``[A_4, A_8]``, and how much of the
   cross-entropy gradient (fine labels) reaches the encoder through the
   similarity path. ``g`` is the gradient of the encoder's first conv kernel
   (or of the whole encoder); ``g_head`` the same with
   `jax.lax.stop_gradient` on the projections' inputs (only the path through
   the FCN head is left); ``g_sim = g - g_head``. Reported: ``|g|``,
   ``|g_sim| / |g|`` and ``sim share = |g_sim| / (|g_sim| + |g_head|)`` of
   conv1, and the sim share of the whole encoder ("enc. share").
2. **Training probe** (``--train``): Adam (lr 5e-4, the paper's) for
   ``--steps`` steps of batch 8 on coarse labels (the paper's erosion,
   kernel 12 at 128 px) of 64 synthetic training images, no regularizer,
   a width-16 model (stage_blocks (3, 4, 6), 128 px); then the mean train
   loss of the last 20 steps, the pixel accuracy on 32 validation images
   (fine labels), the diagnostics of their assignments (eval mode) and the
   learned temperature / parent bias. One seed (``--probe_seed``: the init
   and the batch order): a quick probe to pick options for the full sweep,
   not a result.

Prints tables; the last line is one JSON object.
"""

import argparse
import dataclasses
import functools
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))  # benchmarks/: timing.py
sys.path[:0] = [os.path.dirname(HERE), HERE]

from coarseseg_jax import xla_flags  # pylint: disable=unused-import,g-bad-import-order

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
import optax
import timing  # benchmarks/timing.py

from coarseseg_jax import assignment_stats
from coarseseg_jax import config_validation
from coarseseg_jax import losses
from coarseseg_jax.experiments import methods
from coarseseg_jax import metrics
from coarseseg_jax import models
from coarseseg_jax.datasets import coarse
from coarseseg_jax.datasets import synthetic
from coarseseg_jax.configs import synthetic as synthetic_config
from coarseseg_jax.models import hcfcn


def _model_fields(delta):
  """A `methods` delta of ``model.*`` keys -> config.model overrides."""
  assert all(k.startswith("model.") for k in delta), delta
  return {k[len("model."):]: v for k, v in delta.items()}


# name -> config.model overrides: the similarity experiment's options
# (methods.SIMILARITY_OPTIONS: dot = the paper's code, cosine = the thesis
# text, hcformer = HCFormer, its learnable tau from 0.05, ...), then two
# diagnostics of issue 15 that the experiment does not run.
OPTIONS = {name: _model_fields(delta)
           for name, delta in methods.SIMILARITY_OPTIONS.items()}
OPTIONS.update({
    "dot_zero": dict(OPTIONS["dot"], assign_init="zero"),
    "hcformer_pb2": dict(OPTIONS["hcformer"], parent_bias=2.0),
})
STATS = ("entropy", "parent_share", "starved_cells")
# Compiling dominates the init measurements (a few calls per model).
jit_fast = functools.partial(
    jax.jit, compiler_options={"xla_backend_optimization_level": 0})


class _SimilarityStopped(hcfcn.HCFCN):
  """HCFCN whose similarity projections pass no gradient to the encoder."""

  def _project(self, x, name, zero=False):
    return super()._project(jax.lax.stop_gradient(x), name, zero)


def _stopped(model):
  fields = {f.name: getattr(model, f.name)
            for f in dataclasses.fields(hcfcn.HCFCN)
            if f.init and f.name not in ("parent", "name")}
  return _SimilarityStopped(**fields)


def model_config(base, option):
  m = base.copy_and_resolve_references()
  m.update(OPTIONS[option])
  return m


def synthetic_batch(split, indices, size, kernel=None):
  """Images (N, S, S, 3) in [0, 1] and fine (or coarse, with ``kernel``)
  labels (N, S, S) int32 of `synthetic.generate` (data seed 0)."""
  images, labels = [], []
  for i in indices:
    image, label = synthetic.generate(0, split, int(i), image_size=size)
    if kernel:
      label = coarse.coarse_label(label, kernel)
    images.append(image)
    labels.append(label)
  return (jnp.asarray(np.stack(images), jnp.float32) / 255.0,
          jnp.asarray(np.stack(labels), jnp.int32))


# ---------------------------------------------------------------- init ----
def init_diagnostics(base, option, size, num_images, seeds):
  """Per seed: the diagnostics and gradient norms of a fresh model."""
  model = models.create_model(model_config(base, option))
  stopped = _stopped(model)
  x, labels = synthetic_batch("train", range(num_images), size)
  init = jit_fast(lambda key: model.init({"params": key}, x[:1], train=False))

  def loss(params, batch_stats, x, labels, m):
    (logits, assignments), _ = m.apply(
        {"params": params, "batch_stats": batch_stats}, x, train=True,
        rngs={"dropout": jax.random.key(0)}, mutable=["batch_stats"])
    return losses.cross_entropy(logits, labels), assignments

  @jit_fast
  def measure(variables, x, labels):
    p, bs = variables["params"], variables["batch_stats"]
    (_, assignments), g = jax.value_and_grad(loss, has_aux=True)(
        p, bs, x, labels, model)
    g_head, _ = jax.grad(loss, has_aux=True)(p, bs, x, labels, stopped)
    out = assignment_stats.summary(assignments)
    for part, pick in (("conv1", lambda t: t["encoder"]["conv1"]["kernel"]),
                       ("encoder", lambda t: t["encoder"])):
      full, head = pick(g), pick(g_head)
      out[f"{part}_g"] = optax.tree.norm(full)
      out[f"{part}_sim"] = optax.tree.norm(
          jax.tree.map(jnp.subtract, full, head))
      out[f"{part}_head"] = optax.tree.norm(head)
    return out

  rows = []
  for seed in seeds:
    r = measure(init(jax.random.key(seed)), x, labels)
    r = {k: float(v) for k, v in r.items()}
    for part in ("conv1", "encoder"):
      r[f"{part}_sim_of_g"] = r[f"{part}_sim"] / r[f"{part}_g"]
      r[f"{part}_sim_share"] = r[f"{part}_sim"] / (
          r[f"{part}_sim"] + r[f"{part}_head"])
    rows.append(r)
  return rows


def synthetic_model(delta=None):
  """(config.model, image size) of configs/synthetic.py, resized by a
  `methods` delta (FULL_SYNTHETIC: the experiments'; QUICK_SYNTHETIC), with
  the dataset's number of classes."""
  config = synthetic_config.get_config()
  if delta:
    config = methods.apply(config, delta)
  config = config_validation.resolve(config, "images").config
  return config.model, config.data.crop_size


def init_tables(args, options):
  setups = [("full", *synthetic_model(methods.FULL_SYNTHETIC)),
            ("default", *synthetic_model())]
  if args.quick:
    setups = [("quick", *synthetic_model(methods.QUICK_SYNTHETIC))]
  results = {}
  for setup, base, size in setups:
    print(f"\n{setup} model: width {base.width}, blocks "
          f"{tuple(base.stage_blocks)}, {size} px, {args.images} images, "
          f"init seeds {list(range(args.seeds))}; mean (std over seeds)")
    keys = [f"a{s}_{n}" for s in (4, 8) for n in STATS] + [
        "conv1_g", "conv1_sim_of_g", "conv1_sim_share", "encoder_sim_share"]
    names = [f"a{s} {n}" for s in (4, 8)
             for n in ("entropy", "parent", "starved")] + [
                 "conv1 |g|", "|g_sim|/|g|", "sim share", "enc. share"]
    head = f"{'option':<14}" + "".join(f"{n:>14}" for n in names) + "    s"
    print(head + "\n" + "-" * len(head))
    for option in options:
      watch = timing.Stopwatch()
      rows = init_diagnostics(base, option, size, args.images,
                              range(args.seeds))
      mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
      std = {k: float(np.std([r[k] for r in rows])) for k in rows[0]}
      digits = {"conv1_g": 1}
      cells = "".join(
          f"{mean[k]:.{digits.get(k, 3)}f} ({std[k]:.{digits.get(k, 2)}f})"
          .rjust(14) for k in keys)
      print(f"{option:<14}{cells}{watch.seconds():>5.0f}", flush=True)
      results[f"{setup}/{option}"] = {"mean": mean, "std": std, "seeds": rows}
  return results


# --------------------------------------------------------------- train ----
def train_probe(args, option):
  """Trains one option briefly; returns its scores."""
  size, kernel, width = (64, 7, 8) if args.quick else (128, 12, 16)
  base, _ = synthetic_model(methods.FULL_SYNTHETIC)
  base.width, base.head_channels = width, width
  base.sim_features = min(48, width)
  if args.quick:
    base.stage_blocks = (1, 1, 1)
  model = models.create_model(model_config(base, option))
  n_train, n_val, batch = (16, 8, 8) if args.quick else (64, 32, 8)
  x_train, y_train = synthetic_batch("train", range(n_train), size, kernel)
  x_val, y_val = synthetic_batch("validation", range(n_val), size)
  variables = jax.jit(lambda k: model.init({"params": k}, x_train[:1]))(
      jax.random.key(args.probe_seed))
  opt = optax.adam(5e-4)
  state = (variables["params"], variables["batch_stats"],
           opt.init(variables["params"]))

  @jax.jit
  def step(state, x, y, key):
    params, batch_stats, opt_state = state

    def loss_fn(p):
      (logits, _), new = model.apply(
          {"params": p, "batch_stats": batch_stats}, x, train=True,
          rngs={"dropout": key}, mutable=["batch_stats"])
      return losses.cross_entropy(logits, y), new["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

  @jax.jit
  def evaluate(params, batch_stats, x, y):
    logits, assignments = model.apply(
        {"params": params, "batch_stats": batch_stats}, x, train=False)
    acc = metrics.pixel_accuracy(jnp.argmax(logits, -1), y)
    return acc, assignment_stats.summary(assignments)

  rng = np.random.default_rng(args.probe_seed)
  order, history, watch = [], [], timing.Stopwatch()
  for i in range(args.steps):
    if len(order) < batch:
      order += list(rng.permutation(n_train))
    idx, order = np.array(order[:batch]), order[batch:]
    state, loss = step(state, x_train[idx], y_train[idx],
                       jax.random.key(1000 + i))
    history.append(float(loss))
  train_s = watch.seconds()
  params, batch_stats, _ = state
  accs, stats = [], []
  for i in range(0, n_val, 8):
    acc, s = evaluate(params, batch_stats, x_val[i:i + 8], y_val[i:i + 8])
    accs.append(np.asarray(acc))
    stats.append({k: float(v) for k, v in s.items()})
  out = {"train_loss": float(np.mean(history[-20:])),
         "first_loss": history[0],
         "val_accuracy": float(np.mean(np.concatenate(accs))),
         "seconds": round(train_s, 1)}
  out.update({k: float(np.mean([s[k] for s in stats])) for k in stats[0]})
  out.update({k: float(v) for k, v in
              hcfcn.assign_parameters(params).items()})
  return out


def train_table(args, options):
  print(f"\ntraining probe: {args.steps} Adam steps (lr 5e-4), batch 8, "
        f"coarse labels, no regularizer, width {8 if args.quick else 16}, "
        f"seed {args.probe_seed}; validation on fine labels")
  head = (f"{'option':<14}{'loss0':>7}{'loss':>7}{'val acc':>8}" +
          "".join(f"{f'a{s} {n}':>11}" for s in (4, 8)
                  for n in ("ent", "parent", "starved")) +
          f"{'tau 4/8':>13}{'bias 4/8':>13}{'s':>6}")
  print(head + "\n" + "-" * len(head))
  results = {}
  for option in options:
    r = train_probe(args, option)
    cells = "".join(f"{r[f'a{s}_{n}']:>11.3f}" for s in (4, 8) for n in STATS)
    tau = (f"{r['a4_tau']:.3f}/{r['a8_tau']:.3f}" if "a4_tau" in r else "-")
    bias = (f"{r['a4_parent_bias']:.2f}/{r['a8_parent_bias']:.2f}"
            if "a4_parent_bias" in r else "-")
    print(f"{option:<14}{r['first_loss']:>7.3f}{r['train_loss']:>7.3f}"
          f"{r['val_accuracy']:>8.3f}{cells}{tau:>13}{bias:>13}"
          f"{r['seconds']:>6.0f}", flush=True)
    results[option] = r
  return results


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--options", default=",".join(OPTIONS))
  parser.add_argument("--images", type=int, default=4)
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--train", action="store_true")
  parser.add_argument("--skip_init", action="store_true")
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--probe_seed", type=int, default=0)
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args()
  options = args.options.split(",")
  unknown = sorted(set(options) - set(OPTIONS))
  if unknown:
    parser.error(f"unknown options {unknown}; known: {list(OPTIONS)}")
  if args.quick:
    args.images, args.seeds, args.steps = 2, 2, min(args.steps, 10)
  print(f"backend={jax.default_backend()} devices={jax.device_count()}")
  out = {"benchmark": "assignment_init", "quick": args.quick}
  if not args.skip_init:
    out["init"] = init_tables(args, options)
  if args.train:
    out["train"] = train_table(args, options)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
