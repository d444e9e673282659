r"""The encoder's convolutions in JAX (XLA:CPU) and PyTorch (oneDNN), alternated.

  OMP_WAIT_POLICY=PASSIVE python benchmarks/versus_torch/convs_versus_torch.py
  python benchmarks/versus_torch/run.py --what=convs --quick   # the same

Every distinct convolution of the encoder (resnet.py without DCN, batch 8,
256x256, float32, NHWC in both: PyTorch's tensors are ``channels_last``) is
timed three ways: the forward pass, the input gradient (not for the stem,
whose input needs none) and the weight gradient, as
``lax.conv_general_dilated`` and its `jax.vjp` under `jax.jit` (with the
project's XLA flags) and as ``F.conv2d`` / ``aten.convolution_backward``
(PyTorch's eager call of the same kernels its autograd uses). Then the whole
encoder, forward + backward in train mode, in both (`resnet.ResNetEncoder`
and `torch_reference.HCFCN.encode`, same parameter count). Everything is timed
in turn, one call of each per round (`timing.py`), median of --steps.

Prints per convolution and pass the two medians and their ratio, the
per-step sum over the encoder (each convolution times its count), the
encoder's times, and the load average; the last line is one JSON object.
This is where the train step's gap to PyTorch is (benchmarks/README.md,
issue 17): a per-op profile of the step could not show it, because XLA:CPU
runs other ops while its convolutions are in flight.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))  # benchmarks/versus_torch
BENCHMARKS = os.path.dirname(HERE)  # timing.py
sys.path[:0] = [os.path.dirname(BENCHMARKS), BENCHMARKS, HERE]

from coarseseg_jax import xla_flags  # pylint: disable=unused-import,g-bad-import-order

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import timing  # pylint: disable=g-import-not-at-top
import torch  # pylint: disable=g-import-not-at-top
import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
import torch_reference  # pylint: disable=g-import-not-at-top

from coarseseg_jax import host  # pylint: disable=g-import-not-at-top
from coarseseg_jax.models import resnet  # pylint: disable=g-import-not-at-top

# name -> (input size / image size, in, out channels / width (0: the image's
# 3 channels), kernel, stride, input gradient taken).
CONVS = {
    "stem 7x7/2": (1, 0, 1, 7, 2, False),
    "layer1 3x3": (1 / 4, 1, 1, 3, 1, True),
    "layer2_0 3x3/2": (1 / 4, 1, 2, 3, 2, True),
    "layer2 3x3": (1 / 8, 2, 2, 3, 1, True),
    "layer3_0 3x3/2": (1 / 8, 2, 4, 3, 2, True),
    "layer3 3x3": (1 / 16, 4, 4, 3, 1, True),
}


def counts(blocks):
  """How often each of CONVS runs in the encoder with `blocks` per stage."""
  b1, b2, b3 = blocks
  return dict(zip(CONVS, (1, 2 * b1, 2, 2 * b2 - 1, 2, 2 * b3 - 1)))
PASSES = ("fwd", "input grad", "weight grad")


def to_torch(array, dims=(0, 3, 1, 2)):
  """A NHWC (or, with dims (3, 2, 0, 1), HWIO) array -> the NCHW-shaped
  (OIHW) channels_last tensor PyTorch's oneDNN kernels read."""
  return torch.from_numpy(array).permute(*dims).contiguous(
      memory_format=torch.channels_last)


def jax_passes(x, w, stride):
  """{pass: no-argument call that blocks} for one NHWC / HWIO convolution."""
  pad = w.shape[0] // 2

  def conv(x, w):
    return jax.lax.conv_general_dilated(
        x, w, (stride, stride), ((pad, pad), (pad, pad)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  g = jnp.ones(jax.eval_shape(conv, x, w).shape, x.dtype)
  fns = {"fwd": (jax.jit(conv), (x, w)),
         "input grad": (jax.jit(lambda x, w, g: jax.vjp(
             lambda x: conv(x, w), x)[1](g)[0]), (x, w, g)),
         "weight grad": (jax.jit(lambda x, w, g: jax.vjp(
             lambda w: conv(x, w), w)[1](g)[0]), (x, w, g))}
  return {p: (lambda f=f, a=a: jax.block_until_ready(f(*a)))
          for p, (f, a) in fns.items()}


def torch_passes(x, w, stride):
  """The same for PyTorch: NCHW-shaped, channels_last tensors."""
  pad = w.shape[-1] // 2
  g = torch.ones_like(F.conv2d(x, w, stride=stride, padding=pad))

  def backward(mask):
    return lambda: torch.ops.aten.convolution_backward(
        g, x, w, None, [stride] * 2, [pad] * 2, [1, 1], False, [0, 0], 1,
        mask)

  return {"fwd": lambda: F.conv2d(x, w, stride=stride, padding=pad),
          "input grad": backward([True, False, False]),
          "weight grad": backward([False, True, False])}


def encoder_steps(batch_size, size, blocks, width, seed=0):
  """Forward + backward of the whole encoder (train mode), JAX and PyTorch."""
  rng = np.random.default_rng(seed)
  images = rng.random((batch_size, size, size, 3), np.float32)
  enc = resnet.ResNetEncoder(stage_blocks=blocks, width=width,
                             deformable=False)
  variables = enc.init(jax.random.PRNGKey(seed), jnp.asarray(images), False)
  out_shape = (batch_size, size // 16, size // 16, 4 * width)
  cot = rng.standard_normal(out_shape).astype(np.float32)

  def loss(params, batch_stats, x):
    feats, _ = enc.apply({"params": params, "batch_stats": batch_stats},
                         resnet.normalise(x), True, mutable=["batch_stats"])
    return jnp.sum(feats["layer3"] * cot)

  grad = jax.jit(jax.grad(loss))
  args = (variables["params"], variables["batch_stats"], jnp.asarray(images))
  model = torch_reference.HCFCN(stage_blocks=blocks, width=width,
                                superpixels=False).train()
  model = model.to(memory_format=torch.channels_last)
  timages, tcot = to_torch(images), to_torch(cot)

  def torch_step():
    model.zero_grad(set_to_none=True)
    (model.encode(timages)["layer3"] * tcot).sum().backward()

  n_jax = sum(x.size for x in jax.tree.leaves(variables["params"]))
  n_torch = sum(p.numel() for n, p in model.named_parameters()
                if n.startswith(("conv1", "bn1", "layers")))
  return (lambda: jax.block_until_ready(grad(*args))), torch_step, (n_jax,
                                                                   n_torch)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="batch 2, 64x64, width 16, one block per stage")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--steps", type=int, default=15)
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  args = parser.parse_args()
  blocks, width = (3, 4, 6), 64
  if args.quick:
    args.batch_size, args.size, args.steps = 2, 64, 3
    blocks, width = (1, 1, 1), 16
  torch.set_num_threads(args.threads)
  load = [round(os.getloadavg()[0], 2)]
  rng = np.random.default_rng(0)
  calls = {}
  count = counts(blocks)
  for name, (scale, cin, cout, k, stride, dx) in CONVS.items():
    cin, cout = (c * width or 3 for c in (cin, cout))
    hw = int(args.size * scale)
    x = rng.standard_normal((args.batch_size, hw, hw, cin)).astype(np.float32)
    w = (rng.standard_normal((k, k, cin, cout)) * 0.05).astype(np.float32)
    for fw, passes in (("jax", jax_passes(jnp.asarray(x), jnp.asarray(w),
                                          stride)),
                       ("torch", torch_passes(to_torch(x),
                                              to_torch(w, (3, 2, 0, 1)),
                                              stride))):
      for p, call in passes.items():
        if p != "input grad" or dx:
          call()  # compile / warm up
          calls[f"{name}|{p}|{fw}"] = (call, {})
  jax_encoder, torch_encoder, params = encoder_steps(
      args.batch_size, args.size, blocks, width)
  for call in (jax_encoder, torch_encoder, jax_encoder, torch_encoder):
    call()
  calls["encoder|fwd+bwd|jax"] = (jax_encoder, {})
  calls["encoder|fwd+bwd|torch"] = (torch_encoder, {})
  rows = timing.time_round_robin(calls, args.steps, args.batch_size)
  load.append(round(os.getloadavg()[0], 2))
  ms = {key: 1e3 * r["step_s"] for key, r in rows.items()}
  results, sums = [], {"jax": 0.0, "torch": 0.0}
  print("| convolution (count) | pass | JAX ms | PyTorch ms | JAX / PyTorch |\n"
        "|---|---|---:|---:|---:|")
  count["encoder"] = 1
  for name in list(CONVS) + ["encoder"]:
    for p in PASSES if name != "encoder" else ("fwd+bwd",):
      if f"{name}|{p}|jax" not in ms:
        continue
      j, t = ms[f"{name}|{p}|jax"], ms[f"{name}|{p}|torch"]
      if name != "encoder":
        sums["jax"] += count[name] * j
        sums["torch"] += count[name] * t
      else:
        print(f"| the encoder's convolutions, per step | all | "
              f"{sums['jax']:.1f} | {sums['torch']:.1f} | "
              f"{sums['jax'] / sums['torch']:.3f} |")
      results.append({"conv": name, "count": count[name], "pass": p,
                      "jax_ms": round(j, 2), "torch_ms": round(t, 2)})
      print(f"| {name} ({count[name]}) | {p} | {j:.2f} | {t:.2f} | "
            f"{j / t:.3f} |", flush=True)
  print(f"parameters (JAX / PyTorch encoder): {params[0]:,} / {params[1]:,}; "
        f"load {load[0]} -> {load[1]}")
  print(json.dumps({
      "benchmark": "convs_versus_torch", "jax": jax.__version__,
      "torch": torch.__version__, "threads": torch.get_num_threads(),
      "machine": host.processor(),
      "cpus": os.cpu_count(), "batch_size": args.batch_size,
      "size": args.size, "quick": args.quick, "steps": args.steps,
      "load_avg": load, "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "convs_per_step_ms": {k: round(v, 1) for k, v in sums.items()},
      "results": results}))


if __name__ == "__main__":
  main()
