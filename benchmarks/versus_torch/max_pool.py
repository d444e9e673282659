r"""The stem's max-pool: `pooling.max_pool_3x3_s2` against flax's max_pool.

  python benchmarks/versus_torch/max_pool.py  # batch 8, 128x128x64 (256's stem)
  python benchmarks/versus_torch/run.py --what=max_pool --quick   # the same

Times the forward pass and forward + backward (``sum(pool(x) * g)``, jitted)
of both on ReLU outputs, one run of each in turn, median of ``--repeats``;
checks first that the values are equal and the gradients equal up to
float32 rounding. The last line is one JSON
object.
"""

import argparse
import functools
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))  # benchmarks/versus_torch
BENCHMARKS = os.path.dirname(HERE)  # timing.py
sys.path[:0] = [os.path.dirname(BENCHMARKS), BENCHMARKS]

from coarseseg_jax import xla_flags  # pylint: disable=unused-import,g-bad-import-order

import flax.linen as nn  # pylint: disable=g-import-not-at-top
import jax
import jax.numpy as jnp
import numpy as np
import timing  # benchmarks/timing.py  # pylint: disable=g-import-not-at-top

from coarseseg_jax.models import pooling  # pylint: disable=g-import-not-at-top


def flax_pool(x):
  return nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--repeats", type=int, default=15)
  args = parser.parse_args()
  shape = (2, 32, 32, 16) if args.quick else (8, 128, 128, 64)
  x = jax.nn.relu(jax.random.normal(jax.random.PRNGKey(0), shape))
  g = jax.random.normal(jax.random.PRNGKey(1),
                        (shape[0], shape[1] // 2, shape[2] // 2, shape[3]))
  pools = {"flax": flax_pool, "ours": pooling.max_pool_3x3_s2}
  fns = {}
  for name, pool in pools.items():
    loss = functools.partial(lambda p, v: jnp.sum(p(v) * g), pool)
    fns[f"{name} fwd"] = jax.jit(pool)
    fns[f"{name} fwd+bwd"] = jax.jit(jax.grad(loss))
  results = {key: jax.block_until_ready(fn(x)) for key, fn in fns.items()}
  np.testing.assert_array_equal(results["flax fwd"], results["ours fwd"])
  # An input that is the maximum of several windows sums their gradients, in
  # another order than XLA's select-and-scatter: float32 rounding.
  grad_diff = float(jnp.max(jnp.abs(results["flax fwd+bwd"] -
                                    results["ours fwd+bwd"])))
  assert grad_diff <= 1e-6 * float(jnp.max(jnp.abs(g))) * 4, grad_diff
  seconds = timing.median_seconds(
      {key: lambda fn=fn: jax.block_until_ready(fn(x))
       for key, fn in fns.items()}, args.repeats)
  ms = {key: round(1000 * v, 2) for key, v in seconds.items()}
  for key, value in ms.items():
    print(f"{key:14s} {value:8.2f} ms")
  for kind in ("fwd", "fwd+bwd"):
    print(f"{kind}: flax / ours = {ms[f'flax {kind}'] / ms[f'ours {kind}']:.2f}")
  print(f"largest gradient difference: {grad_diff:.1e}")
  print(json.dumps({"benchmark": "max_pool", "shape": shape,
                    "load_avg": round(os.getloadavg()[0], 2),
                    "grad_diff": grad_diff, "ms": ms}))


if __name__ == "__main__":
  main()
