"""Annotator-like coarse labels (coarseseg_jax.datasets.annotator)."""

import io

import numpy as np
from PIL import Image
import pytest
from scipy import ndimage

from coarseseg_jax import config_validation
from coarseseg_jax import datasets
from coarseseg_jax import errors
from coarseseg_jax import workdir as workdir_lib
from coarseseg_jax.datasets import annotator
from coarseseg_jax.datasets import coarse
from coarseseg_jax.datasets import items as items_lib
from coarseseg_jax.datasets import synthetic

import tiny_config  # pylint: disable=g-bad-import-order

POLYGONS = annotator.AnnotatorParams(p_scribble=0.0, p_skip_small=0.0)
SCRIBBLES = annotator.AnnotatorParams(p_scribble=1.0, p_skip_small=0.0)


def _layouts(n=8, size=128):
  return [synthetic.layout(np.random.default_rng([11, i]), size, 6)
          for i in range(n)]


def _square(size=160, side=120):
  """Class 1 square in the middle of class 0."""
  fine = np.zeros((size, size), np.uint8)
  lo = (size - side) // 2
  fine[lo:lo + side, lo:lo + side] = 1
  return fine, lo, side


def _margins(out, lo, side):
  """Per side of the square and per position along it: the distance from
  the square's border to its first labelled pixel (the band's width)."""
  inside = out[lo:lo + side, lo:lo + side] == 1
  widths = []
  for view in (inside, inside[::-1], inside.T, inside.T[::-1]):
    rows = view[:side // 2]
    # Columns away from the corners, where the other sides' margins rule.
    first = np.argmax(rows[:, side // 4:-side // 4], axis=0).astype(float)
    first[~rows[:, side // 4:-side // 4].any(axis=0)] = np.nan
    widths.append(first)
  return np.concatenate(widths)


@pytest.mark.parametrize("kernel", [5, 15, 25])
def test_labels_only_inside_the_true_region(kernel):
  for i, fine in enumerate(_layouts()):
    fine = fine.copy()
    fine[:16, :16] = 255
    out, conflicts = annotator.annotator_label(fine, kernel, seed=i,
                                               return_conflicts=True)
    assert out.shape == fine.shape and out.dtype == np.uint8
    labelled = out != 255
    np.testing.assert_array_equal(out[labelled], fine[labelled])
    assert np.all(out[fine == 255] == 255)
    assert conflicts >= 0
    # Every labelled pixel lies in the connected region of its class that
    # holds it: never in the band's other side.
    for c in np.unique(out[labelled]):
      regions, _ = ndimage.label(fine == c)
      assert np.all(regions[out == c] > 0)


def test_margins_are_uneven_where_erosion_is_even():
  fine, lo, side = _square()
  eroded = _margins(coarse.coarse_label(fine, 25, tolerance=0.0), lo, side)
  assert np.nanstd(eroded) < 0.6  # 12 px everywhere.
  spreads, means = [], []
  for seed in range(6):
    out = annotator.annotator_label(fine, 25, seed=seed, params=POLYGONS)
    widths = _margins(out, lo, side)
    assert np.isfinite(widths).mean() > 0.5
    spreads.append(np.nanstd(widths) / np.nanmean(widths))
    means.append(np.nanmean(widths))
  assert np.median(spreads) > 0.2   # Narrow on some sides, wide on others.
  assert 0.3 * 12.5 < np.median(means) < 2.5 * 12.5  # About kernel / 2.


def test_some_small_regions_are_left_unlabelled():
  fine = np.zeros((200, 200), np.uint8)
  squares = []
  for r in range(10, 190, 30):
    for c in range(10, 190, 30):
      fine[r:r + 16, c:c + 16] = 1 + (r + c) // 30 % 4
      squares.append((r, c))
  # 16 x 16 = 256 px is small at kernel 9 (below (2 * 9) ** 2 = 324 px).
  def skipped(params):
    out = []
    for seed in range(4):
      label = annotator.annotator_label(fine, 9, seed=seed, params=params)
      out += [not np.any(label[r:r + 16, c:c + 16] != 255)
              for r, c in squares]
      assert np.any(label == 0)  # The large background region is labelled.
    return np.mean(out)
  default = skipped(annotator.AnnotatorParams(p_scribble=0.0))
  never = skipped(POLYGONS)  # Only where the margin leaves nothing.
  assert never < 0.3
  assert 0.3 < default < 0.85 and default > never + 0.25


def test_scribbles_are_thin():
  fine, lo, side = _square()
  for seed in range(4):
    out = annotator.annotator_label(fine, 25, seed=seed, params=SCRIBBLES)
    stroke = out == 1
    assert stroke.any()
    # Strokes 3 px wide: a 3 x 3 erosion keeps about a third of them; a
    # polygon keeps nearly all of its pixels.
    kept = ndimage.binary_erosion(stroke, np.ones((3, 3)))
    assert kept.sum() < 0.5 * stroke.sum()
    assert stroke.sum() < 0.15 * side * side
  polygon = annotator.annotator_label(fine, 25, seed=0, params=POLYGONS) == 1
  assert ndimage.binary_erosion(polygon, np.ones((3, 3))).sum() > (
      0.9 * polygon.sum())


def test_some_regions_are_only_scribbled_with_the_defaults():
  fine, _, _ = _square()
  kinds = set()
  for seed in range(40):
    stroke = annotator.annotator_label(fine, 25, seed=seed) == 1
    thin = ndimage.binary_erosion(stroke, np.ones((3, 3))).sum() < (
        0.5 * stroke.sum())
    kinds.add("scribble" if thin else "polygon")
  assert kinds == {"scribble", "polygon"}


def test_fraction_labelled_is_sane_and_follows_the_kernel():
  layouts = _layouts(10, 128)
  fractions = {}
  for kernel in (5, 25):
    fractions[kernel] = np.mean([coarse.labelled_fraction(
        annotator.annotator_label(f, kernel, seed=i))
                                 for i, f in enumerate(layouts)])
  erosion = np.mean([coarse.labelled_fraction(coarse.coarse_label(f, 25))
                     for f in layouts])
  assert 0.15 < fractions[25] < 0.7
  assert fractions[5] > fractions[25] + 0.1
  assert fractions[25] < erosion + 0.1  # No more generous than erosion.


def test_deterministic_per_seed():
  fine = _layouts(1, 128)[0]
  a = annotator.annotator_label(fine, 15, seed=3)
  b = annotator.annotator_label(fine.copy(), 15, seed=3)
  c = annotator.annotator_label(fine, 15, seed=4)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  np.testing.assert_array_equal(
      annotator.annotator_label(fine[..., None], 15, seed=3)[..., 0], a)
  assert annotator.example_seed("train_00001") == annotator.example_seed(
      "train_00001") != annotator.example_seed("train_00002")
  with pytest.raises(ValueError):
    annotator.annotator_label(fine, 0)


def test_process_item_uses_the_style_seeded_by_the_id():
  def loader(index):
    image, label = synthetic.generate(0, "train", index, 64, 6)
    return items_lib.LoadedItem(f"train_{index:05d}", image, label, None)
  spec = items_lib.ProcessSpec(6, 7, 16, 10.0, 1.0, coarse_style="annotator")
  _, example, stats = items_lib.process_item(loader, spec, 2)
  _, label = synthetic.generate(0, "train", 2, 64, 6)
  expected = annotator.annotator_label(
      label, 7, seed=annotator.example_seed("train_00002"))
  got = np.asarray(Image.open(io.BytesIO(example["label_coarse"])))
  np.testing.assert_array_equal(got, expected)
  assert stats["labelled"] == np.count_nonzero(expected != 255)


def test_style_is_part_of_the_builder_config_name():
  for name in ("synthetic",):
    cls = datasets.builder_class(name)
    default = cls.make_config(coarse_kernel=15)
    styled = cls.make_config(coarse_kernel=15, coarse_style="annotator")
    assert "annotator" not in default.name  # Erosion keeps the old names.
    assert styled.name.startswith("k15-annotator_s16_")
    again = cls.parse_config_name(styled.name)
    assert (again.coarse_style, again.name) == ("annotator", styled.name)
    assert cls.parse_config_name(default.name).coarse_style == "erosion"
  with pytest.raises(errors.ConfigError, match="coarse_style='drawn'"):
    datasets.builder_class("synthetic").make_config(coarse_style="drawn")


def test_config_validation_names_a_bad_style_and_old_workdirs_mean_erosion():
  config = tiny_config.get_config()
  assert config.data.coarse_style == "erosion"
  config.data.coarse_style = "drawn"
  with pytest.raises(errors.ConfigError,
                     match=r"config.data.coarse_style='drawn'.*annotator"):
    config_validation.resolve(config)
  # A config.json written before the key existed is the erosion style.
  old = workdir_lib.config_as_json(tiny_config.get_config())
  del old["data"]["coarse_style"]
  assert workdir_lib.config_from_json(old).data.coarse_style == "erosion"
  assert not workdir_lib.differences(
      old, workdir_lib.config_as_json(tiny_config.get_config()))
