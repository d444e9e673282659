"""Tests of coarseseg_jax.metrics against slow, independent NumPy references.

The references below loop over pixels and follow the written definitions (the
paper's boundary recall, the superpixel-benchmark boundary P/R/F1, PyTorch's
bilinear interpolation formula, the superpixel assignment convention), so they
share no code with the module under test.
"""

import functools

import jax
import numpy as np
import pytest

from coarseseg_jax import metrics
from coarseseg_jax import profiling

IGNORE = 255


# ----------------------------------------------------------------- inputs ---

def _blocky(rng, b, h, w, num_classes, block=4, noise=0.1):
  """Random piecewise-constant maps with some single-pixel noise."""
  small = rng.integers(0, num_classes, (b, -(-h // block), -(-w // block)))
  x = np.repeat(np.repeat(small, block, 1), block, 2)[:, :h, :w]
  flip = rng.random((b, h, w)) < noise
  return np.where(flip, rng.integers(0, num_classes, (b, h, w)), x)


def _with_ignored(rng, label, frac=0.08):
  label = label.copy()
  label[rng.random(label.shape) < frac] = IGNORE
  label[:, 3:6, 2:9] = IGNORE  # an unlabelled blob as well
  return label


def _maps(seed=0, b=3, h=24, w=20, num_classes=3):
  rng = np.random.default_rng(seed)
  label = _with_ignored(rng, _blocky(rng, b, h, w, num_classes))
  pred = _blocky(rng, b, h, w, num_classes, noise=0.05)
  return pred.astype(np.int32), label.astype(np.int32)


# ------------------------------------------------------------- references ---

def ref_paper_boundary(x, t):
  """Labelled pixel whose (2t-1)^2 window has another label and no ignore."""
  h, w = x.shape
  out = np.zeros((h, w), bool)
  for i in range(h):
    for j in range(w):
      win = x[max(0, i - t + 1):i + t, max(0, j - t + 1):j + t]
      out[i, j] = (win != x[i, j]).any() and not (win == IGNORE).any()
  return out


def ref_boundary_recall(pred, label, r):
  res = []
  for p, l in zip(pred, label):
    tp = np.sum(ref_paper_boundary(p, 2) & ref_paper_boundary(l, r + 1))
    fn = np.sum(~ref_paper_boundary(p, r + 1) & ref_paper_boundary(l, 2))
    res.append(tp / (tp + fn + 1e-5))
  return np.array(res)


def ref_four_boundary(x, valid):
  h, w = x.shape
  out = np.zeros((h, w), bool)
  for i in range(h):
    for j in range(w):
      if not valid[i, j]:
        continue
      for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        u, v = i + di, j + dj
        if 0 <= u < h and 0 <= v < w and valid[u, v] and x[u, v] != x[i, j]:
          out[i, j] = True
  return out


def ref_matched(a, b, r):
  """Pixels of a with a pixel of b in their (2r+1)^2 window."""
  h, w = a.shape
  out = np.zeros((h, w), bool)
  for i, j in zip(*np.nonzero(a)):
    out[i, j] = b[max(0, i - r):i + r + 1, max(0, j - r):j + r + 1].any()
  return out


def ref_prf(pred, label, r):
  rows = []
  for p, l in zip(pred, label):
    valid = (l != IGNORE) & (p != IGNORE)
    bp, bl = ref_four_boundary(p, valid), ref_four_boundary(l, valid)
    if not valid.any():
      rows.append((np.nan,) * 3)
      continue
    prec = ref_matched(bp, bl, r).sum() / bp.sum() if bp.any() else 1.0
    rec = ref_matched(bl, bp, r).sum() / bl.sum() if bl.any() else 1.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    rows.append((prec, rec, f1))
  return tuple(np.array(c) for c in zip(*rows))


def ref_torch_bilinear(x, out_h, out_w):
  """PyTorch's interpolate(mode='bilinear', align_corners=False), NHWC."""
  def weights(n_in, n_out):
    m = np.zeros((n_out, n_in))
    scale = n_in / n_out
    for d in range(n_out):
      src = max(scale * (d + 0.5) - 0.5, 0.0)
      i0 = int(src)
      i1 = i0 + 1 if i0 < n_in - 1 else i0
      lam = src - i0
      m[d, i0] += 1 - lam
      m[d, i1] += lam
    return m
  wy = weights(x.shape[1], out_h)
  wx = weights(x.shape[2], out_w)
  return np.einsum("yi,xj,bijc->byxc", wy, wx, x)


def _cell(i, j, k):
  return i // 2 + k // 3 - 1, j // 2 + k % 3 - 1


def ref_upsample(x, a):
  b, hh, ww, _ = a.shape
  h, w = x.shape[1:3]
  y = np.zeros((b, hh, ww, x.shape[-1]))
  for n in range(b):
    for i in range(hh):
      for j in range(ww):
        for k in range(9):
          u, v = _cell(i, j, k)
          if 0 <= u < h and 0 <= v < w:
            y[n, i, j] += a[n, i, j, k] * x[n, u, v]
  return y


def ref_downsample(x, a):
  b, hh, ww, c = x.shape
  num = np.zeros((b, hh // 2, ww // 2, c))
  den = np.zeros((b, hh // 2, ww // 2, 1))
  for n in range(b):
    for i in range(hh):
      for j in range(ww):
        for k in range(9):
          u, v = _cell(i, j, k)
          if 0 <= u < hh // 2 and 0 <= v < ww // 2:
            num[n, u, v] += a[n, i, j, k] * x[n, i, j]
            den[n, u, v] += a[n, i, j, k]
  return num / (den + 1e-8)


def ref_asa(assignments, label, num_classes):
  valid = label != IGNORE
  onehot = np.zeros(label.shape + (num_classes,))
  for c in range(num_classes):
    onehot[..., c] = (label == c)
  x = ref_torch_bilinear(onehot, *assignments[0].shape[1:3])
  for a in assignments:
    x = ref_downsample(x, a)
  for a in reversed(assignments):
    x = ref_upsample(x, a)
  pred = ref_torch_bilinear(x, *label.shape[1:]).argmax(-1)
  return np.array([np.mean(p[v] == l[v]) if v.any() else np.nan
                   for p, l, v in zip(pred, label, valid)])


def ref_segment_asa(segments, label, num_classes):
  res = []
  fy = label.shape[1] // segments.shape[1]
  fx = label.shape[2] // segments.shape[2]
  for s, l in zip(segments, label):
    counts, total = {}, 0
    for i in range(l.shape[0]):
      for j in range(l.shape[1]):
        sid, c = s[i // fy, j // fx], l[i, j]
        if c == IGNORE or sid < 0 or not 0 <= c < num_classes:
          continue
        counts.setdefault(sid, {}).setdefault(c, 0)
        counts[sid][c] += 1
        total += 1
    agree = sum(max(d.values()) for d in counts.values())
    res.append(agree / total if total else np.nan)
  return np.array(res)


def _parent_onehot(b, h, w):
  a = np.zeros((b, h, w, 9), np.float32)
  a[..., 4] = 1.0
  return a


def _random_assignment(rng, b, h, w):
  """Softmax over the in-grid candidates of random logits, (B, h, w, 9)."""
  logits = rng.normal(0, 2, (b, h, w, 9))
  mask = np.zeros((h, w, 9), bool)
  for i in range(h):
    for j in range(w):
      for k in range(9):
        u, v = _cell(i, j, k)
        mask[i, j, k] = 0 <= u < h // 2 and 0 <= v < w // 2
  e = np.where(mask, np.exp(logits), 0.0)
  return (e / e.sum(-1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------ tests ---

def test_pixel_accuracy_matches_numpy_and_nan_when_unlabelled():
  pred, label = _maps(1)
  label[2] = IGNORE
  got = np.asarray(jax.jit(metrics.pixel_accuracy)(pred, label))
  assert got.shape == (3,) and got.dtype == np.float32
  for n in range(2):
    v = label[n] != IGNORE
    np.testing.assert_allclose(got[n], np.mean(pred[n][v] == label[n][v]),
                               rtol=1e-6)
  assert np.isnan(got[2])


def test_default_radius_hand_values_round_half_to_even():
  assert metrics.default_radius(24, 20) == 0
  assert metrics.default_radius(256, 256) == 1  # 0.905
  assert metrics.default_radius(1024, 2048) == 6  # 5.72
  assert metrics.default_radius(120, 160) == 0  # diagonal 200: 0.5 -> 0
  assert metrics.default_radius(360, 480) == 2  # diagonal 600: 1.5 -> 2
  assert metrics.default_radius(600, 800) == 2  # diagonal 1000: 2.5 -> 2


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_boundary_recall_matches_reference(radius):
  pred, label = _maps(2)
  fn = jax.jit(functools.partial(metrics.boundary_recall, radius=radius))
  got = np.asarray(fn(pred, label))
  np.testing.assert_allclose(got, ref_boundary_recall(pred, label, radius),
                             rtol=1e-5, atol=1e-6)
  assert got.shape == (3,) and (got > 0).all()


def test_paper_boundary_matches_reference_including_ignored_pred():
  pred, label = _maps(3, b=1)
  pred[0, 10:12, 4:7] = IGNORE  # the same definition applies to pred
  for x in (pred, label):
    for t in (1, 2, 3):
      got = np.asarray(jax.jit(metrics.paper_boundary, static_argnums=1)(x, t))
      np.testing.assert_array_equal(got[0], ref_paper_boundary(x[0], t))


def _split(h, w, col):
  x = np.zeros((1, h, w), np.int32)
  x[:, :, col:] = 1
  return x


def test_boundary_recall_identity_is_one_with_default_radius():
  label = _split(256, 256, 128)
  label[0, 100:, :] = np.where(np.arange(256) < 64, 1, 0)  # more borders
  got = float(jax.jit(metrics.boundary_recall)(label, label)[0])
  assert 1 - 1e-6 < got <= 1.0


def test_boundary_recall_hand_figures_for_shifted_boundaries():
  br = jax.jit(metrics.boundary_recall)
  # 256x256: r = 1, true borders at columns 127|128 (thickness 2).
  label = _split(256, 256, 128)
  # Shift 1 <= r: predicted border pixels 128, 129; tp = column 128,
  # fn = column 127 (not within pred's thickness-2 border): 256 / 512.
  np.testing.assert_allclose(br(_split(256, 256, 129), label), [0.5],
                             rtol=1e-5)
  assert float(br(_split(256, 256, 131), label)[0]) == 0.0  # shift 3 > r
  # 512x1024: r = 3; within r the recall stays ~1, beyond it drops to 0.
  label = _split(512, 1024, 512)
  assert float(br(_split(512, 1024, 514), label)[0]) > 1 - 1e-6
  assert float(br(_split(512, 1024, 516), label)[0]) == 0.0


def test_boundary_recall_is_zero_when_radius_is_zero():
  pred, label = _maps(4)
  got = np.asarray(jax.jit(metrics.boundary_recall)(label, label))  # r = 0
  np.testing.assert_array_equal(got, np.zeros(3, np.float32))
  # The same maps score ~1 once a radius is given.
  forced = jax.jit(functools.partial(metrics.boundary_recall, radius=1))
  assert (np.asarray(forced(label, label)) > 0.99).all()


@pytest.mark.parametrize("tolerance", [0, 1, 2])
def test_boundary_prf_matches_reference(tolerance):
  pred, label = _maps(5, b=4)
  label[3] = IGNORE  # no valid pixel: NaN
  pred[1, 7:9, 5:8] = IGNORE  # ignored prediction pixels are not valid either
  fn = jax.jit(functools.partial(metrics.boundary_precision_recall_f1,
                                 tolerance=tolerance))
  got = [np.asarray(v) for v in fn(pred, label)]
  want = ref_prf(pred, label, tolerance)
  for g, w in zip(got, want):
    assert g.shape == (4,) and g.dtype == np.float32
    np.testing.assert_allclose(g, w, rtol=1e-5, equal_nan=True)
  assert np.isnan(got[2][3]) and np.isfinite(got[2][:3]).all()


def test_boundary_f1_identity_shift_and_edge_cases():
  prf = jax.jit(metrics.boundary_precision_recall_f1)  # 256x256: r = 1
  label = _split(256, 256, 128)
  for v in prf(label, label):
    np.testing.assert_allclose(v, [1.0])
  assert float(prf(_split(256, 256, 129), label)[2][0]) == 1.0  # within r
  f1_far = float(prf(_split(256, 256, 140), label)[2][0])
  assert f1_far == 0.0
  const = np.zeros_like(label)
  np.testing.assert_allclose(np.stack(prf(const, const)), [[1.0]] * 3)
  np.testing.assert_allclose(np.stack(prf(const, label)), [[1.0], [0.0], [0.0]])
  np.testing.assert_allclose(np.stack(prf(label, const)), [[0.0], [1.0], [0.0]])
  # An unlabelled band over the true border hides it: nothing to recall, and
  # the predicted border inside the band is not counted either.
  banded = label.copy()
  banded[:, :, 120:136] = IGNORE
  np.testing.assert_allclose(np.stack(prf(label, banded)), [[1.0]] * 3)


@pytest.mark.parametrize("shape_in,shape_out",
                         [((16, 24), (4, 6)), ((4, 6), (16, 24)),
                          ((8, 8), (32, 32))])
def test_resize_matches_torch_bilinear_formula(shape_in, shape_out):
  x = np.random.default_rng(6).normal(size=(2,) + shape_in + (3,))
  got = jax.jit(metrics._resize_bilinear, static_argnums=(1, 2))(
      x.astype(np.float32), *shape_out)
  np.testing.assert_allclose(got, ref_torch_bilinear(x, *shape_out),
                             atol=1e-5)


def test_asa_matches_reference_with_random_soft_assignments():
  rng = np.random.default_rng(7)
  b, h, w, c = 2, 32, 48, 3
  label = _with_ignored(rng, _blocky(rng, b, h, w, c, block=6)).astype(np.int32)
  assignments = [_random_assignment(rng, b, h // 4, w // 4),
                 _random_assignment(rng, b, h // 8, w // 8)]
  fn = jax.jit(functools.partial(metrics.achievable_segmentation_accuracy,
                                 num_classes=c))
  got = np.asarray(fn(assignments, label))
  want = ref_asa(assignments, label, c)
  assert got.shape == (b,)
  # Allow one pixel of float32-vs-float64 argmax near-ties per image.
  np.testing.assert_allclose(got, want, atol=1.01 / (h * w))
  assert (got < 1).all() and (got > 0.2).all()


def _cells_to_pixels(cells):
  return np.repeat(np.repeat(cells, 16, 1), 16, 2).astype(np.int32)


def _asa_parent(label, c):
  b, h, w = label.shape
  assignments = [_parent_onehot(b, h // 4, w // 4),
                 _parent_onehot(b, h // 8, w // 8)]
  return np.asarray(jax.jit(functools.partial(
      metrics.achievable_segmentation_accuracy, num_classes=c))(
          assignments, label))


def test_asa_is_one_for_cell_aligned_stripes_and_checkerboard():
  # Parent-one-hot assignments pool exact 16x16 cells; a label constant on
  # cells along one axis, or a checkerboard of cells, survives the bilinear
  # resizes (own cell weight 0.625 > 0.375 across an edge).
  stripes = _cells_to_pixels(np.array([[[0, 2, 1, 2]] * 3]))
  checker = _cells_to_pixels(np.indices((3, 4)).sum(0)[None] % 2)
  label = np.concatenate([stripes, checker])
  # Ignoring pixels that the 4x downscale never samples (rows 4m) changes
  # nothing: they are just not counted. Nor does ignoring a whole stripe cell
  # (a zero vector): at its corners the own cell (0.390625) still beats any
  # other class (<= 0.234375 + 0.140625). (In the checkerboard it would
  # not: own 0.390625 < two same-class side cells 0.46875.)
  label[:, ::4, 20:40] = IGNORE
  label[0, 16:32, 32:48] = IGNORE
  np.testing.assert_allclose(_asa_parent(label, 3), [1.0, 1.0])


def test_asa_hand_figures_for_cell_labels():
  # A 4x4 minority block aligned to the stride-4 grid inside one cell: the
  # cell's majority wins, every other pixel is right: 1 - 16 / (48 * 64).
  label = _cells_to_pixels(np.zeros((1, 3, 4)))
  label[0, 20:24, 36:40] = 1
  np.testing.assert_allclose(_asa_parent(label, 2), [1 - 16 / (48 * 64)],
                             rtol=1e-6)
  # General cell labels: bilinear upscaling from stride 4 weighs the four
  # cells around an interior cell corner 0.390625 (own), 0.234375 (each side
  # neighbour), 0.140625 (diagonal) at the pixel next to the corner, so that
  # pixel goes wrong iff both side neighbours share a class c' != own and the
  # diagonal cell is not own. Every other pixel keeps its own cell's class.
  rng = np.random.default_rng(8)
  cells = rng.integers(0, 3, (2, 4, 5))
  wrong = np.zeros(2)
  for n in range(2):
    for i in range(1, 4):
      for j in range(1, 5):  # corner point between cells (i-1..i, j-1..j)
        quad = cells[n, i - 1:i + 1, j - 1:j + 1]
        for di in (0, 1):
          for dj in (0, 1):
            own, diag = quad[di, dj], quad[1 - di, 1 - dj]
            side_a, side_b = quad[1 - di, dj], quad[di, 1 - dj]
            wrong[n] += side_a == side_b != own and diag != own
  assert wrong.sum() > 0  # the case is exercised
  np.testing.assert_allclose(_asa_parent(_cells_to_pixels(cells), 3),
                             1 - wrong / (64 * 80), rtol=1e-6)


def test_asa_nan_without_labelled_pixels():
  label = np.full((1, 32, 32), IGNORE, np.int32)
  assert np.isnan(_asa_parent(label, 3)[0])


def test_segment_asa_full_resolution_matches_reference():
  rng = np.random.default_rng(9)
  label = _with_ignored(rng, _blocky(rng, 3, 24, 20, 4)).astype(np.int32)
  segments = _blocky(rng, 3, 24, 20, 30, block=3, noise=0.0)
  segments[0, :4] = -1  # ignored segments (as in the SLIC maps)
  label[2] = IGNORE
  fn = jax.jit(functools.partial(metrics.segment_asa, num_segments=32,
                                 num_classes=4))
  got = np.asarray(fn(segments, label))
  np.testing.assert_allclose(got, ref_segment_asa(segments, label, 4),
                             rtol=1e-6, equal_nan=True)
  assert np.isnan(got[2]) and (got[:2] < 1).all()
  # Default num_classes (256 bins) and num_segments derived from concrete ids.
  np.testing.assert_allclose(metrics.segment_asa(segments, label), got,
                             rtol=1e-6, equal_nan=True)


def test_segment_asa_lower_resolution_segments():
  rng = np.random.default_rng(10)
  label = _with_ignored(rng, _blocky(rng, 2, 32, 24, 3, block=3))
  segments = rng.integers(0, 12, (2, 8, 6))  # factor 4: like H/4 superpixels
  fn = jax.jit(functools.partial(metrics.segment_asa, num_segments=12))
  got = np.asarray(fn(segments, label.astype(np.int32)))
  np.testing.assert_allclose(got, ref_segment_asa(segments, label, 256),
                             rtol=1e-6)
  # One segment per pixel is perfect; a single segment scores the majority.
  ids = np.arange(32 * 24).reshape(1, 32, 24)
  assert float(metrics.segment_asa(ids, label[:1])[0]) == 1.0
  one = np.zeros((1, 1, 1), np.int32)
  v = label[0][label[0] != IGNORE]
  np.testing.assert_allclose(metrics.segment_asa(one, label[:1]),
                             [np.bincount(v).max() / v.size], rtol=1e-6)


def test_segment_asa_errors_and_out_of_range_ids():
  segments = np.array([[[0, 1], [2, 5]]], np.int32)
  label = np.zeros((1, 4, 4), np.int32)
  with pytest.raises(ValueError, match="num_segments"):
    jax.jit(metrics.segment_asa)(segments, label)
  with pytest.raises(ValueError, match="multiple"):
    metrics.segment_asa(segments, np.zeros((1, 5, 4), np.int32))
  too_small = jax.jit(functools.partial(metrics.segment_asa, num_segments=4))
  assert np.isnan(float(too_small(segments, label)[0]))


def test_confusion_matrix_and_mean_iou_match_numpy():
  c = 4
  pred, label = _maps(11, b=3, num_classes=c)
  pred[0, 0, :5] = c + 2  # out of range predictions are not counted
  cm = np.asarray(jax.jit(metrics.confusion_matrix, static_argnums=2)(
      pred, label, c))
  assert cm.shape == (3, c, c) and cm.dtype == np.int32
  want = np.zeros((3, c, c), np.int64)
  for n in range(3):
    for t, p in zip(label[n].ravel(), pred[n].ravel()):
      if t != IGNORE and 0 <= p < c:
        want[n, t, p] += 1
  np.testing.assert_array_equal(cm, want)

  def ref_miou(m):
    ious = []
    for k in range(m.shape[0]):
      union = m[k, :].sum() + m[:, k].sum() - m[k, k]
      if union > 0:
        ious.append(m[k, k] / union)
    return np.mean(ious) if ious else np.nan

  got = np.asarray(jax.jit(metrics.mean_iou)(cm))
  np.testing.assert_allclose(got, [ref_miou(m) for m in want], rtol=1e-6)
  total = want.sum(0)
  np.testing.assert_allclose(metrics.mean_iou(total), ref_miou(total),
                             rtol=1e-6)
  # Host int64 sums beyond int32 and classes absent from both maps.
  big = np.diag([3_000_000_000, 0, 1_000_000_000]).astype(np.int64)
  big[0, 2] = 1_000_000_000
  np.testing.assert_allclose(metrics.mean_iou(big), ref_miou(big), rtol=1e-6)
  assert np.isnan(float(metrics.mean_iou(np.zeros((c, c), np.int32))))


def test_per_image_metrics_on_a_batch_sharded_over_devices():
  # As in the eval step: the batch axis is sharded over the 8 fake devices.
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  pred, label = _maps(12, b=len(jax.devices()), h=16, w=16)
  segs = _blocky(np.random.default_rng(13), len(pred), 4, 4, 6, block=1)

  @jax.jit
  def step(p, l, s):
    return (metrics.pixel_accuracy(p, l), metrics.confusion_matrix(p, l, 3),
            metrics.segment_asa(s, l, num_segments=6, num_classes=3))

  sharded = step(*(jax.device_put(x.astype(np.int32), shard)
                   for x in (pred, label, segs)))
  local = step(pred, label, segs)
  for a, b in zip(sharded, local):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert sharded[1].sharding.spec[0] == "data"


# ------------------------------------------- images of many sizes, padded ---

def test_default_radius_array_equals_python_round_including_ties():
  sizes = [(24, 20), (256, 256), (1024, 2048), (120, 160), (360, 480),
           (600, 800), (840, 1120), (1, 1), (4000, 3000)]
  rng = np.random.default_rng(0)
  sizes += [tuple(s) for s in rng.integers(1, 3000, (200, 2))]
  got = np.asarray(jax.jit(metrics.default_radius_array)(np.array(sizes)))
  np.testing.assert_array_equal(
      got, [metrics.default_radius(h, w) for h, w in sizes])


def _canvas(maps, sizes, h, w, fill):
  out = np.full((len(maps), h, w), fill, np.int32)
  for i, (m, (a, b)) in enumerate(zip(maps, sizes)):
    out[i, :a, :b] = m
  return out


@pytest.mark.slow  # 13 s on 2 cores (compiles or runs more).
@pytest.mark.parametrize("seed", [0, 1])
def test_padded_batch_equals_each_image_alone(seed):
  """Boundary metrics on a padded canvas with `size` give each image's own
  figures (own default radius, own border), whatever the padding holds."""
  rng = np.random.default_rng(seed)
  sizes = [(250, 180), (109, 203), (310, 310), (64, 40)]
  preds, labels = [], []
  for h, w in sizes:
    label = _with_ignored(rng, _blocky(rng, 1, h, w, 3, block=9))[0]
    preds.append(_blocky(rng, 1, h, w, 3, block=9, noise=0.02)[0])
    labels.append(label)
  # Garbage in the padding: it must not matter.
  pred_c = _canvas(preds, sizes, 320, 320, 2)
  label_c = _canvas(labels, sizes, 320, 320, 1)
  size = np.array(sizes)
  br = np.asarray(jax.jit(metrics.boundary_recall)(pred_c, label_c, size=size))
  prf = [np.asarray(v) for v in jax.jit(metrics.boundary_precision_recall_f1)(
      pred_c, label_c, size=size)]
  for i, (p, l) in enumerate(zip(preds, labels)):
    alone = float(metrics.boundary_recall(p[None], l[None])[0])
    np.testing.assert_allclose(br[i], alone, rtol=1e-6, atol=1e-7)
    alone_prf = metrics.boundary_precision_recall_f1(p[None], l[None])
    for got, want in zip(prf, alone_prf):
      np.testing.assert_allclose(got[i], float(want[0]), rtol=1e-6)
  assert (br[:3] > 0).all()  # Radii >= 1 here (the 64x40 image has r = 0).


def test_one_compilation_serves_every_image_size():
  fn = jax.jit(lambda p, l, s: metrics.boundary_recall(p, l, size=s))
  rng = np.random.default_rng(3)
  with profiling.CompilationCounter() as compiles:
    for h, w in [(100, 90), (128, 60), (70, 128), (128, 128)]:
      label = _blocky(rng, 2, 128, 128, 3).astype(np.int32)
      fn(label, label, np.array([[h, w], [w, h]]))
  assert compiles.traces["<lambda>"] == 1
