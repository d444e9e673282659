"""`texture_mosaic`: class regions cut from photographs and textures.

A benchmark where class borders are texture borders, not colour edges. Every
class is one source image that ships inside scikit-image's wheel
(`skimage/data/`, read from disk: no download, no pooch); `SOURCES` lists
them with their origin and licence (README, "Photo-texture benchmark").

Each image (default 256 x 256) is a layout of regions, one of
`LAYOUTS` drawn per image: `voronoi` (4-9 cells with straight borders),
`blobs` (the synthetic dataset's smooth random regions) or `stripes` (bands
across a random direction with wavy borders). An image holds 2-4 of the
classes. Every connected region gets its own patch of its class's source: a
random crop, randomly flipped and transposed, at the source's scale times a
jitter in `SCALE_JITTER`. Sources are standardised (mean removed per channel,
divided by the luminance's spread), so the colour of a region is the
image's scene colour plus a small per-region offset (`COLOR_OFFSET_STD`)
plus the source's own variations at a per-region contrast: classes do not
differ in mean colour, only in texture (and the colour variation of the
colour sources). Smooth illumination, a slight blur and sensor noise finish
the image. Fine labels cover every pixel.

Train / validation / test are drawn apart: each source is cut into three
parts (`split_bounds`: the top half for train, the bottom-left quarter for
validation, the bottom-right quarter for test), and a split's patches come
only from its own part, so no source pixel is seen by two splits. A region
larger than its part's extent reads the part mirrored at its edges (no seam
in colour; the pattern repeats mirrored). The parts are different areas
of one photograph and need not look alike: `split_statistics` measures
how far each split's brightness and contrast lie from train's.

Builder params (config.data.builder_kwargs): num_classes (3..9, the first
ones of `SOURCES`), num_train, num_validation, num_test, image_size, seed.
A pure function of them: the same in any process.
"""

import functools
import os
from typing import NamedTuple, Tuple

import numpy as np
from scipy import ndimage
from skimage import transform

from coarseseg_jax import errors
from coarseseg_jax.datasets import base
from coarseseg_jax.datasets import items as items_lib
from coarseseg_jax.datasets import synthetic

SPLITS = ("train", "validation", "test")
LAYOUTS = ("voronoi", "blobs", "stripes")


class Source(NamedTuple):
  """A class's source image in skimage/data and how it is used."""
  name: str        # The class name.
  file: str        # File in skimage/data.
  scale: float     # Output pixels per source pixel (before the jitter).
  origin: str      # Where scikit-image got it, and its licence.
  # The part of the file used (row0, row1, col0, col1 as fractions).
  window: Tuple[float, float, float, float] = (0.0, 1.0, 0.0, 1.0)


# The first `num_classes` are used: the larger sources first (a split's
# quarter of them covers most regions without mirroring).
SOURCES = (
    Source("brick", "brick.png", 1.0,
           "CC0Textures 'Bricks25' (perspective-corrected, greyscale); CC0"),
    Source("grass", "grass.png", 1.0,
           "DeviantArt, linolafett 'Grass 01' (greyscale crop); CC0"),
    Source("gravel", "gravel.png", 1.0,
           "CC0Textures 'Gravel04' (greyscale crop); CC0"),
    Source("tissue", "ihc.png", 1.0,
           "immunohistochemistry of colonic glands, Center for Microscopy "
           "And Molecular Imaging (CMMI); no known copyright restrictions"),
    Source("stars", "hubble_deep_field.jpg", 1.0,
           "Hubble eXtreme Deep Field, NASA; public domain"),
    Source("vessels", "retina.jpg", 0.5,
           "fundus photograph of a normal left eye, Mikael Haggstrom, "
           "Wikimedia Commons; CC0 (the central square inside the fundus)",
           (0.18, 0.82, 0.18, 0.82)),
    Source("cat", "chelsea.png", 1.0,
           "Chelsea the cat, photograph by Stefan van der Walt; CC0"),
    Source("coffee", "coffee.png", 0.75,
           "coffee cup, photograph by Rachel Michetti (Pikolo Espresso Bar); "
           "CC0"),
    Source("coins", "coins.png", 1.0,
           "Greek coins from Pompeii, Brooklyn Museum collection; no known "
           "copyright restrictions"),
)
SCALE_JITTER = (0.8, 1.25)   # Per-region factor on the source's scale.
CONTRAST = 30.0              # Grey levels per unit of source spread.
CONTRAST_JITTER = (0.8, 1.25)
COLOR_OFFSET_STD = 4.0       # Per-region offset from the scene colour.
SCENE_RANGE = (80.0, 170.0)  # Scene colour, per channel.
SHADING = 0.1               # Spread of the smooth illumination factor.
NOISE_STD = 3.0
BLUR_SIGMA = 0.6
# Luminance of RGB (BT.601 weights): the sources' spread and split_statistics.
LUMINANCE = np.array([0.299, 0.587, 0.114], np.float32)


def source_dir() -> str:
  """scikit-image's data folder (inside the installed package)."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  return os.path.dirname(skimage.data.__file__)


def check_sources(num_classes: int) -> None:
  """DatasetError naming the first missing source file (nothing written)."""
  for source in SOURCES[:num_classes]:
    path = os.path.join(source_dir(), source.file)
    if not os.path.isfile(path):
      raise errors.DatasetError(
          f"{path}: texture source of class {source.name!r} not found; "
          "reinstall scikit-image (its wheel ships this file).")


@functools.lru_cache(maxsize=None)
def load_source(index: int) -> np.ndarray:
  """(H, W, 3) float32 standardised source `index` (its window, at its scale).

  Each channel's mean is removed and all are divided by the luminance's
  standard deviation (colour variation kept, mean colour gone).
  """
  source = SOURCES[index]
  image = items_lib.read_image(os.path.join(source_dir(), source.file))
  h, w = image.shape[:2]
  r0, r1, c0, c1 = source.window
  image = image[round(r0 * h):round(r1 * h), round(c0 * w):round(c1 * w)]
  image = image.astype(np.float32) / 255.0
  if source.scale != 1.0:
    h, w = image.shape[:2]
    image = transform.resize(
        image, (round(h * source.scale), round(w * source.scale)), order=1,
        anti_aliasing=source.scale < 1.0).astype(np.float32)
  image = image - image.mean(axis=(0, 1), keepdims=True)
  luminance = image @ LUMINANCE
  return image / max(float(luminance.std()), 1e-6)


def split_bounds(shape: Tuple[int, int], split: str
                 ) -> Tuple[int, int, int, int]:
  """(row0, row1, col0, col1) of a split's part of a source of `shape`.

  Train: the top half; validation: the bottom-left quarter; test: the
  bottom-right quarter. The three are disjoint and cover the source.
  """
  h, w = shape[:2]
  mid_r, mid_c = h // 2, w // 2
  return {"train": (0, mid_r, 0, w), "validation": (mid_r, h, 0, mid_c),
          "test": (mid_r, h, mid_c, w)}[split]


def split_statistics(index: int) -> dict:
  """How source `index`'s split parts differ: {split: (offset, spread)}.

  The three parts are different areas of one photograph, which need not
  look alike (the retina's bottom-right quarter is flatter than its top
  half). Per split: the mean luminance of its part minus the train part's,
  and its luminance spread over the train part's (train: (0.0, 1.0)), in
  the standardised source's units (a region's grey levels are `CONTRAST`
  times them, before the jitter).
  """
  source = load_source(index)
  luminance = source @ LUMINANCE
  parts = {}
  for split in SPLITS:
    r0, r1, c0, c1 = split_bounds(source.shape, split)
    part = luminance[r0:r1, c0:c1]
    parts[split] = (float(part.mean()), float(part.std()))
  mean0, std0 = parts["train"]
  return {split: (mean - mean0, std / std0)
          for split, (mean, std) in parts.items()}


def sample_patch(part: np.ndarray, rng: np.random.Generator,
                 shape: Tuple[int, int], scale: float, *,
                 order: int = 1) -> np.ndarray:
  """A (h, w, C) patch of `part` (H, W, C) at `scale`, flipped / transposed.

  A random window of `part` (mirrored at its edges where the window is
  larger than it) is sampled at `1 / scale` source pixels per output pixel
  (interpolation `order`), then randomly transposed and flipped.
  """
  h, w = shape
  transpose = bool(rng.integers(2))
  if transpose:
    h, w = w, h
  ph, pw = part.shape[:2]
  need_h, need_w = h / scale, w / scale
  # Inside the part where the window fits; anywhere (mirrored) otherwise.
  r0 = rng.uniform(0.0, ph - need_h if ph > need_h else ph)
  c0 = rng.uniform(0.0, pw - need_w if pw > need_w else pw)
  rows = r0 + (np.arange(h) + 0.5) / scale - 0.5
  cols = c0 + (np.arange(w) + 0.5) / scale - 0.5
  rr, cc = np.meshgrid(rows, cols, indexing="ij")
  patch = np.stack([
      ndimage.map_coordinates(part[..., k], (rr, cc), order=order,
                              mode="mirror") for k in range(part.shape[-1])],
                   axis=-1)
  if transpose:
    patch = patch.transpose(1, 0, 2)
  if rng.integers(2):
    patch = patch[::-1]
  if rng.integers(2):
    patch = patch[:, ::-1]
  return patch


def _smooth_field(rng, size: int, cells: int = 4) -> np.ndarray:
  """(size, size) smooth random field of unit spread, `cells` bumps across."""
  grid = rng.standard_normal((cells + 1, cells + 1))
  field = ndimage.zoom(grid, size / (cells + 1), order=3, mode="nearest",
                       grid_mode=True)[:size, :size]
  return field / max(float(field.std()), 1e-6)


# ---------------------------------------------------------------- layouts --
def _voronoi(rng, size: int, classes: np.ndarray) -> np.ndarray:
  n = int(rng.integers(max(4, len(classes)), 10))
  points = rng.uniform(0, size, (n, 2))
  yy, xx = np.mgrid[0:size, 0:size]
  d = (yy[..., None] - points[:, 0]) ** 2 + (xx[..., None] - points[:, 1]) ** 2
  cell_class = np.concatenate([rng.permutation(classes),
                               rng.choice(classes, n - len(classes))])
  return cell_class[np.argmin(d, axis=-1)]


def _blobs(rng, size: int, classes: np.ndarray) -> np.ndarray:
  return classes[synthetic.layout(rng, size, len(classes))]


def _stripes(rng, size: int, classes: np.ndarray) -> np.ndarray:
  theta = rng.uniform(0, np.pi)
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
  u = xx * np.cos(theta) + yy * np.sin(theta)
  v = -xx * np.sin(theta) + yy * np.cos(theta)
  wobble = sum(rng.uniform(2.0, 8.0) * np.sin(
      2 * np.pi * v / (size * rng.uniform(0.25, 1.0)) + rng.uniform(0, 6.3))
               for _ in range(2))
  u = u + wobble
  lo, hi = u.min(), u.max()
  edges = [lo]
  while edges[-1] < hi:
    edges.append(edges[-1] + size * rng.uniform(0.12, 0.35))
  band = np.clip(np.searchsorted(edges, u, side="right") - 1, 0, None)
  # A class per band, never the same as its neighbour's.
  order = [int(rng.integers(len(classes)))]
  for _ in range(int(band.max())):
    order.append((order[-1] + 1 + int(rng.integers(len(classes) - 1)))
                 % len(classes))
  return classes[np.asarray(order)[band]]


_LAYOUT_FNS = {"voronoi": _voronoi, "blobs": _blobs, "stripes": _stripes}


def layout(rng, size: int, num_classes: int) -> Tuple[np.ndarray, str]:
  """(size, size) uint8 class map and the name of the layout drawn."""
  kind = LAYOUTS[int(rng.integers(len(LAYOUTS)))]
  k = int(rng.integers(2, min(num_classes, 4) + 1))
  classes = np.sort(rng.choice(num_classes, k, replace=False))
  return _LAYOUT_FNS[kind](rng, size, classes).astype(np.uint8), kind


def generate(seed: int, split: str, index: int, image_size: int = 256,
             num_classes: int = 6) -> Tuple[np.ndarray, np.ndarray]:
  """Image (H, W, 3) uint8 and fine label (H, W) uint8 of one example.

  A pure function of its arguments (same output in any process).
  """
  rng = np.random.default_rng([seed, SPLITS.index(split), index])
  label, _ = layout(rng, image_size, num_classes)
  scene = rng.uniform(*SCENE_RANGE, 3)
  image = np.zeros((image_size, image_size, 3))
  for c in np.unique(label):
    source = load_source(int(c))
    r0, r1, c0, c1 = split_bounds(source.shape, split)
    part = source[r0:r1, c0:c1]
    components, _ = ndimage.label(label == c)
    for i, box in enumerate(ndimage.find_objects(components), 1):
      mask = components[box] == i
      h, w = mask.shape
      patch = sample_patch(part, rng, (h, w), rng.uniform(*SCALE_JITTER))
      colour = scene + rng.normal(0.0, COLOR_OFFSET_STD, 3)
      contrast = CONTRAST * rng.uniform(*CONTRAST_JITTER)
      image[box][mask] = colour + contrast * patch[mask]
  shading = 1.0 + SHADING * _smooth_field(rng, image_size)
  image *= shading[..., None]
  image = ndimage.gaussian_filter(image, (BLUR_SIGMA, BLUR_SIGMA, 0))
  image += rng.normal(0.0, NOISE_STD, image.shape)
  return np.clip(np.round(image), 0, 255).astype(np.uint8), label


class TextureMosaic(base.CoarsesegBuilder):
  """Regions of photo textures shipped with scikit-image (no download)."""

  name = "coarseseg_texture_mosaic"
  PARAMS = {
      "num_classes": ("n", int, 6),
      "num_train": ("tr", int, 400),
      "num_validation": ("va", int, 50),
      "num_test": ("te", int, 100),
      "image_size": ("px", int, 256),
      "seed": ("seed", int, 0),
  }
  DESCRIPTION = __doc__

  @classmethod
  def check_params(cls, params):
    if not 3 <= params["num_classes"] <= len(SOURCES):
      raise errors.ConfigError(
          f"texture_mosaic: num_classes={params['num_classes']} must be in "
          f"3..{len(SOURCES)} (one class per source image).")
    if params["image_size"] < 32:
      raise errors.ConfigError(
          f"texture_mosaic: image_size={params['image_size']} must be >= 32.")
    for split in SPLITS:
      if params[f"num_{split}"] < 1:
        raise errors.ConfigError(f"texture_mosaic: num_{split} must be >= 1.")

  def _info(self):
    if getattr(self, "_class_names", None) is None:
      n = self.builder_config.params["num_classes"]
      self._class_names = tuple(s.name for s in SOURCES[:n])
    return super()._info()

  def _split_items(self, dl_manager):
    p = self.builder_config.params
    check_sources(p["num_classes"])
    return {split: [(p["seed"], split, i, p["image_size"], p["num_classes"])
                    for i in range(p[f"num_{split}"])]
            for split in SPLITS}

  @staticmethod
  def load_item(item):
    seed, split, index, image_size, num_classes = item
    image, label = generate(seed, split, index, image_size, num_classes)
    return base.LoadedItem(f"{split}_{index:05d}", image, label, None)
