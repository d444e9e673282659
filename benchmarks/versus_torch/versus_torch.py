r"""The JAX train step against the PyTorch one, alternated in one process.

  OMP_WAIT_POLICY=PASSIVE python benchmarks/versus_torch/versus_torch.py
  python benchmarks/versus_torch/run.py --what=step --quick  # sets the policy
  python benchmarks/versus_torch/run.py --what=step --jax=hcfcn0,hcfcn \
      --torch=hcfcn/fast

Builds the JAX steps of `train_step.py` (``deformable=0``: the network
`torch_reference.py` rebuilds, same parameter count; ``hcfcn+dcn``: with the
deformable convs, the project's default, which has no PyTorch counterpart
here: torchvision's ``deform_conv2d`` does not load with the CPU-only torch,
benchmarks/README.md) and the PyTorch steps of
`torch_reference.py`, then times them in turn, one step of each per round
(`timing.py`), so that every JAX figure has a PyTorch figure taken under the
same machine state. Prints each variant's median step time, its median
process CPU time, the load average before and after, and the ratios JAX /
PyTorch; the last line is one JSON object. ``OMP_WAIT_POLICY=PASSIVE`` keeps
PyTorch's idle OpenMP threads from spinning while the JAX step runs (and
from waiting on a descheduled peer on a shared machine).
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))  # benchmarks/versus_torch
BENCHMARKS = os.path.dirname(HERE)  # timing.py, train_step.py
sys.path[:0] = [os.path.dirname(BENCHMARKS), BENCHMARKS, HERE]

from coarseseg_jax import xla_flags  # pylint: disable=unused-import,g-bad-import-order

import jax  # pylint: disable=g-import-not-at-top
import timing  # pylint: disable=g-import-not-at-top
import torch  # pylint: disable=g-import-not-at-top
import torch_reference  # pylint: disable=g-import-not-at-top
import train_step  # pylint: disable=g-import-not-at-top

from coarseseg_jax import host  # pylint: disable=g-import-not-at-top
from coarseseg_jax import sharding  # pylint: disable=g-import-not-at-top


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  train_step.add_step_flags(parser, steps=12, deformable=0)
  parser.add_argument("--jax", default="hcfcn0,hcfcn,hcfcn+dcn",
                      help="JAX variants: fcn | hcfcn0 | hcfcn (train_step.py),"
                      " '+dcn': with the deformable convs (the project's "
                      "default; PyTorch has no counterpart here)")
  parser.add_argument("--torch", default="hcfcn0/fast,hcfcn/fast,hcfcn/authors",
                      help="PyTorch variants, model/setting "
                      "(torch_reference.py)")
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  args = train_step.parse_step_args(parser)
  torch.set_num_threads(args.threads)
  mesh = sharding.make_mesh()
  load_before = os.getloadavg()
  variants = {}
  for key in args.jax.split(","):
    name, _, dcn = key.partition("+")
    overrides = {"model.deformable": True} if dcn == "dcn" else None
    variants[f"jax/{key}"] = train_step.prepare(
        *train_step.variant(name, args), args, mesh, overrides=overrides)
  for spec in args.torch.split(","):
    key, setting = spec.split("/")
    torch_reference.parse_setting(setting)
    variants[f"torch/{spec}"] = torch_reference.prepare(
        *torch_reference.variant(key, args.lmbda), setting, args)
  rows = timing.time_round_robin(variants, args.steps, args.batch_size)
  load_after = os.getloadavg()
  for key, r in rows.items():
    print(f"{key:22s} step {r['step_s']:.4f} s (cpu {r['cpu_s']:.3f} s)  "
          f"{r['images_per_s']:7.2f} img/s")
  ratios = {}
  for jkey in args.jax.split(","):
    for spec in args.torch.split(","):
      if spec.split("/")[0] == jkey.partition("+")[0]:
        ratio = rows[f"jax/{jkey}"]["step_s"] / rows[f"torch/{spec}"]["step_s"]
        ratios[f"jax/{jkey} : torch/{spec}"] = round(ratio, 4)
        print(f"jax/{jkey} / torch/{spec}: {ratio:.3f}")
  overhead = {}
  for prefix, suffix in [("jax/", ""), ("jax/", "+dcn")] + [
      ("torch/", "/" + spec.split("/")[1]) for spec in args.torch.split(",")]:
    reg, unreg = (rows.get(f"{prefix}{m}{suffix}") for m in ("hcfcn", "hcfcn0"))
    if reg and unreg and f"{prefix}hcfcn{suffix}" not in overhead:
      overhead[f"{prefix}hcfcn{suffix}"] = round(
          reg["step_s"] / unreg["step_s"], 4)
      print(f"overhead of the regularizer, {prefix}hcfcn{suffix}: "
            f"{100 * (reg['step_s'] / unreg['step_s'] - 1):+.1f} %")
  print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
  print(json.dumps({
      "benchmark": "versus_torch", "jax": jax.__version__,
      "torch": torch.__version__, "threads": torch.get_num_threads(),
      "machine": host.processor(),
      "cpus": os.cpu_count(), "batch_size": args.batch_size,
      "size": args.size, "deformable": bool(args.deformable),
      "quick": args.quick, "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
      "load_avg": [round(load_before[0], 2), round(load_after[0], 2)],
      "results": rows, "ratios": ratios, "overhead": overhead}))


if __name__ == "__main__":
  main()
