"""Assignment diagnostics on hand-made assignments with known values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coarseseg_jax import assignment_stats
from coarseseg_jax import superpixels


def uniform(b, h, w):
  """Uniform weights over the in-grid candidates, (b, 2h, 2w, 9)."""
  valid = superpixels.valid_mask(h, w).astype(np.float32)
  return np.broadcast_to(valid / valid.sum(-1, keepdims=True),
                         (b, 2 * h, 2 * w, 9)).copy()


def one_hot(b, h, w, k):
  """All weight on neighbour k where it is in the grid, else on the parent."""
  valid = superpixels.valid_mask(h, w)
  a = np.zeros((2 * h, 2 * w, 9), np.float32)
  a[..., 4] = np.where(valid[..., k], 0.0, 1.0)
  a[..., k] += np.where(valid[..., k], 1.0, 0.0)
  return np.broadcast_to(a, (b, 2 * h, 2 * w, 9)).copy()


def candidates(h, w):
  """(2h, 2w) number of in-grid candidates of every fine pixel."""
  return superpixels.valid_mask(h, w).sum(-1)


@pytest.mark.slow  # 3 s on 2 cores (compiles or runs more).
def test_uniform_entropy_is_log_of_the_in_grid_candidates():
  h, w = 4, 5
  a = uniform(2, h, w)
  n = candidates(h, w)
  ent = np.asarray(assignment_stats.entropy(a))
  # log 9 inside the grid, log 6 on its edges, log 4 in its corners: the
  # masked (exactly 0) candidates add nothing and produce no NaN.
  np.testing.assert_allclose(ent, np.broadcast_to(np.log(n), ent.shape),
                             rtol=1e-6)
  np.testing.assert_allclose(ent[:, 2:-2, 2:-2], np.log(9.0), rtol=1e-6)
  assert ent[0, 0, 0] == pytest.approx(np.log(4.0))
  np.testing.assert_allclose(assignment_stats.mean_entropy(a),
                             [np.log(n).mean()] * 2, rtol=1e-6)
  # Ties: a random tie-break picks the parent with probability 1/n.
  share = np.asarray(assignment_stats.parent_on_top(a))
  np.testing.assert_allclose(share, np.broadcast_to(1.0 / n, share.shape),
                             rtol=1e-6)
  np.testing.assert_allclose(assignment_stats.parent_share(a),
                             [(1.0 / n).mean()] * 2, rtol=1e-6)
  # No cell of a uniform assignment is starved; cells two or more cells from
  # the border get exactly 4 (36 pixels x 1/9).
  a = uniform(2, 6, 7)
  mass = np.asarray(superpixels.cell_mass(a))
  np.testing.assert_allclose(mass[:, 2:-2, 2:-2], 4.0, rtol=1e-6)
  assert mass.min() >= 1.0
  np.testing.assert_array_equal(assignment_stats.starved_cells(a), [0.0, 0.0])


def test_the_regular_grid():
  a = one_hot(3, 3, 4, 4)
  np.testing.assert_array_equal(assignment_stats.mean_entropy(a), 0.0)
  np.testing.assert_array_equal(assignment_stats.parent_share(a), 1.0)
  np.testing.assert_array_equal(superpixels.cell_mass(a), 4.0)
  np.testing.assert_array_equal(assignment_stats.starved_cells(a), 0.0)


def test_everyone_to_the_right_neighbour_starves_the_first_column():
  h, w = 3, 4
  a = one_hot(2, h, w, 5)  # k = 5: (0, +1); the last column keeps its parent.
  share = np.asarray(assignment_stats.parent_on_top(a))
  np.testing.assert_array_equal(share[:, :, -2:], 1.0)  # Last cell column.
  np.testing.assert_array_equal(share[:, :, :-2], 0.0)
  np.testing.assert_allclose(assignment_stats.parent_share(a), 1.0 / w)
  mass = np.asarray(superpixels.cell_mass(a))
  np.testing.assert_array_equal(mass[:, :, 0], 0.0)
  np.testing.assert_array_equal(mass[:, :, 1:-1], 4.0)
  np.testing.assert_array_equal(mass[:, :, -1], 8.0)
  np.testing.assert_allclose(assignment_stats.starved_cells(a), 1.0 / w)
  # A threshold above 4 also counts the cells that get exactly 4.
  np.testing.assert_allclose(assignment_stats.starved_cells(a, min_mass=5.0),
                             (w - 1) / w)


def test_underflowed_weights_are_not_ties_and_entropy_stays_finite():
  # A saturated softmax: in-grid candidates with weight exactly 0.
  rng = np.random.default_rng(0)
  fine = rng.normal(size=(2, 8, 6, 4)).astype(np.float32)
  coarse = rng.normal(size=(2, 4, 3, 4)).astype(np.float32)
  a = np.asarray(superpixels.assign(fine, coarse, tau=1e-3))
  valid = superpixels.valid_mask(4, 3)
  assert np.any(a[:, valid] == 0.0)
  ent = np.asarray(assignment_stats.entropy(a))
  assert np.all(np.isfinite(ent)) and ent.max() < 1e-3
  top = np.argmax(a, -1)
  np.testing.assert_array_equal(assignment_stats.parent_on_top(a), top == 4)


def _loop_reference(a):
  """Entropy, parent share, starved share of one (H, W, 9) assignment."""
  a = np.asarray(a, np.float64)
  hh, ww, _ = a.shape
  ent, parent = [], []
  mass = np.zeros((hh // 2, ww // 2))
  for i in range(hh):
    for j in range(ww):
      p = a[i, j]
      ent.append(-sum(x * np.log(x) for x in p if x > 0))
      ties = np.flatnonzero(p == p.max())
      parent.append((4 in ties) / len(ties))
      for k in range(9):
        u, v = i // 2 + k // 3 - 1, j // 2 + k % 3 - 1
        if 0 <= u < hh // 2 and 0 <= v < ww // 2:
          mass[u, v] += p[k]
  return np.mean(ent), np.mean(parent), np.mean(mass < 1.0)


@pytest.mark.slow  # 5 s on 2 cores (compiles or runs more).
def test_summary_matches_loop_and_is_jittable():
  rng = np.random.default_rng(1)
  fine4 = rng.normal(size=(2, 8, 12, 3)).astype(np.float32)
  coarse8 = rng.normal(size=(2, 4, 6, 3)).astype(np.float32)
  coarse16 = rng.normal(size=(2, 2, 3, 3)).astype(np.float32)
  a4 = superpixels.assign(fine4, coarse8, tau=0.3)
  a8 = superpixels.assign(coarse8, coarse16, tau=0.3)
  out = jax.jit(assignment_stats.summary)([a4, a8])
  assert sorted(out) == sorted(
      f"a{s}_{m}" for s in (4, 8)
      for m in ("entropy", "parent_share", "starved_cells"))
  for s, a in ((4, a4), (8, a8)):
    refs = np.array([_loop_reference(x) for x in np.asarray(a)]).mean(0)
    got = [out[f"a{s}_{m}"] for m in ("entropy", "parent_share",
                                      "starved_cells")]
    assert all(g.shape == () and g.dtype == jnp.float32 for g in got)
    np.testing.assert_allclose(got, refs, rtol=1e-5, atol=1e-6)
  assert 0 < float(out["a4_entropy"]) < np.log(9)
  assert assignment_stats.summary([]) == {}
  assert sorted(assignment_stats.summary([a8], strides=[16])) == [
      "a16_entropy", "a16_parent_share", "a16_starved_cells"]
  with pytest.raises(ValueError, match="strides"):
    assignment_stats.summary([a4, a8], strides=[4])
