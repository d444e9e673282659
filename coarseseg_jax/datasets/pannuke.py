"""`pannuke`: PanNuke, nuclei in histology (5 nucleus types + background).

Reads the three folds as downloaded and unpacked (pass their parent folder as
--manual_dir):

  <manual_dir>/Fold 1/images/fold1/images.npy   float (n, 256, 256, 3), 0..255
  <manual_dir>/Fold 1/masks/fold1/masks.npy     float (n, 256, 256, 6)
  <manual_dir>/Fold 2/...   <manual_dir>/Fold 3/...

Mask channels 0..4 are the nucleus types neoplastic, inflammatory,
connective, dead and epithelial and hold instance ids; channel 5 is
background. The semantic label of a pixel is the type channel that is
non-zero there (class ids 0..4 in that order; the lowest if two are), and 5
(background) where none is. Instance ids repeat across channels, so channels
are never summed. Images are rounded to uint8. Coarse labels are generated
(PanNuke has none of its own).

The arrays are large (a fold's masks are several GB as float64): they are
opened memory-mapped (`np.load(..., mmap_mode="r")`) and every worker reads
only the images it processes, so they must be local files (or on a mounted
file system). Shapes and dtypes are checked before anything is written.

Splits: folds 1 / 2 / 3 are train / validation / test by default; the
builder params `train_fold`, `validation_fold`, `test_fold` rearrange them.
"""

import collections
import os
import threading
from typing import Tuple

import numpy as np

from coarseseg_jax import errors
from coarseseg_jax.datasets import base
from coarseseg_jax.datasets import items as items_lib

CLASS_NAMES = ("neoplastic", "inflammatory", "connective", "dead",
               "epithelial", "background")
NUM_TYPES = 5
BACKGROUND = 5
SPLITS = ("train", "validation", "test")
_IMAGE_DTYPES = "float16, float32, float64 or uint8"
_MASK_DTYPES = "float16, float32, float64 or an integer type"

# (id, images.npy path, masks.npy path, index in the fold)
Item = Tuple[str, str, str, int]


def fold_paths(root: str, fold: int) -> Tuple[str, str]:
  """(images.npy, masks.npy) of a fold, in the download's layout."""
  base_dir = os.path.join(root, f"Fold {fold}")
  return (os.path.join(base_dir, "images", f"fold{fold}", "images.npy"),
          os.path.join(base_dir, "masks", f"fold{fold}", "masks.npy"))


_CACHE: "collections.OrderedDict[tuple, np.ndarray]" = collections.OrderedDict()
_CACHE_LOCK = threading.Lock()


def open_array(path: str) -> np.ndarray:
  """`path` memory-mapped read-only (cached per process); DatasetError if bad.
  """
  if items_lib.is_url(path):
    raise errors.DatasetError(
        f"{path}: PanNuke arrays are read memory-mapped and must be local "
        "files (or on a mounted file system), not URLs.")
  try:
    st = os.stat(path)
  except FileNotFoundError:
    raise errors.DatasetError(f"{path}: file not found.") from None
  key = (path, st.st_mtime_ns, st.st_size)
  with _CACHE_LOCK:
    if key in _CACHE:
      _CACHE.move_to_end(key)
      return _CACHE[key]
  try:
    array = np.load(path, mmap_mode="r", allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:
    raise errors.DatasetError(
        f"{path}: cannot read the .npy array ({e}).") from None
  if not isinstance(array, np.ndarray):
    raise errors.DatasetError(f"{path}: expected a .npy array, not an .npz.")
  with _CACHE_LOCK:
    _CACHE[key] = array
    while len(_CACHE) > 6:
      _CACHE.popitem(last=False)
  return array


def check_fold(images_path: str, masks_path: str) -> int:
  """Checks a fold's arrays' shapes and dtypes; returns its image count."""
  images, masks = open_array(images_path), open_array(masks_path)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise errors.DatasetError(
        f"{images_path}: expected shape (n, 256, 256, 3), got {images.shape}.")
  if not (np.issubdtype(images.dtype, np.floating) or images.dtype == np.uint8):
    raise errors.DatasetError(
        f"{images_path}: expected dtype {_IMAGE_DTYPES}, got {images.dtype}.")
  if masks.ndim != 4 or masks.shape[-1] != NUM_TYPES + 1:
    raise errors.DatasetError(
        f"{masks_path}: expected shape (n, 256, 256, 6), got {masks.shape}.")
  if not (np.issubdtype(masks.dtype, np.floating)
          or np.issubdtype(masks.dtype, np.integer)):
    raise errors.DatasetError(
        f"{masks_path}: expected dtype {_MASK_DTYPES}, got {masks.dtype}.")
  if masks.shape[:3] != images.shape[:3]:
    raise errors.DatasetError(
        f"{masks_path}: shape {masks.shape} does not match the images' "
        f"{images.shape} ({images_path}).")
  if not images.shape[0]:
    raise errors.DatasetError(f"{images_path}: holds no images.")
  return int(images.shape[0])


def masks_to_label(masks: np.ndarray) -> np.ndarray:
  """(H, W) uint8 semantic label of one (H, W, 6) PanNuke mask."""
  nonzero = np.asarray(masks)[..., :NUM_TYPES] != 0
  label = np.argmax(nonzero, axis=-1).astype(np.uint8)  # Lowest non-zero.
  label[~nonzero.any(axis=-1)] = BACKGROUND
  return label


def image_to_uint8(image: np.ndarray, where: str) -> np.ndarray:
  """Rounds a float 0..255 image to uint8; DatasetError if out of range."""
  image = np.asarray(image)
  if image.dtype == np.uint8:
    return image
  image = image.astype(np.float64)
  if not np.isfinite(image).all() or image.min() < 0 or image.max() > 255.5:
    raise errors.DatasetError(
        f"{where}: image values must be finite and in 0..255, got "
        f"{np.nanmin(image):g}..{np.nanmax(image):g}.")
  return np.clip(np.rint(image), 0, 255).astype(np.uint8)


class PanNuke(base.CoarsesegBuilder):
  """PanNuke nuclei, 5 types + background (see the module docstring)."""

  name = "coarseseg_pannuke"
  NUM_CLASSES = 6
  CLASS_NAMES = CLASS_NAMES
  NEEDS_MANUAL_DIR = True
  PARAMS = {
      "train_fold": ("trf", int, 1),
      "validation_fold": ("vaf", int, 2),
      "test_fold": ("tef", int, 3),
  }
  DESCRIPTION = __doc__

  @classmethod
  def check_params(cls, params):
    folds = [params[f"{s}_fold"] for s in SPLITS]
    if sorted(folds) != [1, 2, 3]:
      raise errors.ConfigError(
          f"pannuke: train_fold, validation_fold, test_fold = {folds} must be "
          "1, 2, 3 in some order.")

  def _split_items(self, dl_manager):
    root = self.manual_dir_or_error()
    out = {}
    for split in SPLITS:
      fold = self.builder_config.params[f"{split}_fold"]
      images_path, masks_path = fold_paths(root, fold)
      for path in (images_path, masks_path):
        if not os.path.isfile(path):
          raise errors.DatasetError(
              f"{path}: file not found (PanNuke expects 'Fold N/images/foldN/"
              "images.npy' and 'Fold N/masks/foldN/masks.npy', N = 1, 2, 3, "
              "under --manual_dir).")
      n = check_fold(images_path, masks_path)
      out[split] = [(f"fold{fold}_{i:05d}", images_path, masks_path, i)
                    for i in range(n)]
    return out

  @staticmethod
  def load_item(item: Item) -> base.LoadedItem:
    key, images_path, masks_path, index = item
    where = f"{images_path} [image {index}]"
    image = image_to_uint8(open_array(images_path)[index], where)
    masks = np.asarray(open_array(masks_path)[index])
    if not np.isfinite(masks).all() or masks.min() < 0:
      raise errors.DatasetError(
          f"{masks_path} [image {index}]: mask values must be finite "
          "instance ids >= 0.")
    return base.LoadedItem(key, image, masks_to_label(masks), None,
                           base.ItemFiles(where, f"{masks_path} "
                                                 f"[image {index}]"))
