"""Losses against slow NumPy references.

The superpixel reconstruction is re-derived independently here: each
assignment becomes a dense ``(2h*2w, h*w)`` matrix U built with per-pixel
loops; upsampling is ``U x`` and downsampling ``U^T x / (U^T 1 + eps)``. The
colour conversion of the reference is scikit-image's.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import color as skcolor

from coarseseg_jax import losses
from coarseseg_jax import superpixels

DY = [-1, -1, -1, 0, 0, 0, 1, 1, 1]
DX = [-1, 0, 1, -1, 0, 1, -1, 0, 1]


def dense_operator(a):
  """(2h, 2w, 9) assignment -> (2h*2w, h*w) matrix of fine-from-coarse weights."""
  hh, ww, _ = a.shape
  h, w = hh // 2, ww // 2
  u = np.zeros((hh * ww, h * w))
  for i in range(hh):
    for j in range(ww):
      for k in range(9):
        r, c = i // 2 + DY[k], j // 2 + DX[k]
        if 0 <= r < h and 0 <= c < w:
          u[i * ww + j, r * w + c] += a[i, j, k]
  return u


def ref_reconstruct(x, assignments):
  """x (H0*W0, C) for one image; assignments: list of (H, W, 9), finest first."""
  ops = [dense_operator(np.asarray(a, np.float64)) for a in assignments]
  for u in ops:
    x = (u.T @ x) / (u.T @ np.ones((u.shape[0], 1)) + 1e-8)
  for u in reversed(ops):
    x = u @ x
  return x


def ref_cross_entropy(logits, labels, ignore=255):
  logits = np.asarray(logits, np.float64)
  total, count = 0.0, 0
  for idx in np.ndindex(labels.shape):
    if labels[idx] == ignore:
      continue
    z = logits[idx]
    total += np.log(np.sum(np.exp(z - z.max()))) + z.max() - z[labels[idx]]
    count += 1
  return total / max(count, 1)


def ref_slic_loss(image, assignments, m):
  b, h, w, _ = image.shape
  hf, wf = assignments[0].shape[1:3]
  s0 = h // hf
  side = 2 ** len(assignments)
  lab_terms, xy_terms = [], []
  for n in range(b):
    feats = np.zeros((hf, wf, 5))
    for i in range(hf):
      for j in range(wf):
        block = np.asarray(image[n, i * s0:(i + 1) * s0, j * s0:(j + 1) * s0],
                           np.float64)
        feats[i, j, :3] = skcolor.rgb2lab(block.mean(axis=(0, 1)))
        feats[i, j, 3:] = (j, i)
    x = feats.reshape(-1, 5)
    err = ref_reconstruct(x, [a[n] for a in assignments]) - x
    lab_terms.append(np.linalg.norm(err[:, :3], axis=1))
    xy_terms.append(np.linalg.norm(err[:, 3:], axis=1))
  return (np.mean(np.concatenate(lab_terms))
          + m * np.mean(np.concatenate(xy_terms)) / side)


def ref_slic_map_loss(slic, assignments, num_segments):
  b, h, _ = slic.shape
  hf, wf = assignments[0].shape[1:3]
  s0 = h // hf
  nll = []
  for n in range(b):
    ids = np.array([[slic[n, i * s0 + s0 // 2, j * s0 + s0 // 2]
                     for j in range(wf)] for i in range(hf)]).reshape(-1)
    onehot = np.zeros((hf * wf, num_segments))
    for p, s in enumerate(ids):
      if 0 <= s < num_segments:
        onehot[p, s] = 1.0
    q = ref_reconstruct(onehot, [a[n] for a in assignments])
    nll += [-np.log(q[p, s] + 1e-8) for p, s in enumerate(ids)
            if 0 <= s < num_segments]
  return np.mean(nll) if nll else 0.0


def random_assignments(rng, b, hf, wf, levels=2, tau=0.5):
  """Soft assignments [A_finest, ...] from random features."""
  out = []
  for _ in range(levels):
    fine = rng.normal(size=(b, hf, wf, 4)).astype(np.float32)
    coarse = rng.normal(size=(b, hf // 2, wf // 2, 4)).astype(np.float32)
    out.append(superpixels.assign(fine, coarse, tau=tau))
    hf, wf = hf // 2, wf // 2
  return out


def assignment_params(rng, b, hf, wf, levels=2):
  """Random features from which `assignments_from` builds assignments."""
  return [(jnp.asarray(rng.normal(size=(b, hf >> l, wf >> l, 4)), jnp.float32),
           jnp.asarray(rng.normal(size=(b, hf >> (l + 1), wf >> (l + 1), 4)),
                       jnp.float32)) for l in range(levels)]


def assignments_from(params):
  return [superpixels.assign(f, c, tau=0.3) for f, c in params]


def test_cross_entropy_matches_reference_and_is_float32():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 4, 6)).astype(np.float32) * 3
  labels = rng.integers(0, 6, size=(2, 5, 4)).astype(np.int32)
  labels[rng.random(labels.shape) < 0.4] = 255
  ce = jax.jit(losses.cross_entropy)(logits, labels)
  assert ce.dtype == jnp.float32 and ce.shape == ()
  np.testing.assert_allclose(ce, ref_cross_entropy(logits, labels), rtol=1e-5)
  # bfloat16 logits: computed in float32 from the rounded values.
  low = jnp.asarray(logits, jnp.bfloat16)
  ce = losses.cross_entropy(low, labels)
  assert ce.dtype == jnp.float32
  np.testing.assert_allclose(
      ce, ref_cross_entropy(np.asarray(low, np.float32), labels), rtol=1e-5)
  # A custom ignore index.
  labels2 = np.where(labels == 255, -1, labels)
  np.testing.assert_allclose(
      losses.cross_entropy(logits, labels2, ignore_index=-1),
      ref_cross_entropy(logits, labels2, ignore=-1), rtol=1e-5)


def test_cross_entropy_all_ignored_is_zero_with_finite_grad():
  logits = jnp.ones((1, 3, 3, 4))
  labels = jnp.full((1, 3, 3), 255, jnp.int32)
  value, grad = jax.jit(jax.value_and_grad(losses.cross_entropy))(logits,
                                                                  labels)
  assert value == 0.0
  assert np.all(grad == 0.0)


@pytest.mark.slow  # 4 s on 2 cores (compiles or runs more).
@pytest.mark.parametrize("s0,m", [(2, 0.0), (4, 0.7)])
def test_slic_loss_matches_reference(s0, m):
  rng = np.random.default_rng(1)
  image = rng.random((2, 8 * s0, 8 * s0, 3)).astype(np.float32)
  assignments = random_assignments(rng, 2, 8, 8)
  got = jax.jit(functools.partial(losses.slic_loss, m=m))(image, assignments)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, ref_slic_loss(image, assignments, m),
                             rtol=1e-4)


@pytest.mark.slow  # 6 s on 2 cores (compiles or runs more).
def test_slic_loss_one_level_and_non_square():
  rng = np.random.default_rng(2)
  image = rng.random((1, 8, 12, 3)).astype(np.float32)
  assignments = random_assignments(rng, 1, 4, 6, levels=1)
  np.testing.assert_allclose(
      losses.slic_loss(image, assignments, 2.0),
      ref_slic_loss(image, assignments, 2.0), rtol=1e-4)
  with pytest.raises(ValueError, match="multiple"):
    losses.slic_loss(image[:, :7], assignments, 0.0)
  with pytest.raises(ValueError, match="at least one"):
    losses.slic_loss(image, [], 0.0)


@pytest.mark.parametrize("m", [0.0, 1.0])
def test_slic_loss_constant_image_has_zero_lab_error_and_finite_grads(m):
  rng = np.random.default_rng(3)
  assignments = random_assignments(rng, 2, 8, 8)
  image = jnp.full((2, 16, 16, 3), 0.3, jnp.float32)
  fn = lambda img, a: losses.slic_loss(img, a, m)
  value, (g_image, g_a) = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(
      image, assignments)
  if m == 0.0:
    assert abs(float(value)) < 1e-4  # The Lab error vanishes (L is ~ 60).
  else:
    # The XY error does not vanish, and the assignments learn from it.
    assert float(value) > 1e-3
    assert max(float(np.abs(g).max()) for g in g_a) > 0
  for g in g_a:
    assert np.all(np.isfinite(g))
  assert np.all(g_image == 0.0)  # The image carries no gradient.


def _parent_assignment(b, h, w):
  a = np.zeros((b, h, w, 9), np.float32)
  a[..., 4] = 1.0
  return a


def test_slic_map_loss_near_zero_when_assignments_follow_the_map():
  rng = np.random.default_rng(4)
  b, hf, wf, s0 = 2, 8, 8, 4
  # Level 0: every pixel to its parent; level 1: a random valid neighbour, so
  # the superpixels are not simply the grid blocks.
  a0 = _parent_assignment(b, hf, wf)
  valid = superpixels.valid_mask(hf // 4, wf // 4)
  a1 = np.zeros((b, hf // 2, wf // 2, 9), np.float32)
  for idx in np.ndindex(b, hf // 2, wf // 2):
    a1[idx + (rng.choice(np.flatnonzero(valid[idx[1:]])),)] = 1.0
  ids = np.asarray(superpixels.hard_superpixels([a0, a1]))
  assert len(np.unique(ids)) > 2
  # The SLIC map at full resolution: the id at each block's centre pixel,
  # anything else elsewhere (only the centre must be read).
  num_segments = 8
  slic = rng.integers(0, num_segments, size=(b, hf * s0, wf * s0))
  slic[:, s0 // 2::s0, s0 // 2::s0] = ids
  fn = jax.jit(functools.partial(losses.slic_map_loss,
                                 num_segments=num_segments))
  assert float(fn(slic, [a0, a1])) < 1e-5
  # Random soft assignments reconstruct the map poorly.
  soft = random_assignments(rng, b, hf, wf)
  assert float(fn(slic, soft)) > 0.3
  # Shuffled ids (same assignments) do not match either.
  wrong = slic.copy()
  wrong[:, s0 // 2::s0, s0 // 2::s0] = rng.permutation(ids.reshape(-1)).reshape(
      ids.shape)
  assert float(fn(wrong, [a0, a1])) > 1.0


@pytest.mark.slow  # 5 s on 2 cores (compiles or runs more).
def test_slic_map_loss_matches_reference_with_ignored_pixels():
  rng = np.random.default_rng(5)
  slic = rng.integers(-1, 6, size=(2, 16, 16)).astype(np.int32)
  assignments = random_assignments(rng, 2, 8, 8)
  got = losses.slic_map_loss(slic, assignments, 6)
  np.testing.assert_allclose(got, ref_slic_map_loss(slic, assignments, 6),
                             rtol=1e-5)


def test_slic_map_loss_gradient_equals_dense_one_hot_formulation():
  # The loss scatters/gathers its two sparse ends; the straightforward
  # formulation builds the one-hot at the finest grid and reconstructs it.
  rng = np.random.default_rng(11)
  slic = jnp.asarray(rng.integers(-1, 7, size=(2, 16, 16)), jnp.int32)
  assignments = random_assignments(rng, 2, 8, 8)

  def dense(a):
    ids = slic[:, 1::2, 1::2]
    valid = ids >= 0
    q = superpixels.reconstruct(jax.nn.one_hot(ids, 7), a)
    q_id = jnp.take_along_axis(q, jnp.maximum(ids, 0)[..., None], -1)[..., 0]
    return jnp.sum(jnp.where(valid, -jnp.log(q_id + 1e-8), 0)) / valid.sum()

  sparse = lambda a: losses.slic_map_loss(slic, a, 7)
  for got, want in zip(jax.jit(jax.grad(sparse))(assignments),
                       jax.jit(jax.grad(dense))(assignments)):
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_slic_map_loss_all_ignored_is_zero_with_finite_grad():
  rng = np.random.default_rng(6)
  params = assignment_params(rng, 1, 4, 4)
  slic = jnp.full((1, 8, 8), -1, jnp.int32)
  fn = lambda p: losses.slic_map_loss(slic, assignments_from(p), 5)
  value, grads = jax.jit(jax.value_and_grad(fn))(params)
  assert float(value) == 0.0
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_regularized_loss_without_regularizers_is_cross_entropy():
  rng = np.random.default_rng(7)
  logits = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
  labels = rng.integers(0, 3, size=(2, 4, 4)).astype(np.int32)
  ce = losses.cross_entropy(logits, labels)
  # No image and no assignments needed (models without superpixels).
  total = losses.regularized_loss(logits, labels, None, [], lmbda=0, m=0.0)
  np.testing.assert_allclose(total, ce, rtol=1e-7)
  total, terms = losses.regularized_loss(logits, labels, None, [], lmbda=0.0,
                                         m=0.0, kappa=0, return_terms=True)
  np.testing.assert_allclose(total, ce, rtol=1e-7)
  assert set(terms) == {"cross_entropy", "slic", "slic_map"}
  assert terms["slic"] == 0.0 and terms["slic_map"] == 0.0


@pytest.mark.slow  # 4 s on 2 cores (compiles or runs more).
def test_regularized_loss_sums_the_weighted_terms():
  rng = np.random.default_rng(8)
  logits = rng.normal(size=(2, 16, 16, 3)).astype(np.float32)
  labels = rng.integers(0, 3, size=(2, 16, 16)).astype(np.int32)
  image = rng.random((2, 16, 16, 3)).astype(np.float32)
  slic = rng.integers(0, 5, size=(2, 16, 16)).astype(np.int32)
  assignments = random_assignments(rng, 2, 8, 8)
  fn = jax.jit(functools.partial(
      losses.regularized_loss, lmbda=0.3, m=0.5, kappa=0.2, num_segments=5,
      return_terms=True))
  total, terms = fn(logits, labels, image, assignments, slic=slic)
  expected = {"cross_entropy": ref_cross_entropy(logits, labels),
              "slic": ref_slic_loss(image, assignments, 0.5),
              "slic_map": ref_slic_map_loss(slic, assignments, 5)}
  for name, value in expected.items():
    np.testing.assert_allclose(terms[name], value, rtol=1e-4, err_msg=name)
  np.testing.assert_allclose(
      total, expected["cross_entropy"] + 0.3 * expected["slic"]
      + 0.2 * expected["slic_map"], rtol=1e-4)


def test_regularized_loss_errors():
  logits = jnp.zeros((1, 8, 8, 2))
  labels = jnp.zeros((1, 8, 8), jnp.int32)
  image = jnp.zeros((1, 8, 8, 3))
  assignments = random_assignments(np.random.default_rng(9), 1, 4, 4)
  with pytest.raises(ValueError, match="assignments"):
    losses.regularized_loss(logits, labels, image, [], lmbda=0.05, m=0.0)
  with pytest.raises(ValueError, match="assignments"):
    losses.regularized_loss(logits, labels, image, [], lmbda=0.0, m=0.0,
                            kappa=0.1, slic=labels, num_segments=4)
  with pytest.raises(ValueError, match="slic"):
    losses.regularized_loss(logits, labels, image, assignments, lmbda=0.0,
                            m=0.0, kappa=0.1, num_segments=4)
  with pytest.raises(ValueError, match="num_segments"):
    losses.regularized_loss(logits, labels, image, assignments, lmbda=0.0,
                            m=0.0, kappa=0.1, slic=labels)


def test_regularized_loss_grads_finite_for_all_ignored_and_constant_image():
  rng = np.random.default_rng(10)
  params = assignment_params(rng, 2, 4, 4)
  logits = jnp.asarray(rng.normal(size=(2, 16, 16, 3)), jnp.float32)
  labels = jnp.full((2, 16, 16), 255, jnp.int32)
  image = jnp.full((2, 16, 16, 3), 0.7, jnp.float32)
  slic = jnp.asarray(rng.integers(0, 4, size=(2, 16, 16)), jnp.int32)

  def fn(logits, p):
    return losses.regularized_loss(
        logits, labels, image, assignments_from(p), lmbda=0.05, m=0.3,
        slic=slic, kappa=0.1, num_segments=4)

  value, grads = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(logits,
                                                                 params)
  assert np.isfinite(float(value))
  assert np.all(grads[0] == 0.0)  # No labelled pixel: no logit gradient.
  leaves = jax.tree.leaves(grads[1])
  assert all(np.all(np.isfinite(g)) for g in leaves)
  assert max(float(np.abs(g).max()) for g in leaves) > 0
