"""The ResNet stem's 3x3 / stride-2 max-pool, with a cheap gradient (NHWC).

`max_pool_3x3_s2` computes exactly ``flax.linen.max_pool(x, (3, 3), (2, 2),
padding=((1, 1), (1, 1)))``, values and gradients, but differentiated in a
form XLA:CPU runs faster forward + backward
(``benchmarks/versus_torch/max_pool.py`` measures it; figures in
benchmarks/README.md). Not differentiated (evaluation), it is XLA's own
reduce-window.

Why: XLA differentiates ``reduce_window(max)`` with a variadic reduce-window
that carries four int32 index arrays of the full input size through the
forward pass, then a select-and-scatter: on the CPU a noticeable share of
the HCFCN-16 train step, where PyTorch's ``max_pool2d_with_indices`` costs
little.

How: each output cell's 9 candidates are strided slices of the input padded
with -inf. The forward pass keeps the running maximum and, as int8, the index
``k = 3 dy + dx`` of the first candidate that attains it: the candidate XLA's
select-and-scatter gives the gradient to, so ties (e.g. equal ReLU outputs)
are broken the same way and the gradients are equal, up to float32 rounding
where an input is the maximum of several windows (their gradients are added
in another order; 1e-6 relative). The backward pass splits the input by row
and column parity and gathers, for each parity class, the output gradients
of the 1, 2 or 4 windows that read it and whose argmax it is: elementwise
ops that XLA fuses, no scatter. NaN propagates, as through XLA's max.
"""

from typing import List, Tuple

import jax
import jax.numpy as jnp


def _check(x: jax.Array) -> None:
  if x.ndim != 4 or x.shape[1] % 2 or x.shape[2] % 2:
    raise ValueError("max_pool_3x3_s2 needs (batch, height, width, channels) "
                     f"with even height and width, got shape {tuple(x.shape)}.")


def _unshift(x: jax.Array, axis: int) -> jax.Array:
  """``out[i] = x[i + 1]`` along ``axis``, 0 at the last ``i``."""
  pad = [(0, 0)] * x.ndim
  pad[axis] = (0, 1)
  return jax.lax.slice_in_dim(jnp.pad(x, pad), 1, x.shape[axis] + 1, axis=axis)


def _candidates(x: jax.Array) -> List[jax.Array]:
  """The 9 ``(B, H/2, W/2, C)`` candidates of every window, ``k = 3 dy + dx``.

  Candidate ``(dy, dx)`` of output ``(u, v)`` is input ``(2u + dy - 1,
  2v + dx - 1)``, -inf outside the image: a strided slice of the padded
  input (XLA fuses the slices into their consumers).
  """
  _, h, w, _ = x.shape
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)),
                   constant_values=-jnp.inf)
  return [padded[:, dy:dy + h:2, dx:dx + w:2]
          for dy in range(3) for dx in range(3)]


def _forward(x: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """(maximum, int8 index of the first candidate attaining it)."""
  candidates = _candidates(x)
  best = candidates[0]
  index = jnp.zeros(best.shape, jnp.int8)
  for k, candidate in enumerate(candidates[1:], 1):
    better = (candidate > best) | jnp.isnan(candidate)
    best = jnp.where(better, candidate, best)
    index = jnp.where(better, jnp.int8(k), index)
  return best, index


@jax.custom_vjp
def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  """3x3 max-pool, stride 2, padding 1: ``(B, H, W, C) -> (B, H/2, W/2, C)``.

  Args:
    x: NHWC array (any float dtype), H and W even.

  Returns:
    The pooled array, equal to ``flax.linen.max_pool(x, (3, 3), (2, 2),
    padding=((1, 1), (1, 1)))``; its gradient equals that of flax's pool
    too, ties included, up to float32 rounding (see the module docstring).
    Differentiable in reverse mode only (`jax.custom_vjp`).
  """
  _check(x)
  # Not differentiated (evaluation, prediction): XLA's own reduce-window.
  return jax.lax.reduce_window(x, jnp.array(-jnp.inf, x.dtype), jax.lax.max,
                               (1, 3, 3, 1), (1, 2, 2, 1),
                               ((0, 0), (1, 1), (1, 1), (0, 0)))


def _fwd(x):
  _check(x)
  best, index = _forward(x)
  # Stored, not recomputed: XLA would otherwise fuse the whole forward pass
  # into each of the backward pass's reads of the index.
  return best, jax.lax.optimization_barrier(index)


def _bwd(index, g):
  """Input gradient: each input collects ``g`` from the windows whose argmax
  it is. Even row (col) <- dy (dx) = 1 of its own cell; odd <- dy = 2 of its
  own cell and dy = 0 of the next."""
  sent = [jnp.where(index == k, g, jnp.zeros_like(g)) for k in range(9)]

  def row_parity(p, dx):
    if p == 0:
      return sent[3 + dx]
    return sent[6 + dx] + _unshift(sent[dx], 1)

  blocks = []
  for p in range(2):
    even = row_parity(p, 1)
    odd = row_parity(p, 2) + _unshift(row_parity(p, 0), 2)
    blocks.append(jnp.stack([even, odd], axis=3))  # (B, h, w, 2, C)
  b, h, w, c = g.shape
  return (jnp.stack(blocks, axis=2).reshape(b, 2 * h, 2 * w, c),)


max_pool_3x3_s2.defvjp(_fwd, _bwd)
