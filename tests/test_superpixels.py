"""Superpixel ops against slow per-pixel NumPy loop references."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coarseseg_jax import superpixels

# Neighbour k of fine pixel (i, j) is coarse cell (i//2 + DY[k], j//2 + DX[k]).
DY = [-1, -1, -1, 0, 0, 0, 1, 1, 1]
DX = [-1, 0, 1, -1, 0, 1, -1, 0, 1]


def _cell(i, j, k, h, w):
  """The coarse cell of neighbour k of fine pixel (i, j), or None outside."""
  u, v = i // 2 + DY[k], j // 2 + DX[k]
  return (u, v) if 0 <= u < h and 0 <= v < w else None


def ref_valid_mask(h, w):
  out = np.zeros((2 * h, 2 * w, 9), bool)
  for i in range(2 * h):
    for j in range(2 * w):
      for k in range(9):
        out[i, j, k] = _cell(i, j, k, h, w) is not None
  return out


def ref_assign(fine, coarse, tau, similarity, parent_bias=0.0):
  fine = np.asarray(fine, np.float64)
  coarse = np.asarray(coarse, np.float64)
  if similarity == "cosine":
    fine = fine / (np.linalg.norm(fine, axis=-1, keepdims=True) + 1e-6)
    coarse = coarse / (np.linalg.norm(coarse, axis=-1, keepdims=True) + 1e-6)
  b, hh, ww, _ = fine.shape
  h, w = coarse.shape[1:3]
  out = np.zeros((b, hh, ww, 9))
  for n in range(b):
    for i in range(hh):
      for j in range(ww):
        logits = {}
        for k in range(9):
          c = _cell(i, j, k, h, w)
          if c is not None:
            logits[k] = fine[n, i, j] @ coarse[n, c[0], c[1]] / tau
            logits[k] += parent_bias if k == 4 else 0.0
        top = max(logits.values())
        total = sum(np.exp(v - top) for v in logits.values())
        for k, v in logits.items():
          out[n, i, j, k] = np.exp(v - top) / total
  return out


def ref_upsample(x, a):
  x, a = np.asarray(x, np.float64), np.asarray(a, np.float64)
  b, h, w, c = x.shape
  out = np.zeros((b, 2 * h, 2 * w, c))
  for n in range(b):
    for i in range(2 * h):
      for j in range(2 * w):
        for k in range(9):
          cell = _cell(i, j, k, h, w)
          if cell is not None:
            out[n, i, j] += a[n, i, j, k] * x[n, cell[0], cell[1]]
  return out


def ref_downsample(x, a, eps=1e-8):
  x, a = np.asarray(x, np.float64), np.asarray(a, np.float64)
  b, hh, ww, c = x.shape
  h, w = hh // 2, ww // 2
  num, den = np.zeros((b, h, w, c)), np.zeros((b, h, w, 1))
  for n in range(b):
    for i in range(hh):
      for j in range(ww):
        for k in range(9):
          cell = _cell(i, j, k, h, w)
          if cell is not None:
            num[n, cell[0], cell[1]] += a[n, i, j, k] * x[n, i, j]
            den[n, cell[0], cell[1]] += a[n, i, j, k]
  return num / (den + eps)


def ref_hard_superpixels(assignments):
  assignments = [np.asarray(a) for a in assignments]
  b, h0, w0, _ = assignments[0].shape
  w_c = assignments[-1].shape[2] // 2
  out = np.zeros((b, h0, w0), np.int64)
  for n in range(b):
    for i in range(h0):
      for j in range(w0):
        r, c = i, j
        for a in assignments:
          h, w = a.shape[1] // 2, a.shape[2] // 2
          k = int(np.argmax(a[n, r, c]))
          r, c = _cell(r, c, k, h, w)  # An argmax is never a masked cell.
        out[n, i, j] = r * w_c + c
  return out


def random_assignment(rng, b, h, w, d=4, tau=0.5):
  """A soft assignment at the (2h, 2w) grid from random features."""
  fine = rng.normal(size=(b, 2 * h, 2 * w, d)).astype(np.float32)
  coarse = rng.normal(size=(b, h, w, d)).astype(np.float32)
  return superpixels.assign(fine, coarse, tau=tau)


@pytest.mark.parametrize("h,w", [(1, 1), (2, 3), (4, 2)])
def test_valid_mask_matches_loop(h, w):
  np.testing.assert_array_equal(superpixels.valid_mask(h, w),
                                ref_valid_mask(h, w))


@pytest.mark.slow  # 4 s on 2 cores (compiles or runs more).
@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_assign_matches_loop_masks_border_and_sums_to_one(similarity):
  rng = np.random.default_rng(0)
  fine = rng.normal(size=(2, 6, 8, 5)).astype(np.float32)
  coarse = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
  tau = 0.7 if similarity == "dot" else 0.2
  a = np.asarray(superpixels.assign(fine, coarse, tau=tau,
                                    similarity=similarity))
  assert a.shape == (2, 6, 8, 9) and a.dtype == np.float32
  np.testing.assert_allclose(a, ref_assign(fine, coarse, tau, similarity),
                             atol=1e-5)
  invalid = ~ref_valid_mask(3, 4)
  assert np.all(a[:, invalid] == 0.0)  # Exactly 0 outside the grid.
  assert np.all(a[:, ~invalid] > 0.0)
  np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-6)


@pytest.mark.slow  # 5 s on 2 cores (compiles or runs more).
@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_assign_with_array_tau_and_parent_bias_matches_loop(similarity):
  rng = np.random.default_rng(10)
  fine = rng.normal(size=(2, 6, 4, 3)).astype(np.float32)
  coarse = rng.normal(size=(2, 3, 2, 3)).astype(np.float32)
  tau = 0.9 if similarity == "dot" else 0.3
  plain = superpixels.assign(fine, coarse, tau=tau, similarity=similarity)
  # A scalar array tau (a learnable temperature) gives the same result, and
  # parent_bias=None is the paper's computation bit for bit.
  arr = superpixels.assign(fine, coarse, tau=jnp.float32(tau),
                           similarity=similarity, parent_bias=None)
  np.testing.assert_array_equal(plain, arr)
  for bias in (1.5, jnp.float32(-2.0)):
    a = np.asarray(jax.jit(functools.partial(
        superpixels.assign, similarity=similarity))(
            fine, coarse, jnp.float32(tau), parent_bias=bias))
    np.testing.assert_allclose(
        a, ref_assign(fine, coarse, tau, similarity, float(bias)), atol=1e-5)
    assert np.all(a[:, ~ref_valid_mask(3, 2)] == 0.0)
    np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-6)
  # Equal similarities (zero features): the parent gets e^b / (e^b + n - 1).
  z = superpixels.assign(np.zeros_like(fine), np.zeros_like(coarse), tau=tau,
                         similarity=similarity, parent_bias=2.0)
  n = ref_valid_mask(3, 2).sum(-1)
  parent = np.exp(2.0) / (np.exp(2.0) + n - 1)
  np.testing.assert_allclose(z[..., 4], np.broadcast_to(parent, (2, 6, 4)),
                             rtol=1e-6)


def test_assign_is_differentiable_in_tau_and_parent_bias():
  rng = np.random.default_rng(11)
  fine = jnp.asarray(rng.normal(size=(1, 4, 4, 3)), jnp.float32)
  coarse = jnp.asarray(rng.normal(size=(1, 2, 2, 3)), jnp.float32)
  weights = jnp.asarray(rng.normal(size=(1, 4, 4, 9)), jnp.float32)

  def loss(log_tau, bias):
    a = superpixels.assign(fine, coarse, tau=jnp.exp(log_tau),
                           similarity="cosine", parent_bias=bias)
    return jnp.sum(a * weights)

  g_tau, g_bias = jax.jit(jax.grad(loss, argnums=(0, 1)))(
      jnp.log(jnp.float32(0.05)), jnp.float32(1.0))
  assert np.isfinite(g_tau) and g_tau != 0
  assert np.isfinite(g_bias) and g_bias != 0
  eps = 1e-3
  fd = (loss(jnp.log(0.05) + eps, 1.0) - loss(jnp.log(0.05) - eps, 1.0)) / (
      2 * eps)
  np.testing.assert_allclose(g_tau, fd, rtol=2e-2, atol=1e-4)


def test_cell_mass_matches_loop_and_sums_to_the_pixel_count():
  rng = np.random.default_rng(12)
  a = random_assignment(rng, 2, 3, 4)
  ones = np.ones((2, 6, 8, 1))
  mass = np.asarray(superpixels.cell_mass(a))
  assert mass.shape == (2, 3, 4)
  # downsample's denominator: sum of the weights each cell receives.
  num = ref_downsample(ones, a, eps=0.0)  # 1 wherever the mass is > 0.
  assert np.all(num == 1.0)
  ref = np.zeros((2, 3, 4))
  a_np = np.asarray(a)
  for n in range(2):
    for i in range(6):
      for j in range(8):
        for k in range(9):
          c = _cell(i, j, k, 3, 4)
          if c is not None:
            ref[n, c[0], c[1]] += a_np[n, i, j, k]
  np.testing.assert_allclose(mass, ref, rtol=1e-5)
  np.testing.assert_allclose(mass.sum((1, 2)), 6 * 8, rtol=1e-5)


def test_cosine_ignores_feature_scale():
  rng = np.random.default_rng(1)
  fine = rng.normal(size=(1, 4, 4, 3)).astype(np.float32)
  coarse = rng.normal(size=(1, 2, 2, 3)).astype(np.float32)
  scale = rng.uniform(0.5, 5.0, size=(1, 4, 4, 1)).astype(np.float32)
  cos = lambda f: superpixels.assign(f, coarse, similarity="cosine")
  np.testing.assert_allclose(cos(fine), cos(fine * scale), atol=1e-5)
  dot = lambda f: superpixels.assign(f, coarse, similarity="dot")
  assert np.abs(dot(fine) - dot(fine * scale)).max() > 1e-2


@pytest.mark.slow  # 4 s on 2 cores (compiles or runs more).
def test_upsample_and_downsample_match_loops():
  rng = np.random.default_rng(2)
  a = random_assignment(rng, 2, 3, 4)
  x = rng.normal(size=(2, 3, 4, 3)).astype(np.float32)
  np.testing.assert_allclose(superpixels.upsample(x, a), ref_upsample(x, a),
                             rtol=1e-5, atol=1e-5)
  xf = rng.normal(size=(2, 6, 8, 3)).astype(np.float32)
  np.testing.assert_allclose(superpixels.downsample(xf, a),
                             ref_downsample(xf, a), rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # 4 s on 2 cores (compiles or runs more).
def test_downsample_of_constant_is_constant():
  rng = np.random.default_rng(3)
  a = random_assignment(rng, 2, 3, 3)
  const = np.array([2.5, -7.0], np.float32)
  x = np.broadcast_to(const, (2, 6, 6, 2))
  np.testing.assert_allclose(superpixels.downsample(x, a),
                             np.broadcast_to(const, (2, 3, 3, 2)), rtol=1e-6)


def test_upsample_with_one_hot_assignment_copies_the_chosen_cell():
  rng = np.random.default_rng(4)
  h, w = 3, 4
  x = rng.normal(size=(1, h, w, 2)).astype(np.float32)
  # Parent everywhere: every pixel copies its parent cell.
  parent = np.zeros((1, 2 * h, 2 * w, 9), np.float32)
  parent[..., 4] = 1.0
  y = np.asarray(superpixels.upsample(x, parent))
  np.testing.assert_array_equal(y, x.repeat(2, 1).repeat(2, 2))
  # A random valid neighbour per pixel: the pixel copies that cell.
  valid = ref_valid_mask(h, w)
  a = np.zeros((1, 2 * h, 2 * w, 9), np.float32)
  for i in range(2 * h):
    for j in range(2 * w):
      a[0, i, j, rng.choice(np.flatnonzero(valid[i, j]))] = 1.0
  y = np.asarray(superpixels.upsample(x, a))
  for i in range(2 * h):
    for j in range(2 * w):
      u, v = _cell(i, j, int(np.argmax(a[0, i, j])), h, w)
      np.testing.assert_array_equal(y[0, i, j], x[0, u, v])


def test_shape_errors():
  z = lambda *s: jnp.zeros(s, jnp.float32)
  with pytest.raises(ValueError, match="twice"):
    superpixels.assign(z(1, 4, 4, 2), z(1, 3, 2, 2))
  with pytest.raises(ValueError, match="similarity"):
    superpixels.assign(z(1, 4, 4, 2), z(1, 2, 2, 2), similarity="l1")
  with pytest.raises(ValueError, match="twice"):
    superpixels.upsample(z(1, 2, 3, 1), z(1, 4, 4, 9))
  with pytest.raises(ValueError, match="spatial"):
    superpixels.downsample(z(1, 4, 6, 1), z(1, 4, 4, 9))
  with pytest.raises(ValueError, match="even"):
    superpixels.downsample(z(1, 3, 4, 1), z(1, 3, 4, 9))
  with pytest.raises(ValueError, match="at least one"):
    superpixels.hard_superpixels([])


@pytest.mark.slow  # 3 s on 2 cores (compiles or runs more).
def test_hard_superpixels_matches_loop_on_two_levels():
  rng = np.random.default_rng(5)
  # Finest grid 8x12 -> 4x6 -> coarsest 2x3.
  a0 = random_assignment(rng, 2, 4, 6, tau=0.3)
  a1 = random_assignment(rng, 2, 2, 3, tau=0.3)
  ids = np.asarray(superpixels.hard_superpixels([a0, a1]))
  assert ids.shape == (2, 8, 12) and ids.dtype == np.int32
  ref = ref_hard_superpixels([a0, a1])
  np.testing.assert_array_equal(ids, ref)
  assert len(np.unique(ref)) > 2  # Not a trivial map.
  # One level: ids index the 4x6 grid.
  np.testing.assert_array_equal(superpixels.hard_superpixels([a0]),
                                ref_hard_superpixels([a0]))


def test_jit_and_grad_are_finite():
  rng = np.random.default_rng(6)
  fine = jnp.asarray(rng.normal(size=(2, 8, 8, 3)), jnp.float32)
  coarse = jnp.asarray(rng.normal(size=(2, 4, 4, 3)), jnp.float32)
  x = jnp.asarray(rng.normal(size=(2, 8, 8, 2)), jnp.float32)

  def loss(fine, coarse, x):
    total = 0.0
    for similarity in ("dot", "cosine"):
      a = superpixels.assign(fine, coarse, tau=0.07, similarity=similarity)
      total += jnp.sum(
          (superpixels.upsample(superpixels.downsample(x, a), a) - x) ** 2)
    return total

  grad_fn = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
  grads = grad_fn(fine, coarse, x)
  for g in grads:
    assert np.all(np.isfinite(g))
  assert np.abs(grads[0]).max() > 0  # The assignment actually gets gradient.
  # Zero features (cosine normalisation at the 1e-6 guard) stay finite too.
  zeros = jnp.zeros_like(fine), jnp.zeros_like(coarse)
  for g in grad_fn(*zeros, x):
    assert np.all(np.isfinite(g))


def _finite_difference(fn, arr, h=1e-6):
  """Central differences of a scalar float64 NumPy function of `arr`."""
  arr = np.asarray(arr, np.float64)
  grad = np.zeros_like(arr)
  for idx in np.ndindex(arr.shape):
    e = np.zeros_like(arr)
    e[idx] = h
    grad[idx] = (fn(arr + e) - fn(arr - e)) / (2 * h)
  return grad


@pytest.mark.slow  # 4 s on 2 cores (compiles or runs more).
@pytest.mark.parametrize("op", ["upsample", "downsample"])
def test_hand_written_gradients_match_finite_differences(op):
  rng = np.random.default_rng(7)
  a = np.asarray(random_assignment(rng, 1, 2, 3), np.float64)  # Fine 4x6.
  fine = op == "downsample"
  x = rng.normal(size=(1, 4, 6, 2) if fine else (1, 2, 3, 2))
  out_shape = (1, 2, 3, 2) if fine else (1, 4, 6, 2)
  ct = rng.normal(size=out_shape)
  ref = ref_downsample if fine else ref_upsample
  jax_op = getattr(superpixels, op)
  loss = jax.jit(lambda x, a: jnp.sum(jax_op(x, a) * ct.astype(np.float32)))
  gx, ga = jax.grad(loss, argnums=(0, 1))(x.astype(np.float32),
                                          a.astype(np.float32))
  np.testing.assert_allclose(
      gx, _finite_difference(lambda v: np.sum(ref(v, a) * ct), x),
      rtol=1e-4, atol=1e-4)
  # Weights of cells outside the grid get exactly 0 (the loop ignores them).
  np.testing.assert_allclose(
      ga, _finite_difference(lambda v: np.sum(ref(x, v) * ct), a),
      rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # 3 s on 2 cores (compiles or runs more).
@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_assign_gradients_match_finite_differences(similarity):
  # assign's logits use the hand-written correlation gradients (_up, _pool).
  rng = np.random.default_rng(11)
  fine = rng.normal(size=(1, 4, 6, 3))
  coarse = rng.normal(size=(1, 2, 3, 3))
  ct = rng.normal(size=(1, 4, 6, 9))
  tau = 0.7
  loss = jax.jit(lambda f, c: jnp.sum(superpixels.assign(
      f, c, tau=tau, similarity=similarity) * ct.astype(np.float32)))
  gf, gc = jax.grad(loss, argnums=(0, 1))(fine.astype(np.float32),
                                          coarse.astype(np.float32))
  ref = lambda f, c: np.sum(ref_assign(f, c, tau, similarity) * ct)
  np.testing.assert_allclose(
      gf, _finite_difference(lambda v: ref(v, coarse), fine),
      rtol=1e-3, atol=1e-4)
  np.testing.assert_allclose(
      gc, _finite_difference(lambda v: ref(fine, v), coarse),
      rtol=1e-3, atol=1e-4)
  # Second order through the hand-written gradients: a Hessian-vector
  # product equals a finite difference of the gradient.
  v = rng.normal(size=fine.shape).astype(np.float32)
  grad_f = jax.jit(jax.grad(loss))
  c32 = coarse.astype(np.float32)
  hvp = jax.grad(lambda f: jnp.vdot(grad_f(f, c32), v))(fine.astype(np.float32))
  eps = 1e-2
  fd = (grad_f(fine.astype(np.float32) + eps * v, c32) -
        grad_f(fine.astype(np.float32) - eps * v, c32)) / (2 * eps)
  np.testing.assert_allclose(hvp, fd, rtol=2e-2, atol=2e-3)


@pytest.mark.slow  # 8 s on 2 cores (compiles or runs more).
def test_second_order_and_vmap():
  rng = np.random.default_rng(8)
  a = random_assignment(rng, 2, 3, 3)
  x = jnp.asarray(rng.normal(size=(2, 6, 6, 2)), jnp.float32)
  v = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  # Quadratic in x: the Hessian-vector product equals a finite difference of
  # the gradient exactly (up to rounding).
  loss = lambda x: 0.5 * jnp.sum(superpixels.upsample(
      superpixels.downsample(x, a), a) ** 2)
  grad = jax.jit(jax.grad(loss))
  hvp = jax.jit(jax.grad(lambda x: jnp.vdot(jax.grad(loss)(x), v)))(x)
  fd = (grad(x + 0.5 * v) - grad(x - 0.5 * v))
  np.testing.assert_allclose(hvp, fd, rtol=1e-3, atol=1e-4)
  # vmap over an extra leading axis equals the per-slice results.
  xs = jnp.stack([x, 2 * x])
  ys = jax.vmap(lambda x: superpixels.downsample(x, a))(xs)
  np.testing.assert_allclose(ys[1], superpixels.downsample(2 * x, a),
                             rtol=1e-6)
