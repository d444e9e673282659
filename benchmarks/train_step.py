r"""Train-step throughput: fcn, hcfcn (lambda = 0) and hcfcn (lambda > 0).

  python benchmarks/train_step.py            # batch 8, 256x256, full ResNet-34
  python benchmarks/train_step.py --quick    # small, under a minute
  python benchmarks/train_step.py --dtype=bfloat16 --kappa=0.05
  python benchmarks/train_step.py --deformable=0   # vs PyTorch: versus_torch/

Prints, per variant, the compile time and the median step time of timed steps
after compilation (images/s), then `overhead` = step time of the regularized
hcfcn / the unregularized one (the paper: +3.8 % per epoch on a T4). The
variants' steps are timed in turn, one step each (`timing.py`), so drifts of
a shared machine hit them alike. The last line is one JSON object. Runs on
whatever backend JAX finds (CPU, GPU, TPU); imports `coarseseg_jax.xla_flags`
first, so the project's CPU flags apply.
"""

import argparse
import functools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from coarseseg_jax import xla_flags  # pylint: disable=unused-import,g-bad-import-order

import jax  # pylint: disable=g-import-not-at-top
import numpy as np
import timing  # benchmarks/timing.py  # pylint: disable=g-import-not-at-top

from coarseseg_jax import host  # pylint: disable=g-import-not-at-top
from coarseseg_jax.configs import default  # pylint: disable=g-import-not-at-top
from coarseseg_jax import losses
from coarseseg_jax import models
from coarseseg_jax import sharding
from coarseseg_jax import state as state_lib
from coarseseg_jax import step as step_lib


def make_batch(batch_size, size, num_segments, seed=0):
  rng = np.random.default_rng(seed)
  blocks = (rng.integers(0, num_segments, (batch_size, size // 16, size // 16))
            .repeat(16, 1).repeat(16, 2))
  label = rng.integers(0, 6, (batch_size, size, size))
  label[:, :, : size // 8] = 255
  return {"image": rng.random((batch_size, size, size, 3), np.float32),
          "label": label.astype(np.int32), "label_fine": label.astype(np.int32),
          "slic": blocks.astype(np.int32),
          "mask": np.ones((batch_size,), np.float32)}


def build(name, lmbda, kappa, args, mesh, compiler_options=None,
          overrides=None):
  """(compiled step, state, batch, compile seconds) of one variant.

  `compiler_options` (XLA debug options, as in XLA_FLAGS without the dashes)
  apply to this step's compilation only; `overrides` maps dotted config keys
  ('model.width') to values.
  """
  config = default.get_config()
  config.model.name = name
  config.model.num_classes = 6
  config.model.dtype = args.dtype
  config.model.deformable = bool(args.deformable)
  config.data.crop_size = args.size
  config.data.slic_num_segments = args.num_segments
  if args.quick:
    config.model.stage_blocks = (1, 1, 1)
    config.model.width = 16
  for key, value in (overrides or {}).items():
    section, field = key.split(".")
    config[section][field] = value
  model = models.create_model(config.model)
  state = state_lib.create_train_state(config, model, mesh, args.size)
  step_fn = jax.jit(functools.partial(
      step_lib.train_step, settings=losses.LossSettings(
          lmbda=lmbda, m=0.0, kappa=kappa, num_segments=args.num_segments)),
                    donate_argnums=0)
  batch = sharding.shard_batch(
      make_batch(args.batch_size, args.size, args.num_segments), mesh)
  compiled, compile_s = timing.timed(lambda: step_fn.lower(
      state, batch).compile(compiler_options=compiler_options))
  return compiled, state, batch, compile_s


def prepare(name, lmbda, kappa, args, mesh, compiler_options=None,
            overrides=None):
  """A compiled, warmed-up train step of one variant, as (step, row).

  `step()` runs one train step on the variant's own state and batch and
  blocks until it is done. `compiler_options`, `overrides`: see `build`.
  """
  compiled, state, batch, compile_s = build(
      name, lmbda, kappa, args, mesh, compiler_options, overrides)
  return warmed_up(compiled, state, batch, args.warmup), {
      "model": name, "lmbda": lmbda, "kappa": kappa,
      "compile_s": round(compile_s, 2)}


def warmed_up(compiled, state, batch, warmup):
  """`step()` running `compiled` on its own `state` (donated) and `batch`,
  after `warmup` steps; it blocks until the step is done."""
  for _ in range(warmup):
    state, _ = compiled(state, batch)
  jax.block_until_ready(state)

  def step():
    nonlocal state
    state, step_metrics = compiled(state, batch)
    jax.block_until_ready(step_metrics)

  return step


def variant(key, args):
  """A `--models` key -> (model name, lambda, kappa) for `build`."""
  variants = {"fcn": ("fcn", 0.0, 0.0), "hcfcn0": ("hcfcn", 0.0, 0.0),
              "hcfcn": ("hcfcn", args.lmbda, args.kappa),
              "unet": ("unet", 0.0, 0.0)}
  return variants[key]


def add_step_flags(parser: argparse.ArgumentParser, steps: int,
                   deformable: int) -> None:
  """The flags of the step `build` compiles (profile_step.py uses them too)."""
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--steps", type=int, default=steps)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--lmbda", type=float, default=0.05)
  parser.add_argument("--kappa", type=float, default=0.0)
  parser.add_argument("--num_segments", type=int, default=512)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--deformable", type=int, default=deformable,
                      help="1: DCNv2 in the downsampling blocks (the project's"
                      " default); 0: plain strided convs, as torch_reference.py"
                      " (the like-for-like comparison with PyTorch).")


def parse_step_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
  """Parses the command line; --quick: 64x64, 5 timed steps, 1 warm-up."""
  args = parser.parse_args()
  if args.quick:
    args.size, args.steps, args.warmup = 64, 5, 1
  return args


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  add_step_flags(parser, steps=10, deformable=1)
  parser.add_argument("--models", default="fcn,hcfcn0,hcfcn")
  args = parse_step_args(parser)
  mesh = sharding.make_mesh()
  prepared = {}
  for key in args.models.split(","):
    prepared[key] = prepare(*variant(key, args), args, mesh)
    print(f"{key:8s} compile {prepared[key][1]['compile_s']:7.2f} s",
          flush=True)
  rows = timing.time_round_robin(prepared, args.steps, args.batch_size)
  for key, r in rows.items():
    print(f"{key:8s} step {r['step_s']:.4f} s   {r['images_per_s']:8.2f} img/s")
  out = {"benchmark": "train_step", "backend": jax.default_backend(),
         "devices": jax.device_count(), "device_kind": jax.devices()[0].device_kind,
         "machine": host.processor(),
         "cpus": os.cpu_count(), "batch_size": args.batch_size,
         "size": args.size, "dtype": args.dtype,
         "deformable": bool(args.deformable), "quick": args.quick,
         "xla_flags": os.environ.get("XLA_FLAGS", ""), "results": rows}
  if "hcfcn" in rows and "hcfcn0" in rows:
    out["overhead"] = round(rows["hcfcn"]["step_s"] / rows["hcfcn0"]["step_s"], 4)
    print(f"overhead of the regularizer: {100 * (out['overhead'] - 1):+.1f} %")
  print(json.dumps(out))


if __name__ == "__main__":
  main()
