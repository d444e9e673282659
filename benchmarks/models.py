r"""Model throughput: forward+backward of every model, and DCNv2 vs plain conv.

  python benchmarks/models.py            # batch 8, 256x256, full-size models
  python benchmarks/models.py --quick    # tiny models, 64x64, under a minute
  python benchmarks/models.py --models=hcfcn,fcn --dtype=bfloat16
  python benchmarks/models.py --models=hcfcn --plain   # deformable=False
  XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution \
      python benchmarks/models.py        # CPU: XLA's YNN conv fusion off

Per model: the compile time of one jitted forward+backward (softmax
cross-entropy on random labels, train mode: batch statistics, dropout, the
superpixel decoder; no optimizer update), the median time of the timed calls
after a warm-up call, images/s, and XLA's memory analysis of the compiled
computation (arguments + outputs + temporaries - aliased: the device memory
the step needs). Then, for the two deformable downsampling layers of the
encoder (input at strides 4 and 8), forward and forward+backward time of
`deformable.DeformConv` (offset conv included) against the plain 3x3 stride-2
`nn.Conv` it replaces. The last line is one JSON object. Runs on whatever
backend JAX finds; imports `coarseseg_jax.xla_flags` first, so the project's
CPU flags apply (flags already in XLA_FLAGS win).
"""

import argparse
import functools
import json
import os
import resource
import sys

HERE = os.path.dirname(os.path.abspath(__file__))  # benchmarks/: timing.py
sys.path[:0] = [os.path.dirname(HERE), HERE]

from coarseseg_jax import xla_flags  # pylint: disable=unused-import

import flax.linen as nn  # pylint: disable=g-import-not-at-top
import jax
import jax.numpy as jnp
import timing  # benchmarks/timing.py  # pylint: disable=g-import-not-at-top

from coarseseg_jax import host  # pylint: disable=g-import-not-at-top
from coarseseg_jax.configs import default  # pylint: disable=g-import-not-at-top
from coarseseg_jax import models
from coarseseg_jax.models import deformable


def _time(fn, args, steps, warmup=1):
  """(compile s, median run s, compiled) of ``jax.jit(fn)`` on ``args``."""
  compiled, compile_s = timing.timed(lambda: jax.jit(fn).lower(*args).compile())
  run_s = timing.median_seconds(
      {"run": lambda: jax.block_until_ready(compiled(*args))}, steps,
      warmup)["run"]
  return compile_s, run_s, compiled


def _memory_mib(compiled):
  """Device memory of a compiled computation (MiB), None if not reported."""
  try:
    m = compiled.memory_analysis()
    total = (m.argument_size_in_bytes + m.output_size_in_bytes +
             m.temp_size_in_bytes - m.alias_size_in_bytes)
    return round(total / 2**20, 1), round(m.temp_size_in_bytes / 2**20, 1)
  except Exception:  # pylint: disable=broad-except
    return None, None


def bench_model(name, args):
  config = default.get_config().model
  config.name = name
  config.num_classes = 8  # SUIM's.
  config.dtype = args.dtype
  config.deformable = not args.plain
  if args.quick:
    config.stage_blocks, config.width = (1, 1, 1), 16
  model = models.create_model(config)
  images = jax.random.uniform(jax.random.key(0),
                              (args.batch_size, args.size, args.size, 3))
  labels = jax.random.randint(jax.random.key(1), images.shape[:3], 0,
                              config.num_classes)
  variables = jax.jit(functools.partial(model.init, train=False))(
      {"params": jax.random.key(2)}, images[:1])

  def loss_fn(params, batch_stats, x, y):
    (logits, _), state = model.apply(
        {"params": params, "batch_stats": batch_stats}, x, train=True,
        rngs={"dropout": jax.random.key(3)}, mutable=["batch_stats"])
    logp = jax.nn.log_softmax(logits)
    loss = -jnp.mean(jnp.take_along_axis(logp, y[..., None], -1))
    return loss, state

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  compile_s, step_s, compiled = _time(
      grad_fn, (variables["params"], variables.get("batch_stats", {}), images,
                labels), args.steps)
  memory, temp = _memory_mib(compiled)
  return {"model": name, "params": models.param_count(variables["params"]),
          "compile_s": round(compile_s, 2), "step_s": round(step_s, 4),
          "images_per_s": round(args.batch_size / step_s, 2),
          "memory_mib": memory, "temp_mib": temp}


def bench_dcn(args):
  """DeformConv vs nn.Conv (3x3, stride 2) at the encoder's two DCN layers."""
  width = 16 if args.quick else 64
  rows = {}
  for stride_in, cin in ((4, width), (8, 2 * width)):
    side = args.size // stride_in
    x = jax.random.normal(jax.random.key(0), (args.batch_size, side, side, cin))
    layers = {
        "dcn": deformable.DeformConv(2 * cin, (3, 3), (2, 2), padding=1),
        "conv": nn.Conv(2 * cin, (3, 3), (2, 2), padding=((1, 1), (1, 1)),
                        use_bias=False)}
    row = {}
    for kind, layer in layers.items():
      variables = layer.init(jax.random.key(1), x)
      if kind == "dcn":  # Non-zero offsets: realistic sampling positions.
        variables = jax.tree.map(
            lambda v: v + 0.01 * jax.random.normal(jax.random.key(2), v.shape),
            variables)
      fwd = lambda v, x, layer=layer: layer.apply(v, x)
      fwd_bwd = jax.grad(lambda v, x, layer=layer: jnp.sum(
          layer.apply(v, x) ** 2), argnums=(0, 1))
      _, f_s, _ = _time(fwd, (variables, x), args.layer_steps)
      _, fb_s, _ = _time(fwd_bwd, (variables, x), args.layer_steps)
      row[kind] = {"fwd_ms": round(1e3 * f_s, 2),
                   "fwd_bwd_ms": round(1e3 * fb_s, 2)}
    row["ratio_fwd"] = round(row["dcn"]["fwd_ms"] / row["conv"]["fwd_ms"], 2)
    row["ratio_fwd_bwd"] = round(
        row["dcn"]["fwd_bwd_ms"] / row["conv"]["fwd_bwd_ms"], 2)
    rows[f"{side}x{side}x{cin}->{side // 2}x{side // 2}x{2 * cin}"] = row
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--layer_steps", type=int, default=10)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--models", default=",".join(models.MODEL_NAMES))
  parser.add_argument("--skip_dcn", action="store_true")
  parser.add_argument("--plain", action="store_true",
                      help="model.deformable=False (plain strided convs)")
  args = parser.parse_args()
  if args.quick:
    args.size, args.steps, args.layer_steps = 64, 3, 5
  out = {"benchmark": "models", "backend": jax.default_backend(),
         "device_kind": jax.devices()[0].device_kind,
         "machine": host.processor(),
         "cpus": os.cpu_count(), "batch_size": args.batch_size,
         "size": args.size, "dtype": args.dtype, "quick": args.quick,
         "deformable": not args.plain,
         "xla_flags": os.environ.get("XLA_FLAGS", ""), "models": {}}
  for name in args.models.split(","):
    r = bench_model(name, args)
    out["models"][name] = r
    print(f"{name:10s} {r['params']:>11,} params  compile {r['compile_s']:7.2f}"
          f" s  fwd+bwd {r['step_s']:8.4f} s  {r['images_per_s']:8.2f} img/s"
          f"  memory {r['memory_mib']} MiB", flush=True)
  if not args.skip_dcn:
    out["dcn_vs_conv"] = bench_dcn(args)
    for shape, r in out["dcn_vs_conv"].items():
      print(f"{shape:28s} fwd dcn {r['dcn']['fwd_ms']:8.2f} ms conv "
            f"{r['conv']['fwd_ms']:7.2f} ms (x{r['ratio_fwd']})   fwd+bwd dcn "
            f"{r['dcn']['fwd_bwd_ms']:8.2f} ms conv "
            f"{r['conv']['fwd_bwd_ms']:7.2f}"
            f" ms (x{r['ratio_fwd_bwd']})", flush=True)
  out["peak_rss_mib"] = round(
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
