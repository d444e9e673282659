"""Learned soft superpixels: pure, jit-able ops on soft assignments (NHWC).

Conventions
-----------
An *assignment* for stride ``s`` has shape ``(B, H_s, W_s, 9)`` with
``H_s = H / s``. Fine pixel ``(i, j)`` (a pixel of the stride-``s`` grid) is
softly assigned to the 9 cells of the stride-``2s`` grid around its parent cell
``(i // 2, j // 2)``: neighbour ``k`` is the cell

    cell_k(i, j) = (i // 2 + k // 3 - 1, j // 2 + k % 3 - 1)

(row-major 3x3, ``k = 4`` is the parent). By default cells outside the grid get
weight exactly 0: they are masked before the softmax (``out_of_grid="mask"``).
The authors' code does not mask them (``out_of_grid="zero"``): a candidate
outside the grid is a zero-padded cell with similarity 0 that takes part in the
softmax, and `upsample` reads zeros from it. The weights of each pixel sum to 1
(a partition of unity) over all 9 candidates either way.

``assignments`` is always a sequence ordered from the finest stride to the
coarsest; for FCN-16 with strides 4 and 8 it is ``[A_4, A_8]``.

Implementation: every op is written with whole-array operations (a zero pad,
9 shifted slices, strided slices or reshapes to expose the 2x2 children of each
parent), never per-pixel gathers, because they run on every training step.
`upsample` and `downsample` rest on two linear maps that are each other's
adjoint in ``x``: ``_up`` (each fine pixel sums its 9 candidate cells, an
unrolled multiply-add that XLA fuses into one loop) and ``_pool`` (each cell
collects its candidates back through the reversed offsets). Their gradients are
written by hand (`jax.custom_vjp`): the cotangent of ``x`` is the other map and
the cotangent of the assignment a 9-neighbour correlation (``_correlate``).
On CPU (batch 8, 64x64 and 128x128 grids, 5 and 21 channels) automatic
differentiation of the same forward code was 1.7-4x slower forward+backward
than these hand-written gradients, and the earlier formulation (the 9
neighbours stacked and contracted with one einsum) 2-7x slower;
``benchmarks/superpixel_ops.py`` measures the ops against that einsum version
and a straightforward gather implementation. They compile in about 0.5 s more
per op pair than the einsum version. Consequence of `jax.custom_vjp`:
`upsample` and `downsample` support reverse-mode differentiation (to any
order) and `vmap`, but not forward mode (`jax.jvp`, `jax.jacfwd`).
"""

from typing import Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

NUM_NEIGHBOURS = 9
# (dy, dx) of neighbour k, row-major over the 3x3 window around the parent.
OFFSETS = tuple((k // 3 - 1, k % 3 - 1) for k in range(NUM_NEIGHBOURS))
_MASKED_LOGIT = -1e9  # exp() of this underflows to exactly 0 in float32.
_PARENT = np.eye(NUM_NEIGHBOURS, dtype=np.float32)[4]  # One-hot of k = 4.


def _check_pair(fine_hw, coarse_hw, what):
  if fine_hw[0] != 2 * coarse_hw[0] or fine_hw[1] != 2 * coarse_hw[1]:
    raise ValueError(
        f"{what}: the fine grid must be exactly twice the coarse grid, got "
        f"fine {tuple(fine_hw)} and coarse {tuple(coarse_hw)}.")


def _neighbours(x: jax.Array) -> jax.Array:
  """Stacks the 9 neighbours of every cell: (B, h, w, C) -> (B, h, w, 9, C).

  Entry ``[b, u, v, k]`` is ``x[b, u + dy_k, v + dx_k]``, zero outside the grid.
  """
  _, h, w, _ = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return jnp.stack(
      [xp[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in OFFSETS],
      axis=3)


def _children(a: jax.Array) -> jax.Array:
  """(B, 2h, 2w, ...) -> (B, h, 2, w, 2, ...): exposes the 2x2 children."""
  b, hh, ww = a.shape[:3]
  return a.reshape((b, hh // 2, 2, ww // 2, 2) + a.shape[3:])


def _pad(x: jax.Array) -> jax.Array:
  """Zero-pads the two spatial axes of ``(B, h, w, ...)`` by one cell."""
  return jnp.pad(x, ((0, 0), (1, 1), (1, 1)) + ((0, 0),) * (x.ndim - 3))


def _up_impl(x: jax.Array, a: jax.Array) -> jax.Array:
  """``y[i, j] = sum_k a[i, j, k] x[cell_k(i, j)]``: (B,h,w,C), (B,2h,2w,9)."""
  b, h, w, c = x.shape
  xp = _pad(x)
  ac = _children(a)  # (B, h, 2, w, 2, 9)
  y = 0
  for k, (dy, dx) in enumerate(OFFSETS):
    xk = xp[:, 1 + dy:1 + dy + h, None, 1 + dx:1 + dx + w, None]
    y = y + ac[..., k:k + 1] * xk
  return y.reshape(b, 2 * h, 2 * w, c)


def _pool_impl(y: jax.Array, a: jax.Array) -> jax.Array:
  """Adjoint of `_up_impl` in x: (B,2h,2w,C), (B,2h,2w,9) -> (B,h,w,C).

  ``z[u, v] = sum a[i, j, k] y[i, j]`` over ``(i, j, k)`` with
  ``cell_k(i, j) = (u, v)``.
  """
  _, hh, ww, _ = y.shape
  h, w = hh // 2, ww // 2
  kids = [(p, q) for p in range(2) for q in range(2)]
  y_kids = [y[:, p::2, q::2] for p, q in kids]
  a_kids = [a[:, p::2, q::2] for p, q in kids]
  z = 0
  for k, (dy, dx) in enumerate(OFFSETS):
    # Mass that the children of each parent send to its neighbour k, ...
    per_parent = sum(ak[..., k:k + 1] * yk for ak, yk in zip(a_kids, y_kids))
    # ... received by that neighbour.
    z = z + _pad(per_parent)[:, 1 - dy:1 - dy + h, 1 - dx:1 - dx + w]
  return z


def _correlate(f: jax.Array, x: jax.Array) -> jax.Array:
  """``r[i, j, k] = <f[i, j], x[cell_k(i, j)]>``: (B,2h,2w,C), (B,h,w,C) ->
  (B,2h,2w,9), 0 for cells outside the grid."""
  b, hh, ww, _ = f.shape
  nb = _neighbours(x)  # (B, h, w, 9, C)
  rows = []
  for p in range(2):
    cols = [jnp.einsum("bhwc,bhwkc->bhwk", f[:, p::2, q::2], nb)
            for q in range(2)]
    rows.append(jnp.stack(cols, axis=3))  # (B, h, w, 2, 9)
  return jnp.stack(rows, axis=2).reshape(b, hh, ww, NUM_NEIGHBOURS)


@jax.custom_vjp
def _up(x: jax.Array, a: jax.Array) -> jax.Array:
  return _up_impl(x, a)


@jax.custom_vjp
def _pool(y: jax.Array, a: jax.Array) -> jax.Array:
  return _pool_impl(y, a)


def _up_fwd(x, a):
  return _up_impl(x, a), (x, a)


def _up_bwd(res, g):
  x, a = res
  return _pool(g, a).astype(x.dtype), _correlate(g, x).astype(a.dtype)


def _pool_fwd(y, a):
  return _pool_impl(y, a), (y, a)


def _pool_bwd(res, g):
  y, a = res
  return _up(g, a).astype(y.dtype), _correlate(y, g).astype(a.dtype)


_up.defvjp(_up_fwd, _up_bwd)
_pool.defvjp(_pool_fwd, _pool_bwd)


def _norm(x: jax.Array) -> jax.Array:
  """L2 norm over the last axis (keepdims) whose gradient at 0 is 0, not NaN
  (``jnp.linalg.norm`` divides 0 by 0 there): the "double where" trick."""
  sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  nonzero = sq > 0
  return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1.0)), 0.0)


def valid_mask(h: int, w: int) -> np.ndarray:
  """Static ``(2h, 2w, 9)`` bool mask: neighbour k of each fine pixel lies in the
  ``(h, w)`` coarse grid."""
  u = np.arange(h)[:, None, None]
  v = np.arange(w)[None, :, None]
  dy = np.array([o[0] for o in OFFSETS])[None, None, :]
  dx = np.array([o[1] for o in OFFSETS])[None, None, :]
  m = (u + dy >= 0) & (u + dy < h) & (v + dx >= 0) & (v + dx < w)  # (h, w, 9)
  return np.repeat(np.repeat(m, 2, axis=0), 2, axis=1)


OUT_OF_GRID = ("mask", "zero")


def assign(fine_feat: jax.Array, coarse_feat: jax.Array,
           tau: Union[float, jax.Array] = 0.07, similarity: str = "dot",
           parent_bias: Union[None, float, jax.Array] = None,
           out_of_grid: str = "mask") -> jax.Array:
  """Soft assignment of every fine pixel to its 9 candidate coarse cells.

  The logit of candidate k is ``sim(fine[i, j], coarse[cell_k(i, j)]) / tau``
  (plus ``parent_bias`` for the parent, k = 4); the assignment is their
  softmax over the in-grid candidates. Similarities (``similarity``):

  * ``"dot"``: the raw dot product, as in the authors' code. Its
    scale is whatever the projections give: with tau = 0.07 on an untrained
    HCFCN-16 it saturates the softmax (measure it with
    `coarseseg_jax.assignment_stats`; results/README.md, "How the
    similarity was chosen").
  * ``"cosine"``: both vectors L2-normalised first, as the method's text (the
    thesis) describes it; logits then lie in ``[-1/tau, 1/tau]``. A
    learnable temperature (an array ``tau``) with cosine similarity is
    HCFormer's clustering module (`coarseseg_jax.models.hcfcn`).

  Args:
    fine_feat: ``(B, 2h, 2w, D)`` features at stride s.
    coarse_feat: ``(B, h, w, D)`` features at stride 2s.
    tau: softmax temperature, > 0: a Python float, or a scalar (shape ``()``)
      float32 array, e.g. a learnable temperature (then ``assign`` is
      differentiable in it).
    similarity: ``"dot"`` or ``"cosine"``, see above.
    parent_bias: ``None`` (the paper: nothing) or a scalar (float or shape
      ``()`` array, e.g. a learnable one) added to the parent's logit after
      the division by tau, in nats: with equal similarities the parent gets
      ``e^b / (e^b + n - 1)`` of the weight (n in-grid candidates).
    out_of_grid: ``"mask"`` (candidates outside the grid get weight exactly
      0) or ``"zero"`` (the authors' code: they are zero vectors, so their
      logit is 0, plus nothing, and they take part in the softmax).

  Returns:
    ``(B, 2h, 2w, 9)`` float32 assignment; rows sum to 1. With
    ``out_of_grid="zero"``, ``similarity="dot"``, ``tau`` a float and
    ``parent_bias=None`` it is the authors' ``HCDecoder.cluster`` (NHWC).
  """
  _check_pair(fine_feat.shape[1:3], coarse_feat.shape[1:3], "assign")
  fine = fine_feat.astype(jnp.float32)
  coarse = coarse_feat.astype(jnp.float32)
  if similarity == "cosine":
    fine = fine / (_norm(fine) + 1e-6)
    coarse = coarse / (_norm(coarse) + 1e-6)
  elif similarity != "dot":
    raise ValueError(f"similarity must be 'dot' or 'cosine', got {similarity!r}")
  if out_of_grid not in OUT_OF_GRID:
    raise ValueError(f"out_of_grid must be one of {OUT_OF_GRID}, got "
                     f"{out_of_grid!r}")
  b, hh, ww, _ = fine.shape
  logits = jnp.einsum("bhpwqd,bhwkd->bhpwqk", _children(fine),
                      _neighbours(coarse)).reshape(b, hh, ww, NUM_NEIGHBOURS)
  logits = logits / tau
  if parent_bias is not None:
    logits = logits + jnp.asarray(parent_bias, jnp.float32) * _PARENT
  if out_of_grid == "zero":  # Zero-padded cells: logit 0 (_neighbours pads 0).
    return jax.nn.softmax(logits, axis=-1)
  valid = valid_mask(hh // 2, ww // 2)[None]
  logits = jnp.where(valid, logits, _MASKED_LOGIT)
  return jnp.where(valid, jax.nn.softmax(logits, axis=-1), 0.0)


def cell_mass(assignment: jax.Array) -> jax.Array:
  """Assignment mass each coarse cell receives: ``(B, 2h, 2w, 9) -> (B, h, w)``.

  ``mass[u, v] = sum A[i, j, k]`` over all ``(i, j, k)`` with
  ``cell_k(i, j) = (u, v)`` (the denominator of `downsample`). The masses sum
  to the number of fine pixels, ``4 h w``: 4 per cell on average, exactly 4
  everywhere for the regular grid (all weight on the parent).
  """
  ones = jnp.ones(assignment.shape[:3] + (1,), assignment.dtype)
  return _pool(ones, assignment)[..., 0]


def upsample(x: jax.Array, assignment: jax.Array) -> jax.Array:
  """Decodes coarse cells to fine pixels through a soft assignment.

  Args:
    x: ``(B, h, w, C)`` values at stride 2s.
    assignment: ``(B, 2h, 2w, 9)`` assignment at stride s.

  Returns:
    ``(B, 2h, 2w, C)`` with ``y[i, j] = sum_k A[i, j, k] * x[cell_k(i, j)]``;
    cells outside the grid count 0. Dtype follows ``x`` and the assignment
    under JAX's promotion rules.
  """
  _check_pair(assignment.shape[1:3], x.shape[1:3], "upsample")
  dtype = jnp.result_type(x, assignment)
  return _up(x.astype(dtype), assignment.astype(dtype))


def downsample(x: jax.Array, assignment: jax.Array,
               eps: float = 1e-8) -> jax.Array:
  """Pools fine pixels into coarse cells: the assignment-weighted mean.

  Args:
    x: ``(B, 2h, 2w, C)`` values at stride s.
    assignment: ``(B, 2h, 2w, 9)`` assignment at stride s.
    eps: added to the mass in the denominator.

  Returns:
    ``(B, h, w, C)`` with ``z[u, v] = sum A[i,j,k] x[i,j] / (sum A[i,j,k] + eps)``
    over all ``(i, j, k)`` with ``cell_k(i, j) = (u, v)``.
  """
  if x.shape[1:3] != assignment.shape[1:3]:
    raise ValueError(
        f"downsample: x {tuple(x.shape)} and assignment "
        f"{tuple(assignment.shape)} must share their spatial size.")
  if x.shape[1] % 2 or x.shape[2] % 2:
    raise ValueError(f"downsample: spatial size {x.shape[1:3]} must be even.")
  dtype = jnp.result_type(x, assignment)
  ones = jnp.ones(x.shape[:3] + (1,), dtype)
  xa = jnp.concatenate([x.astype(dtype), ones], axis=-1)
  pooled = _pool(xa, assignment.astype(dtype))  # (B, h, w, C + 1): [sum, mass]
  return pooled[..., :-1] / (pooled[..., -1:] + eps)


def reconstruct(x: jax.Array,
                assignments: Sequence[jax.Array]) -> jax.Array:
  """Downsamples through every assignment (finest first) and back up.

  Args:
    x: ``(B, H_finest, W_finest, C)`` features at the finest assignment grid.
    assignments: finest first, e.g. ``[A_4, A_8]``.

  Returns:
    ``(B, H_finest, W_finest, C)``: the reconstruction of ``x`` from the
    coarsest superpixels.
  """
  for a in assignments:
    x = downsample(x, a.astype(jnp.float32))
  for a in reversed(assignments):
    x = upsample(x, a.astype(jnp.float32))
  return x


def hard_superpixels(assignments: Sequence[jax.Array]) -> jax.Array:
  """Hard superpixel ids at the finest assignment resolution.

  Each pixel follows its argmax cell level by level up to the coarsest grid;
  its id is that coarsest cell's row-major index.

  Args:
    assignments: assignments ordered finest first, e.g. ``[A_4, A_8]`` with
      shapes ``(B, H/4, W/4, 9)`` and ``(B, H/8, W/8, 9)``.

  Returns:
    ``(B, H_finest, W_finest)`` int32 ids in ``[0, H_c * W_c)`` where
    ``(H_c, W_c)`` is the coarsest grid (half the last assignment's size).
  """
  if not assignments:
    raise ValueError("hard_superpixels needs at least one assignment.")
  a0 = assignments[0]
  b, h0, w0, _ = a0.shape
  rows = jnp.broadcast_to(jnp.arange(h0)[None, :, None], (b, h0, w0))
  cols = jnp.broadcast_to(jnp.arange(w0)[None, None, :], (b, h0, w0))
  for a in assignments:
    _, h, w, _ = a.shape
    k = jnp.argmax(a, axis=-1).reshape(b, h * w)
    k_here = jnp.take_along_axis(k, (rows * w + cols).reshape(b, -1), axis=1)
    k_here = k_here.reshape(b, h0, w0)
    rows = jnp.clip(rows // 2 + k_here // 3 - 1, 0, h // 2 - 1)
    cols = jnp.clip(cols // 2 + k_here % 3 - 1, 0, w // 2 - 1)
  w_c = assignments[-1].shape[2] // 2
  return (rows * w_c + cols).astype(jnp.int32)
