"""The refine fills and the coarse-only score, on hand-made labels."""

import itertools

import jax
import numpy as np
import pytest

from coarseseg_jax import refine
from coarseseg_jax.refine import driver
from coarseseg_jax.refine import fills
from coarseseg_jax.refine import scores

U = 255


def _two_regions(h=32, w=32, band=(14, 18), far=None):
  """Class 0 left, class 1 right, columns band[0]..band[1]-1 unlabelled;
  optionally a class-2 block at `far` (rows, cols slices)."""
  coarse = np.zeros((h, w), np.uint8)
  coarse[:, w // 2:] = 1
  coarse[:, band[0]:band[1]] = U
  if far is not None:
    coarse[far] = 2
  return coarse


def _probs(h, w, c, favourite):
  """Probabilities preferring class `favourite` (an int or (H, W) map)."""
  fav = np.broadcast_to(np.asarray(favourite), (h, w))
  p = np.full((h, w, c), 0.1 / (c - 1), np.float32)
  p[np.arange(h)[:, None], np.arange(w)[None], fav] = 0.9
  return p


def test_class_distances_match_brute_force():
  rng = np.random.default_rng(0)
  coarse = rng.choice([0, 1, 2, U], size=(9, 11), p=[.1, .1, .1, .7])
  coarse[0, 0] = 0  # At least one labelled pixel.
  got = fills.class_distances(coarse, 4)
  for c in range(4):
    where = np.argwhere(coarse == c)
    for i, j in itertools.product(range(9), range(11)):
      want = (np.sqrt(((where - [i, j]) ** 2).sum(1)).min() if len(where)
              else np.inf)
      assert got[i, j, c] == pytest.approx(want), (c, i, j)


def test_reachable_classes_exclude_far_classes_and_keep_labels():
  coarse = _two_regions(far=(slice(0, 4), slice(0, 4)))
  allowed = fills.reachable_classes(coarse, 3, margin=1.0)
  mid = allowed[20, 14:18]  # Band pixels far from the class-2 block.
  assert mid[:, :2].any(axis=1).all() and not mid[:, 2].any()
  assert allowed[20, 14, 0] and not allowed[20, 14, 1]  # 1 is 4 px away.
  assert allowed[20, 15].tolist() == [True, True, False]  # Middle: both.
  labelled = coarse != U
  own = np.eye(3, dtype=bool)[np.where(labelled, coarse, 0)]
  np.testing.assert_array_equal(allowed[labelled], own[labelled])
  assert not fills.reachable_classes(np.full((4, 4), U), 3).any()


def test_constrained_model_takes_the_likeliest_class_within_reach():
  coarse = _two_regions()
  # The model prefers class 2 everywhere (labelled nowhere): the plain
  # model fills the band with 2, the constrained one never does.
  probs = _probs(32, 32, 3, 2)
  probs[..., 1] += 0.05  # Then class 1.
  plain = fills.fill_with_model(coarse, probs.argmax(-1), probs.max(-1))
  assert (plain[coarse == U] == 2).all()
  got = fills.constrained_model(coarse, probs, margin=32.0)
  assert (got[coarse == U] == 1).all()
  np.testing.assert_array_equal(got[coarse != U], coarse[coarse != U])
  # With a margin of 0 only the nearest class is allowed: nearest wins.
  np.testing.assert_array_equal(fills.constrained_model(coarse, probs, 0.0),
                                fills.nearest_labelled(coarse))


def test_slic_then_nearest_fills_what_slic_leaves():
  coarse = _two_regions()
  segments = np.zeros((32, 32), np.int32)
  segments[:, 15:17] = 1  # A segment inside the band: SLIC leaves it.
  segments[:, 17:] = 2
  slic = fills.slic_propagation(coarse, segments)
  assert (slic[:, 15:17] == U).all()
  got = fills.slic_then_nearest(coarse, segments)
  assert (got != U).all()
  np.testing.assert_array_equal(got[slic != U], slic[slic != U])
  near = fills.nearest_labelled(coarse)
  np.testing.assert_array_equal(got[slic == U], near[slic == U])


def _parent_assignments(b, h, w):
  """Assignments with all weight on the parent cell: a regular grid."""
  a4 = np.zeros((b, h // 4, w // 4, 9), np.float32)
  a8 = np.zeros((b, h // 8, w // 8, 9), np.float32)
  a4[..., 4] = a8[..., 4] = 1
  return [a4, a8]


def test_label_votes_of_a_regular_grid_are_the_cell_label_shares():
  coarse = np.full((1, 32, 32), U, np.uint8)
  coarse[0, :16, :16] = 0   # One coarsest cell (16x16) all class 0.
  coarse[0, 16:, :8] = 1    # Half of another cell class 1.
  votes, heard = jax.jit(fills.label_votes, static_argnums=2)(
      coarse, _parent_assignments(1, 32, 32), 3)
  votes, heard = np.asarray(votes)[0], np.asarray(heard)[0]
  assert votes.shape == (32, 32, 3) and heard.shape == (32, 32)
  # Away from the cells' edges (bilinear resize blurs 2 px): exact shares.
  assert votes[4:12, 4:12, 0] == pytest.approx(1.0, abs=1e-5)
  assert heard[4:12, 4:12] == pytest.approx(1.0, abs=1e-5)
  assert heard[20:28, 4:12] == pytest.approx(0.5, abs=1e-5)  # Half labelled.
  assert votes[20:28, 4:12, 1] == pytest.approx(1.0, abs=1e-5)
  assert heard[4:12, 20:28] == pytest.approx(0.0, abs=1e-6)  # Nothing.
  got = fills.superpixel_propagation(coarse[0], votes, heard)
  assert (got[4:12, 20:28] == U).all() and (got[20:28, 4:12] == 1).all()


@pytest.mark.slow  # 5 s on 2 cores (compiles or runs more).
def test_label_votes_follow_learned_superpixels():
  # Stride-4 pixels of the band (columns 4-5 of 8) assigned to the right
  # neighbour cell hear only class 1, though their parent cell is mixed.
  coarse = np.full((1, 32, 32), U, np.uint8)
  coarse[0, :, :16] = 0
  coarse[0, :, 24:] = 1
  a4, a8 = _parent_assignments(1, 32, 32)
  a4[0, :, 4:6, 4] = 0
  a4[0, :, 4:6, 5] = 1  # Cell to the right (stride 8 column 3).
  votes, heard = fills.label_votes(coarse, [a4, a8], 2)
  got = fills.superpixel_propagation(coarse[0], np.asarray(votes)[0],
                                     np.asarray(heard)[0])
  assert (got[:, 17:23] == 1).all()


def test_label_votes_reject_a_size_off_the_grid():
  with pytest.raises(ValueError, match="finest assignment grid"):
    fills.label_votes(np.zeros((1, 30, 32), np.uint8),
                      _parent_assignments(1, 32, 32), 2)


def test_slic_sure_needs_one_class_and_enough_labels():
  coarse = np.full((4, 8), U, np.uint8)
  coarse[:, 0] = 0              # Segment 0 (cols 0-1): half labelled, class 0.
  coarse[0, 2], coarse[1, 3] = 0, 1  # Segment 1: two classes.
  coarse[0, 4] = 1              # Segment 2: 1 of 8 labelled.
  segments = np.repeat(np.arange(4), 2)[None].repeat(4, 0)  # Segment 3: none.
  sure = fills.slic_sure(coarse, segments, min_share=0.25)
  assert sure[:, :2].all() and not sure[:, 2:].any()
  assert fills.slic_sure(coarse, segments, min_share=0.1)[:, 4:6].all()
  assert not fills.slic_sure(coarse, np.full((4, 8), -1), 0.0).any()


@pytest.mark.slow  # 6 s on 2 cores (compiles or runs more).
def test_all_fills_equal_each_fill_alone():
  rng = np.random.default_rng(1)
  coarse = _two_regions(far=(slice(0, 6), slice(0, 6)))
  segments = (np.arange(32)[:, None] // 8 * 4
              + np.arange(32)[None] // 8).astype(np.int32)
  probs = rng.dirichlet(np.ones(3), size=(32, 32)).astype(np.float32)
  votes, heard = fills.label_votes(coarse[None],
                                   _parent_assignments(1, 32, 32), 3)
  votes, heard = np.asarray(votes)[0], np.asarray(heard)[0]
  got = fills.all_fills(coarse, segments, probs, votes, heard, margin=3.0)
  assert tuple(got) == refine.FILLS
  want = {
      "nearest_labelled": fills.nearest_labelled(coarse),
      "slic_propagation": fills.slic_propagation(coarse, segments),
      "slic_then_nearest": fills.slic_then_nearest(coarse, segments),
      "model": fills.fill_with_model(coarse, probs.argmax(-1),
                                     probs.max(-1)),
      "constrained": fills.constrained_model(coarse, probs, 3.0),
      "superpixel": fills.superpixel_propagation(coarse, votes, heard),
      "superpixel_constrained": fills.superpixel_constrained(
          coarse, probs, votes, 3.0),
      "slic_sure_constrained": fills.slic_sure_constrained(
          coarse, segments, probs, 3.0)}
  for name, mask in want.items():
    np.testing.assert_array_equal(got[name], mask, err_msg=name)
    assert got[name].dtype == np.uint8
    np.testing.assert_array_equal(got[name][coarse != U],
                                  coarse[coarse != U], err_msg=name)


@pytest.mark.parametrize("width", [2, 4, 8])
def test_band_width_of_a_straight_band(width):
  coarse = _two_regions(64, 64, band=(30, 30 + width))
  assert scores.band_width(coarse) == pytest.approx(width, abs=1.0)
  assert scores.band_width(np.zeros((8, 8), np.uint8)) == 0.0


def test_holdout_hides_a_ring_beside_the_band_only():
  coarse = _two_regions(32, 32, band=(14, 18))
  held, ring = scores.holdout(coarse, width=3)
  np.testing.assert_array_equal(np.where(ring)[1].min(), 11)
  np.testing.assert_array_equal(np.where(ring)[1].max(), 20)
  assert (held[ring] == U).all()
  np.testing.assert_array_equal(held[~ring], coarse[~ring])
  assert not ring[:, :11].any() and not ring[:, 21:].any()  # Not the edge.
  held, ring = scores.holdout(np.ones((8, 8), np.uint8))
  assert not ring.any() and (held == 1).all()


def test_the_holdout_score_ranks_a_right_fill_first():
  # Truth: the border at column 16, band 14-17. The nearest labelled pixel
  # is right on the held-out ring; a fill that is wrong on half the band is
  # not.
  coarse = _two_regions(32, 32, band=(14, 18))
  held, ring = scores.holdout(coarse, width=3)
  near = fills.nearest_labelled(held)
  wrong = near.copy()
  wrong[:, 11:21] = 1
  fn = scores.mask_metrics_fn(2)
  got = {name: float(fn(m[None], held[None], coarse[None])["band_correct"][0])
         for name, m in (("nearest_labelled", near), ("model", wrong))}
  assert got["nearest_labelled"] == pytest.approx(1.0)
  assert got["model"] == pytest.approx(0.5)
  report = {k: {"band_correct": v} for k, v in got.items()}
  assert scores.choose(report)[0] == "nearest_labelled"


def test_choose_breaks_ties_by_order_and_puts_nan_last():
  report = {"model": {"band_correct": 0.9},
            "nearest_labelled": {"band_correct": 0.9},
            "superpixel": {"band_correct": None}}
  method, why = scores.choose(report)
  assert method == "nearest_labelled" and "0.900" in why
  # Within the tolerance the simpler (earlier) fill wins; beyond it, not.
  close = {"nearest_labelled": {"band_correct": 0.985},
           "superpixel": {"band_correct": 0.992}}
  assert scores.choose(close)[0] == "nearest_labelled"
  assert scores.choose(close, tolerance=0.005)[0] == "superpixel"
  assert scores.choose({"superpixel": {"band_correct": None},
                        "model": {"band_correct": 0.1}})[0] == "model"
  # Among the free fills only (the self-training row on the best free fill).
  free = {"superpixel": {"band_correct": 0.99},
          "nearest_labelled": {"band_correct": 0.90},
          "slic_then_nearest": {"band_correct": 0.95}}
  method, why = scores.choose(free, among=refine.FREE_FILLS)
  assert method == "slic_then_nearest" and "superpixel" not in why
  with pytest.raises(ValueError, match="no fill to choose"):
    scores.choose({"model": {"band_correct": 0.5}}, among=refine.FREE_FILLS)


def test_holdout_keeps_every_regions_core():
  # A thin region (5 px deep from the band) loses at most half its depth.
  coarse = _two_regions(32, 32, band=(14, 18))
  coarse[:, 23:] = 2  # Class 1 now only columns 18-22 (depth 5 px).
  coarse[:, 23] = U
  held, ring = scores.holdout(coarse, width=8)
  for c in (0, 1, 2):
    assert (held == c).any(), c  # No region vanishes.
  assert ring[:, 18:23].sum(axis=1).max() <= 3  # About half of 5.


def test_agreement_of_the_two_rankings():
  fine = {"nearest_labelled": {"band_correct": 0.9},
          "model": {"band_correct": 0.6},
          "constrained": {"band_correct": 0.8}}
  same = scores.agreement({k: dict(v) for k, v in fine.items()}, fine)
  assert same["fine_best"] == same["coarse_only_best"] == "nearest_labelled"
  assert same["kendall_tau"] == pytest.approx(1.0)
  coarse_only = {"nearest_labelled": {"band_correct": 0.5},
                 "model": {"band_correct": 0.7},
                 "constrained": {"band_correct": 0.6}}
  got = scores.agreement(coarse_only, fine)
  assert got["coarse_only_best"] == "model"
  assert got["fine_band_correct_of_coarse_only_best"] == pytest.approx(0.6)
  assert got["kendall_tau"] == pytest.approx(-1.0)
