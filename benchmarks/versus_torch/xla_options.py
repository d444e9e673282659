r"""The train step under several XLA options or model variants, in one process.

  python benchmarks/versus_torch/xla_options.py \
      --variants="base;onednn=xla_cpu_use_onednn:true"
  python benchmarks/versus_torch/run.py --what=xla_options --quick \
      --variants="base;w512=xla_cpu_prefer_vector_width:512"
  python benchmarks/versus_torch/run.py --what=xla_options \
      --variants="base;bf16=@model.dtype:bfloat16"

Each variant is ``label=key:value,key:value`` (``base``: no change). A key
that starts with ``@`` is a config override (``@model.dtype:bfloat16``), any other
key an XLA debug option passed as a compiler option to this variant's
compilation only (the spelling of XLA_FLAGS without the dashes), on top of
the process's XLA_FLAGS (the project's CPU flag). All variants compile the
same train step as `train_step.py` (default: hcfcn, lambda 0.05, no DCN), get
the same initial state and batch, and:

- are checked against the first variant: one step from the same state, the
  relative difference of the loss and of the gradient (Adam's first moments
  after that step: ||a - b|| / ||a|| over all parameters; float32 rounding
  of a reordered computation gives ~1e-6);
- are timed in turn, one step of each per round (`timing.py`), median of
  ``--steps`` after ``--warmup``.

Prints a line per variant (compile s, step s, CPU s, ratio to the first,
differences) and the load average; the last line is one JSON object.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))  # benchmarks/versus_torch
BENCHMARKS = os.path.dirname(HERE)  # timing.py, train_step.py
sys.path[:0] = [os.path.dirname(BENCHMARKS), BENCHMARKS]

from coarseseg_jax import xla_flags  # pylint: disable=unused-import,g-bad-import-order

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import timing  # pylint: disable=g-import-not-at-top
import train_step  # pylint: disable=g-import-not-at-top

from coarseseg_jax import host  # pylint: disable=g-import-not-at-top
from coarseseg_jax import sharding  # pylint: disable=g-import-not-at-top


def parse_value(text):
  for cast in (int, float):
    try:
      return cast(text)
    except ValueError:
      pass
  return {"true": True, "false": False}.get(text, text)


def parse_variants(text):
  """'a=k:v,k:v;b' -> {label: (compiler_options, overrides)}."""
  variants = {}
  for item in filter(None, (v.strip() for v in text.split(";"))):
    label, _, spec = item.partition("=")
    options, overrides = {}, {}
    for pair in filter(None, spec.split(",")):
      key, sep, value = pair.partition(":")
      if not sep:
        raise SystemExit(f"variant {label!r}: {pair!r} is not key:value")
      if key.startswith("@"):
        overrides[key[1:]] = parse_value(value)
      else:
        options[key] = parse_value(value)
    variants[label] = (options, overrides)
  return variants


def first_moments(state):
  """Adam's first moments after one step from zero: (1 - b1) x the gradient."""
  leaves = jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
  return [leaf for path, leaf in leaves if "mu" in jax.tree_util.keystr(path)]


def relative_difference(a, b):
  """||a - b|| / ||a|| over all leaves of two lists of arrays."""
  num = sum(float(jnp.sum(jnp.square(x - y))) for x, y in zip(a, b))
  den = sum(float(jnp.sum(jnp.square(x))) for x in a)
  return (num / max(den, 1e-30)) ** 0.5


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  train_step.add_step_flags(parser, steps=8, deformable=0)
  parser.add_argument("--model", default="hcfcn")
  parser.add_argument("--variants", default="base")
  args = train_step.parse_step_args(parser)
  mesh = sharding.make_mesh()
  load_before = os.getloadavg()
  variants = parse_variants(args.variants)
  reference, prepared = None, {}
  for label, (options, overrides) in variants.items():
    try:
      compiled, state, batch, compile_s = train_step.build(
          args.model, args.lmbda, args.kappa, args, mesh, options or None,
          overrides)
    except jax.errors.JaxRuntimeError as e:
      print(f"{label:14s} does not compile: {str(e).splitlines()[0]}")
      continue
    new_state, metrics = compiled(jax.tree.map(jnp.copy, state), batch)
    result = (float(metrics["loss"]), first_moments(new_state))
    row = {"options": options, "overrides": overrides,
           "compile_s": round(compile_s, 2)}
    if reference is None:
      reference = result
    else:
      row["loss_diff"] = abs(result[0] - reference[0]) / abs(reference[0])
      row["grad_diff"] = relative_difference(reference[1], result[1])
    del new_state
    prepared[label] = (train_step.warmed_up(compiled, state, batch,
                                            args.warmup), row)
    print(f"{label:14s} compile {compile_s:6.2f} s", flush=True)
  rows = timing.time_round_robin(prepared, args.steps, args.batch_size)
  load_after = os.getloadavg()
  first = next(iter(rows.values()))["step_s"]
  for label, r in rows.items():
    diffs = (f"  loss diff {r['loss_diff']:.1e}  gradient diff "
             f"{r['grad_diff']:.1e}" if "loss_diff" in r else "")
    print(f"{label:14s} step {r['step_s']:.4f} s (cpu {r['cpu_s']:.3f} s)  "
          f"x{r['step_s'] / first:.3f}{diffs}")
  print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
  print(json.dumps({
      "benchmark": "xla_options", "jax": jax.__version__,
      "backend": jax.default_backend(),
      "machine": host.processor(),
      "cpus": os.cpu_count(), "model": args.model, "lmbda": args.lmbda,
      "batch_size": args.batch_size, "size": args.size,
      "deformable": bool(args.deformable), "quick": args.quick,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "load_avg": [round(load_before[0], 2), round(load_after[0], 2)],
      "results": rows}, default=str))


if __name__ == "__main__":
  main()
