"""Coarse labels generated from fine ones (coarseseg_jax.datasets.coarse)."""

import math

import numpy as np
import pytest
from scipy import ndimage
from skimage import measure

from coarseseg_jax.datasets import coarse
from coarseseg_jax.datasets import synthetic


def _layouts(n=6, size=128, num_classes=6):
  return [synthetic.layout(np.random.default_rng([7, i]), size, num_classes)
          for i in range(n)]


def _distance_to_other_class(fine):
  """Chessboard distance of every pixel to the nearest pixel of another
  label value (another class or 255); the image border does not count."""
  dist = np.full(fine.shape, np.inf)
  for c in np.unique(fine):
    own = fine == c
    d = ndimage.distance_transform_cdt(own, metric="chessboard")
    dist[own] = d[own]
  return dist


@pytest.mark.parametrize("kernel", [1, 5, 10, 25])
def test_coarse_never_contradicts_fine(kernel):
  for fine in _layouts():
    fine = fine.copy()
    fine[:20, :20] = 255  # Some fine-unlabelled pixels.
    out = coarse.coarse_label(fine, kernel)
    assert out.shape == fine.shape and out.dtype == np.uint8
    labelled = out != 255
    assert labelled.any()
    np.testing.assert_array_equal(out[labelled], fine[labelled])
    assert np.all(out[fine == 255] == 255)


def test_band_around_straight_border_is_exactly_half_the_kernel():
  fine = np.zeros((96, 96), np.uint8)
  fine[:, 48:] = 1
  out = coarse.coarse_label(fine, 25)
  # 12 px on each side of the border are unlabelled, the rest is labelled
  # (the image border is not a class border and does not erode).
  assert np.all(out[:, 36:60] == 255)
  np.testing.assert_array_equal(out[:, :36], 0)
  np.testing.assert_array_equal(out[:, 60:], 1)


@pytest.mark.parametrize("kernel", [9, 15, 25])
def test_band_around_every_class_border_is_unlabelled(kernel):
  for fine in _layouts():
    dist = _distance_to_other_class(fine)
    # Without simplification, exactly the pixels within kernel // 2 of
    # another class are unlabelled.
    exact = coarse.coarse_label(fine, kernel, tolerance=0.0)
    np.testing.assert_array_equal(exact != 255, dist > kernel // 2)
    # Douglas-Peucker may move a polygon edge by up to its tolerance, 0.005 x
    # the length of the contour it simplifies.
    kept = dist > kernel // 2
    longest = max((np.sum(np.hypot(*np.diff(c, axis=0).T))
                   for v in np.unique(fine)
                   for c in measure.find_contours(
                       np.pad(kept & (fine == v), 1).astype(float), 0.5)),
                  default=0.0)
    slack = math.ceil(0.005 * longest)
    out = coarse.coarse_label(fine, kernel)
    band = dist <= kernel // 2 - slack
    assert band.any()
    assert np.all(out[band] == 255), (kernel, slack)


def test_kernel_one_keeps_almost_every_pixel():
  fractions = [coarse.labelled_fraction(coarse.coarse_label(f, 1))
               for f in _layouts()]
  assert min(fractions) > 0.97, fractions


@pytest.mark.slow  # 3 s on 2 cores (compiles or runs more).
def test_larger_kernels_label_fewer_pixels():
  fines = _layouts(4, size=256)
  means = [np.mean([coarse.labelled_fraction(coarse.coarse_label(f, k))
                    for f in fines]) for k in (1, 5, 10, 15, 20, 25)]
  assert all(a > b for a, b in zip(means, means[1:])), means
  assert 0.2 < means[-1] < 0.8, means


def test_deterministic():
  fine = _layouts(1)[0]
  a = coarse.coarse_label(fine, 25)
  b = coarse.coarse_label(fine.copy(), 25)
  np.testing.assert_array_equal(a, b)


def test_holes_are_left_open():
  fine = np.ones((128, 128), np.uint8)
  yy, xx = np.mgrid[:128, :128]
  fine[(yy - 64) ** 2 + (xx - 64) ** 2 < 35 ** 2] = 0  # A disk inside class 1.
  out, conflicts = coarse.coarse_label(fine, 9, return_conflicts=True)
  assert conflicts == 0  # Class 1's hole was not filled over class 0.
  assert out[64, 64] == 0
  assert out[5, 5] == 1
  assert out[64, 64 + 35] == 255  # The border of the disk.


def test_polygon_cutting_across_another_class_is_masked_and_counted():
  # A shallow notch of class 1 in a square of class 0: with a coarser
  # tolerance the simplified polygon of class 0 cuts straight across it.
  fine = np.ones((100, 100), np.uint8)
  fine[10:90, 10:90] = 0
  fine[10:15, 30:60] = 1
  _, conflicts = coarse.coarse_label(fine, 1, return_conflicts=True)
  assert conflicts == 0  # The default tolerance keeps the notch.
  out, conflicts = coarse.coarse_label(fine, 1, tolerance=0.03,
                                       return_conflicts=True)
  assert conflicts > 0
  labelled = out != 255
  np.testing.assert_array_equal(out[labelled], fine[labelled])


def test_accepts_trailing_channel_and_rejects_bad_kernel():
  fine = _layouts(1, size=64)[0]
  out = coarse.coarse_label(fine[..., None], 5)
  assert out.shape == (64, 64, 1)
  np.testing.assert_array_equal(out[..., 0], coarse.coarse_label(fine, 5))
  with pytest.raises(ValueError):
    coarse.coarse_label(fine, 0)


def test_mask_polygons_marks_holes():
  mask = np.zeros((60, 60), bool)
  mask[5:55, 5:55] = True
  mask[25:35, 25:35] = False
  polys = coarse.mask_polygons(mask, 1)
  assert sorted(h for _, h in polys) == [False, True]
  filled = coarse.fill_polygons(polys, mask.shape)
  np.testing.assert_array_equal(filled, mask)


@pytest.mark.parametrize("k, kept", [(4, (12, 28)), (5, (12, 27)),
                                     (10, (15, 25))])
def test_erosion_anchor_is_opencvs(k, kept):
  """cv2.erode(mask, np.ones((k, k))) of rows 10..29 keeps `kept` (the
  anchor at k // 2: even kernels take the extra pixel from the top/left)."""
  mask = np.zeros((40, 40), bool)
  mask[10:30, 10:30] = True
  rows = np.flatnonzero(coarse._erode(mask, k).any(axis=1))  # pylint: disable=protected-access
  assert (rows.min(), rows.max()) == kept
