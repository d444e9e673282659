r"""Superpixel ops: ours vs a plain gather version and an autodiffed einsum one.

  python benchmarks/superpixel_ops.py            # batch 8, stride-4 grids 64, 128
  python benchmarks/superpixel_ops.py --quick    # tiny, under a minute

Times forward + backward under `jax.jit` of `superpixels.upsample`,
`superpixels.downsample` (21 and 5 channels, through the stride-4 assignment
A_4), `losses.slic_loss` (m = 1, so all 5 channels) and `losses.slic_map_loss`
(256 segments) through [A_4, A_8], against two baselines written here:

* gather: a straightforward implementation with static index arrays of the 9
  neighbour cells of every pixel, `jnp.take` for `upsample` and a scatter-add
  (`.at[].add`) for `downsample`;
* einsum: the earlier formulation of `superpixels` (pad + 9 shifted slices
  stacked and contracted with one einsum, gradients by autodiff).

The losses run with the baseline ops swapped in; `slic_map_loss`'s baselines
build the dense one-hot at the finest grid (ours scatters/gathers its two
sparse ends). All versions are checked to agree before timing. Reports the
median of timed runs after compilation and the ratios baseline time / ours
(> 1: ours is faster). The last line is one JSON object.
"""

import argparse
import json
import os
import sys
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))  # benchmarks/: timing.py
sys.path[:0] = [os.path.dirname(HERE), HERE]

from coarseseg_jax import xla_flags  # pylint: disable=unused-import,g-bad-import-order

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
import timing  # benchmarks/timing.py  # pylint: disable=g-import-not-at-top

from coarseseg_jax import host  # pylint: disable=g-import-not-at-top
from coarseseg_jax import losses  # pylint: disable=g-import-not-at-top
from coarseseg_jax import superpixels


# ------------------------------------------------ the gather baseline ------
def neighbour_index(h, w):
  """Flat index into the (h, w) grid of neighbour k of every fine pixel.

  Returns ``(2h, 2w, 9)`` int32 indices (clamped into the grid) and the
  ``(2h, 2w, 9)`` bool mask of neighbours that really lie inside it.
  """
  i = np.arange(2 * h)[:, None, None]
  j = np.arange(2 * w)[None, :, None]
  dy = np.array([o[0] for o in superpixels.OFFSETS])
  dx = np.array([o[1] for o in superpixels.OFFSETS])
  r, c = i // 2 + dy, j // 2 + dx
  valid = (r >= 0) & (r < h) & (c >= 0) & (c < w)
  idx = np.clip(r, 0, h - 1) * w + np.clip(c, 0, w - 1)
  return idx.astype(np.int32), valid


def gather_upsample(x, assignment):
  b, h, w, c = x.shape
  idx, valid = neighbour_index(h, w)
  cells = jnp.take(x.reshape(b, h * w, c), idx.reshape(-1), axis=1)
  cells = cells.reshape(b, 2 * h, 2 * w, 9, c)
  return jnp.einsum("bijk,bijkc->bijc", assignment * valid, cells)


def gather_downsample(x, assignment, eps=1e-8):
  b, hh, ww, c = x.shape
  h, w = hh // 2, ww // 2
  idx, valid = neighbour_index(h, w)
  xa = jnp.concatenate([x, jnp.ones(x.shape[:3] + (1,), x.dtype)], axis=-1)
  contrib = (assignment * valid)[..., None] * xa[..., None, :]
  pooled = jnp.zeros((b, h * w, c + 1), x.dtype).at[:, idx.reshape(-1)].add(
      contrib.reshape(b, hh * ww * 9, c + 1))
  pooled = pooled.reshape(b, h, w, c + 1)
  return pooled[..., :-1] / (pooled[..., -1:] + eps)


# ------------------------------------------- the einsum baseline ----------
def _stack_neighbours(x):
  _, h, w, _ = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return jnp.stack([xp[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                    for dy, dx in superpixels.OFFSETS], axis=3)


def _children(a):
  b, hh, ww = a.shape[:3]
  return a.reshape((b, hh // 2, 2, ww // 2, 2) + a.shape[3:])


def einsum_upsample(x, assignment):
  b, hh, ww, _ = assignment.shape
  y = jnp.einsum("bhpwqk,bhwkc->bhpwqc", _children(assignment),
                 _stack_neighbours(x))
  return y.reshape(b, hh, ww, x.shape[-1])


def einsum_downsample(x, assignment, eps=1e-8):
  _, hh, ww, _ = x.shape
  h, w = hh // 2, ww // 2
  xa = jnp.concatenate([x, jnp.ones(x.shape[:3] + (1,), x.dtype)], axis=-1)
  per_parent = jnp.einsum("bhpwqk,bhpwqc->bhwkc", _children(assignment),
                          _children(xa))
  yp = jnp.pad(per_parent, ((0, 0), (1, 1), (1, 1), (0, 0), (0, 0)))
  pooled = sum(yp[:, 1 - dy:1 - dy + h, 1 - dx:1 - dx + w, k]
               for k, (dy, dx) in enumerate(superpixels.OFFSETS))
  return pooled[..., :-1] / (pooled[..., -1:] + eps)


BASELINES = {"gather": (gather_upsample, gather_downsample),
             "einsum": (einsum_upsample, einsum_downsample)}


def dense_slic_map_loss(slic, assignments, num_segments):
  """The straightforward slic_map_loss: a dense one-hot at the finest grid."""
  s0 = slic.shape[1] // assignments[0].shape[1]
  ids = slic[:, s0 // 2::s0, s0 // 2::s0]
  valid = (ids >= 0) & (ids < num_segments)
  q = superpixels.reconstruct(jax.nn.one_hot(ids, num_segments), assignments)
  q_id = jnp.take_along_axis(q, jnp.where(valid, ids, 0)[..., None], -1)
  nll = jnp.where(valid, -jnp.log(q_id[..., 0] + 1e-8), 0.0)
  return jnp.sum(nll) / jnp.maximum(jnp.sum(valid), 1)


# --------------------------------------------------------------- timing ----
def compile_fn(fn, args):
  """Returns the compiled `fn` and its compile time (process CPU seconds, so
  other processes on the machine do not count)."""
  return timing.timed(jax.jit(fn).lower(*args).compile, clock="cpu")


def time_interleaved(compiled, args, repeats, warmup=1):
  """Median wall time of each compiled function; the runs are interleaved so
  that a burst of load from other processes hits all of them alike."""
  return timing.median_seconds(
      {name: lambda fn=fn: jax.block_until_ready(fn(*args))
       for name, fn in compiled.items()}, repeats, warmup)


def with_ops(fn, ops):
  """`fn` with `ops` = (upsample, downsample) swapped into `superpixels` and
  the dense `slic_map_loss` into `losses` while it is traced."""
  def wrapped(*args):
    with mock.patch.object(superpixels, "upsample", ops[0]), \
         mock.patch.object(superpixels, "downsample", ops[1]), \
         mock.patch.object(losses, "slic_map_loss", dense_slic_map_loss):
      return fn(*args)
  return wrapped


def random_assignment(key, b, hh, ww):
  k1, k2 = jax.random.split(key)
  fine = jax.random.normal(k1, (b, hh, ww, 8))
  coarse = jax.random.normal(k2, (b, hh // 2, ww // 2, 8))
  return superpixels.assign(fine, coarse, tau=1.0)


def cases(b, size, channels, num_segments, key):
  """Yields (name, fn, args): fn is a forward+backward of one op."""
  keys = jax.random.split(key, 8)
  a4 = random_assignment(keys[0], b, size, size)
  a8 = random_assignment(keys[1], b, size // 2, size // 2)
  for c in channels:
    x = jax.random.normal(keys[2], (b, size // 2, size // 2, c))
    ct = jax.random.normal(keys[3], (b, size, size, c))
    up = lambda x, a, ct: jax.grad(
        lambda x, a: jnp.sum(superpixels.upsample(x, a) * ct), (0, 1))(x, a)
    yield f"upsample C={c}", up, (x, a4, ct)
    xf = jax.random.normal(keys[4], (b, size, size, c))
    ctc = jax.random.normal(keys[5], (b, size // 2, size // 2, c))
    down = lambda x, a, ct: jax.grad(
        lambda x, a: jnp.sum(superpixels.downsample(x, a) * ct), (0, 1))(x, a)
    yield f"downsample C={c}", down, (xf, a4, ctc)
  image = jax.random.uniform(keys[6], (b, 4 * size, 4 * size, 3))
  slic = jax.random.randint(keys[7], (b, 4 * size, 4 * size), 0, num_segments)
  sl = lambda img, a4, a8: jax.value_and_grad(
      lambda a: losses.slic_loss(img, a, 1.0))([a4, a8])
  yield "slic_loss m=1", sl, (image, a4, a8)
  sm = lambda s, a4, a8: jax.value_and_grad(
      lambda a: losses.slic_map_loss(s, a, num_segments))([a4, a8])
  yield f"slic_map_loss N={num_segments}", sm, (slic, a4, a8)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="tiny, fast run")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128],
                      help="stride-4 grid sizes (image side / 4)")
  parser.add_argument("--num_segments", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args()
  if args.quick:
    args.batch_size, args.sizes = 2, [16]
    args.num_segments, args.repeats = 32, 3
  channels = (21, 5)

  print(f"backend={jax.default_backend()} devices={jax.device_count()} "
        f"cpu={host.processor()} "
        f"cores={os.cpu_count()} batch={args.batch_size} "
        f"repeats={args.repeats} (median ms, forward+backward)")
  header = (f"{'op':<24}{'grid':>5}{'ours':>9}{'gather':>9}{'einsum':>9}"
            f"{'gather/ours':>13}{'einsum/ours':>13}{'compile s':>11}")
  print(header)
  print("-" * len(header))
  rows = []
  key = jax.random.PRNGKey(0)
  for size in args.sizes:
    for name, fn, fargs in cases(args.batch_size, size, channels,
                                 args.num_segments, key):
      variants = {"ours": fn}
      variants.update({k: with_ops(fn, ops) for k, ops in BASELINES.items()})
      compiled, compile_s = {}, {}
      for k, f in variants.items():
        compiled[k], compile_s[k] = compile_fn(f, fargs)
      expected = jax.tree.leaves(compiled["ours"](*fargs))
      for k in BASELINES:
        for u, v in zip(expected, jax.tree.leaves(compiled[k](*fargs))):
          np.testing.assert_allclose(u, v, rtol=2e-3, atol=2e-3,
                                     err_msg=f"{name} vs {k}")
      secs = time_interleaved(compiled, fargs, args.repeats)
      row = {"op": name, "grid": size,
             **{f"{k}_ms": round(1e3 * v, 3) for k, v in secs.items()},
             **{f"{k}_ratio": round(secs[k] / secs["ours"], 3)
                for k in BASELINES},
             **{f"{k}_compile_s": round(v, 2) for k, v in compile_s.items()}}
      rows.append(row)
      print(f"{name:<24}{size:>5}{row['ours_ms']:>9.2f}{row['gather_ms']:>9.2f}"
            f"{row['einsum_ms']:>9.2f}{row['gather_ratio']:>13.2f}"
            f"{row['einsum_ratio']:>13.2f}{compile_s['ours']:>11.2f}",
            flush=True)
  print(json.dumps({"benchmark": "superpixel_ops", "quick": args.quick,
                    "backend": jax.default_backend(),
                    "batch_size": args.batch_size,
                    "num_segments": args.num_segments, "results": rows}))


if __name__ == "__main__":
  main()
