"""`suim`: SUIM, semantic segmentation of underwater imagery (8 classes).

Reads the download as it unpacks (pass its folder as --manual_dir):

  <manual_dir>/train_val/images/<stem>.jpg   1525 RGB images
  <manual_dir>/train_val/masks/<stem>.bmp    their masks (RGB colour codes)
  <manual_dir>/TEST/images/<stem>.jpg        110 test images
  <manual_dir>/TEST/masks/<stem>.bmp         (per-class sub-folders FV/, HD/,
                                             ... next to them are ignored)

Masks are RGB colour codes, noisy in the files, so each channel is
thresholded at 128 and the class is the bit code R G B:

  0 BW 000 background/waterbody   4 RO 100 robots
  1 HD 001 human divers           5 RI 101 reefs/invertebrates
  2 PF 010 plants/sea-grass       6 FV 110 fish/vertebrates
  3 WR 011 wrecks/ruins           7 SR 111 sea-floor/rocks

Coarse labels are generated from these (SUIM has none of its own).

Dozens of SUIM masks (over 80) differ in size from their image. The builder
param `on_size_mismatch` decides: `resize` (default: the mask is resized to
its image by nearest neighbour), `crop` (image and mask are cropped to their
common top-left part), `skip` (the pair is left out) or `error` (preparation
stops, naming the file). Each such file is named in a warning and counted in
the dataset's metadata (`size_mismatches`) and the prepare summary.

Splits: validation is a fixed, seeded choice of `num_validation` (150, as the
paper) images of train_val, made after any `skip`; train is the rest (the
paper: 1290); test is TEST (110). `resize` scales images (bilinear) and masks
(nearest) at preparation by a factor; `size` (0: off) then resizes every pair
to `size` x `size`. The thesis reduces SUIM "by half to 512 by 512 pixels"
(its Table I: 512 x 512), and the authors' training crop (RandomCrop(512),
without padding) needs images of at least 512 x 512, which halving a 640 x 480
photo does not give: `configs/suim.py` stores every image at 512 x 512
(`size=512`), so a 512 crop is the whole image and no crop is padding.
"""

import os
from typing import Dict, List, Optional, Tuple

from absl import logging
import numpy as np

from coarseseg_jax import errors
from coarseseg_jax.datasets import base
from coarseseg_jax.datasets import items as items_lib

CLASS_NAMES = ("background/waterbody", "human divers", "plants/sea-grass",
               "wrecks/ruins", "robots", "reefs/invertebrates",
               "fish/vertebrates", "sea-floor/rocks")
CLASS_CODES = ("BW", "HD", "PF", "WR", "RO", "RI", "FV", "SR")
SPLIT_FOLDERS = {"train_val": "train_val", "test": "TEST"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg")
MASK_EXTENSION = ".bmp"
ON_SIZE_MISMATCH = ("resize", "crop", "skip", "error")

# (stem, image path, mask path, on_size_mismatch, resize factor, square size)
Item = Tuple[str, str, str, str, float, int]


def mask_to_label(mask: np.ndarray) -> np.ndarray:
  """(H, W) uint8 class ids of an (H, W, 3) RGB SUIM mask (bits R, G, B)."""
  bits = np.asarray(mask) >= 128
  return (4 * bits[..., 0] + 2 * bits[..., 1] + bits[..., 2]).astype(np.uint8)


def label_to_mask(label: np.ndarray) -> np.ndarray:
  """The clean RGB colour code of class ids (inverse of `mask_to_label`)."""
  label = np.asarray(label)
  bits = np.stack([(label >> 2) & 1, (label >> 1) & 1, label & 1], axis=-1)
  return (bits * 255).astype(np.uint8)


def _find(folder: str, extensions: Tuple[str, ...]) -> Dict[str, str]:
  """{stem: file name} of the files of `folder` with one of `extensions`."""
  found = {}
  for name in items_lib.list_dir(folder):
    stem, ext = os.path.splitext(name)
    if not name.startswith(".") and ext.lower() in extensions:
      if stem in found:
        raise errors.DatasetError(
            f"{folder}/{name}: two files share the stem {stem!r} "
            f"({found[stem]}).")
      found[stem] = name
  return found


def list_pairs(root: str, folder: str) -> List[Tuple[str, str, str]]:
  """[(stem, image, mask)] of one SUIM split folder; DatasetError if bad."""
  images_dir = f"{root}/{folder}/images"
  masks_dir = f"{root}/{folder}/masks"
  for d in (images_dir, masks_dir):
    if not items_lib.is_dir(d):
      raise errors.DatasetError(
          f"{d}: folder not found (SUIM expects train_val/images, "
          "train_val/masks, TEST/images and TEST/masks under --manual_dir).")
  images = _find(images_dir, IMAGE_EXTENSIONS)
  if not images:
    raise errors.DatasetError(f"{images_dir}: no .jpg images.")
  masks = _find(masks_dir, (MASK_EXTENSION,))
  pairs = []
  for stem, name in sorted(images.items()):
    if stem not in masks:
      raise errors.DatasetError(
          f"{images_dir}/{name}: its mask {masks_dir}/{stem}.bmp is missing.")
    pairs.append((stem, f"{images_dir}/{name}", f"{masks_dir}/{masks[stem]}"))
  orphans = sorted(set(masks) - set(images))
  if orphans:
    logging.warning("suim: %d masks in %s have no image and are ignored: %s",
                    len(orphans), masks_dir, ", ".join(orphans[:10]))
  return pairs


def _sizes_differ(image: str, mask: str) -> Optional[str]:
  """A description if the mask's size differs from its image's, else None."""
  iw, ih = items_lib.image_size(image, "image")
  mw, mh = items_lib.image_size(mask, "mask")
  if (iw, ih) == (mw, mh):
    return None
  return f"mask size {mw}x{mh} (WxH) differs from its image's {iw}x{ih}"


class Suim(base.CoarsesegBuilder):
  """SUIM underwater imagery, 8 classes (see the module docstring)."""

  name = "coarseseg_suim"
  NUM_CLASSES = 8
  CLASS_NAMES = CLASS_NAMES
  NEEDS_MANUAL_DIR = True
  PARAMS = {
      "resize": ("r", float, 1.0),
      "size": ("sz", int, 0),
      "on_size_mismatch": ("sm", str, "resize"),
      "num_validation": ("va", int, 150),
      "split_seed": ("seed", int, 0),
  }
  DESCRIPTION = __doc__

  def __init__(self, **kwargs):
    self._mismatches: List[str] = []
    super().__init__(**kwargs)

  @classmethod
  def check_params(cls, params):
    if params["on_size_mismatch"] not in ON_SIZE_MISMATCH:
      raise errors.ConfigError(
          f"suim: on_size_mismatch={params['on_size_mismatch']!r} must be "
          f"one of {'|'.join(ON_SIZE_MISMATCH)}.")
    if not 0.0 < params["resize"] <= 4.0:
      raise errors.ConfigError(
          f"suim: resize={params['resize']} must be in (0, 4].")
    if not 0 <= params["size"] <= 8192:
      raise errors.ConfigError(
          f"suim: size={params['size']} must be 0 (off) or a side in pixels.")
    if params["num_validation"] < 1:
      raise errors.ConfigError("suim: num_validation must be >= 1.")

  def _split_items(self, dl_manager):
    root = self.manual_dir_or_error().rstrip("/")
    p = self.builder_config.params
    policy = p["on_size_mismatch"]
    pairs = {split: list_pairs(root, folder)
             for split, folder in SPLIT_FOLDERS.items()}
    self._mismatches = []
    out: Dict[str, List[Item]] = {}
    for split, split_pairs in pairs.items():
      kept = []
      for stem, image, mask in split_pairs:
        what = _sizes_differ(image, mask)
        if what is not None:
          if policy == "error":
            raise errors.DatasetError(
                f"{mask}: {what} ({image}); --on_size_mismatch=resize|crop|"
                "skip prepares it anyway.")
          action = {"resize": "mask resized by nearest neighbour",
                    "crop": "both cropped to their common top-left part",
                    "skip": "pair left out"}[policy]
          logging.warning("suim: %s: %s (%s); %s.", mask, what, image, action)
          self._mismatches.append(mask)
          if policy == "skip":
            continue
        kept.append((stem, image, mask, policy, p["resize"], p["size"]))
      out[split] = kept
    if self._mismatches:
      logging.warning("suim: %d masks differ in size from their image "
                      "(on_size_mismatch=%s).", len(self._mismatches), policy)
    n_val = p["num_validation"]
    train_val = out.pop("train_val")
    if n_val >= len(train_val):
      raise errors.DatasetError(
          f"{root}/train_val: cannot take {n_val} validation images out of "
          f"{len(train_val)}; lower num_validation.")
    order = np.random.default_rng(p["split_seed"]).permutation(len(train_val))
    return {"train": sorted(train_val[i] for i in order[n_val:]),
            "validation": sorted(train_val[i] for i in order[:n_val]),
            "test": out["test"]}

  def _download_and_prepare(self, dl_manager, download_config):
    super()._download_and_prepare(dl_manager, download_config)
    self.info.metadata["size_mismatches"] = {
        "count": len(self._mismatches),
        "on_size_mismatch": self.builder_config.params["on_size_mismatch"],
        "files": list(self._mismatches)}

  @staticmethod
  def load_item(item: Item) -> base.LoadedItem:
    stem, image_path, mask_path, policy, factor, size = item
    image = items_lib.read_image(image_path)
    mask = items_lib.open_image(mask_path, "mask", "RGB")[0]
    label = mask_to_label(mask)
    (h, w), (mh, mw) = image.shape[:2], label.shape
    if (h, w) != (mh, mw):
      if policy == "resize":
        label = items_lib.resize_label(label, w, h)
      elif policy == "crop":
        h, w = min(h, mh), min(w, mw)
        image, label = image[:h, :w], label[:h, :w]
      else:  # Listed as matching but changed since: stop.
        raise errors.DatasetError(
            f"{mask_path}: mask size {mw}x{mh} (WxH) differs from its "
            f"image's {w}x{h} ({image_path}).")
    if factor != 1.0:
      nw, nh = items_lib.scaled_size(w, h, factor)
      image = items_lib.resize_image(image, nw, nh)
      label = items_lib.resize_label(label, nw, nh)
    if size:
      image = items_lib.resize_image(image, size, size)
      label = items_lib.resize_label(label, size, size)
    return base.LoadedItem(stem, np.ascontiguousarray(image),
                           np.ascontiguousarray(label), None,
                           base.ItemFiles(image_path, mask_path))
