"""`folder`: the user's own data, in a plain directory layout.

  <dir>/classes.txt                      optional: one class name per line
  <dir>/train/images/<stem>.png|.jpg     RGB images
  <dir>/train/labels/<stem>.png          uint8 class ids, 255 = unlabelled
  <dir>/train/coarse/<stem>.png          optional: native coarse labels
  <dir>/validation/...                   optional: else a seeded part of train
  <dir>/test/...

Without `coarse/`, coarse labels are generated from the fine ones
(`coarse.coarse_label`). Without `validation/`, a fixed, seeded fraction of
train (`validation_fraction`, default 0.1, `split_seed` 0) becomes
validation. The number of classes is the line count of `classes.txt`, or
`num_classes` from the config / `--num_classes`.

The config name starts with the directory's name and a fingerprint of its
files (names, sizes, modification times), so a different or edited folder is
prepared anew instead of silently reusing a stale copy.
"""

import hashlib
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from coarseseg_jax import errors
from coarseseg_jax.datasets import base

SPLITS = ("train", "validation", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
CLASSES_FILE = "classes.txt"


def read_label(path: str) -> np.ndarray:
  """Reads a label PNG of class ids as (H, W) uint8; DatasetError if bad.

  Accepts single-channel images (mode L, LA, P: palette indices are the ids,
  1, I/I;16 with values <= 255) and RGB(A) images whose channels are equal.
  """
  arr, mode = base.open_image(path, "label")
  if arr.ndim == 3:
    if arr.shape[-1] == 2 or (  # LA, or RGB(A) with equal channels.
        arr.shape[-1] in (3, 4) and np.array_equal(arr[..., 0], arr[..., 1])
        and np.array_equal(arr[..., 0], arr[..., 2])):
      arr = arr[..., 0]
    else:
      raise errors.DatasetError(
          f"{path}: expected a single-channel label image of class ids "
          f"(PNG mode L or P), got a colour image (mode {mode}).")
  if arr.dtype != np.uint8:
    if arr.dtype != bool and (arr.min() < 0 or arr.max() > 255):
      bad = np.unique(arr[(arr < 0) | (arr > 255)])[:5].tolist()
      raise errors.DatasetError(
          f"{path}: label values {bad} are not class ids (0..254) or 255.")
    arr = arr.astype(np.uint8)
  return arr


def read_classes(root: str) -> Optional[Tuple[str, ...]]:
  """Class names from `<root>/classes.txt`, or None if there is none."""
  path = os.path.join(root, CLASSES_FILE)
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    names = tuple(line.strip() for line in f if line.strip())
  if not names:
    raise errors.DatasetError(f"{path}: lists no classes.")
  return names


def fingerprint(root: str) -> str:
  """8 hex digits over the relative paths, sizes and mtimes of the files."""
  h = hashlib.sha1()
  entries = []
  for split in SPLITS:
    for sub in ("images", "labels", "coarse"):
      d = os.path.join(root, split, sub)
      if os.path.isdir(d):
        with os.scandir(d) as it:
          for e in it:
            if e.is_file():
              st = e.stat()
              entries.append(f"{split}/{sub}/{e.name}:{st.st_size}:"
                             f"{st.st_mtime_ns}")
  classes = os.path.join(root, CLASSES_FILE)
  if os.path.isfile(classes):
    with open(classes, "rb") as f:
      entries.append(f"classes:{hashlib.sha1(f.read()).hexdigest()}")
  for entry in sorted(entries):
    h.update(entry.encode("utf-8", "surrogateescape") + b"\n")
  return h.hexdigest()[:8]


def _list_split(root: str,
                split: str) -> List[Tuple[str, str, str, Optional[str]]]:
  """[(stem, image, label, coarse or None)] of one split folder."""
  images_dir = os.path.join(root, split, "images")
  labels_dir = os.path.join(root, split, "labels")
  coarse_dir = os.path.join(root, split, "coarse")
  has_coarse = os.path.isdir(coarse_dir)
  stems: Dict[str, str] = {}
  for name in sorted(os.listdir(images_dir)):
    stem, ext = os.path.splitext(name)
    if name.startswith(".") or ext.lower() not in IMAGE_EXTENSIONS:
      continue
    path = os.path.join(images_dir, name)
    if stem in stems:
      raise errors.DatasetError(
          f"{path}: two images share the stem {stem!r} ({stems[stem]}).")
    stems[stem] = path
  if not stems:
    raise errors.DatasetError(
        f"{images_dir}: no images ({', '.join(IMAGE_EXTENSIONS)}).")
  items = []
  for stem, image in stems.items():
    label = os.path.join(labels_dir, stem + ".png")
    if not os.path.isfile(label):
      raise errors.DatasetError(f"{image}: its label {label} is missing.")
    coarse_label = None
    if has_coarse:
      coarse_label = os.path.join(coarse_dir, stem + ".png")
      if not os.path.isfile(coarse_label):
        raise errors.DatasetError(
            f"{image}: its coarse label {coarse_label} is missing (a coarse/ "
            "folder must have one for every image, or be removed).")
    items.append((stem, image, label, coarse_label))
  return items


def split_validation(items: Sequence, fraction: float, seed: int
                     ) -> Tuple[List, List]:
  """(train, validation): a fixed seeded `fraction` of `items` (>= 1)."""
  items = sorted(items)
  n_val = max(1, int(round(fraction * len(items))))
  if n_val >= len(items):
    raise errors.DatasetError(
        f"cannot take {n_val} validation images out of {len(items)} training "
        "images; add a validation/ folder or more training images.")
  order = np.random.default_rng(seed).permutation(len(items))
  val = sorted(items[i] for i in order[:n_val])
  train = sorted(items[i] for i in order[n_val:])
  return train, val


class Folder(base.CoarsesegBuilder):
  """A user's folder of images and label PNGs (see the module docstring)."""

  name = "coarseseg_folder"
  PARAMS = {
      "num_classes": ("n", int, None),
      "validation_fraction": ("vf", float, 0.1),
      "split_seed": ("seed", int, 0),
  }
  NEEDS_MANUAL_DIR = True
  DESCRIPTION = __doc__

  @classmethod
  def check_params(cls, params):
    n = params["num_classes"]
    if n is not None and not 1 <= n <= 255:
      raise errors.ConfigError(f"folder: num_classes={n} must be in 1..255.")
    if not 0.0 < params["validation_fraction"] < 1.0:
      raise errors.ConfigError(
          "folder: validation_fraction must be in (0, 1), got "
          f"{params['validation_fraction']}.")

  @classmethod
  def config_for_dir(cls, manual_dir: str, num_classes: Optional[int] = None,
                     **kwargs) -> Tuple[base.CoarsesegConfig,
                                        Optional[Tuple[str, ...]]]:
    """The config of a folder (tag = its name + fingerprint), class names.

    `classes.txt` gives the number of classes; a different `num_classes`
    passed alongside is an error.
    """
    root = os.path.abspath(os.path.expanduser(os.fspath(manual_dir)))
    if not os.path.isdir(root):
      raise errors.DatasetError(f"{manual_dir}: dataset directory not found.")
    names = read_classes(root)
    if names is not None:
      if num_classes is not None and num_classes != len(names):
        raise errors.DatasetError(
            f"{os.path.join(root, CLASSES_FILE)} lists {len(names)} classes "
            f"but num_classes={num_classes}; make them agree.")
      num_classes = len(names)
    tag = f"{os.path.basename(root) or 'folder'}-{fingerprint(root)}"
    return cls.make_config(tag=tag, num_classes=num_classes, **kwargs), names

  def _split_items(self, dl_manager):
    root = self.manual_dir_or_error()
    if not os.path.isdir(os.path.join(root, "train", "images")):
      raise errors.DatasetError(
          f"{root}: no train/images folder (expected "
          f"{root}/{{train,validation,test}}/images/ and labels/).")
    if not os.path.isdir(os.path.join(root, "test", "images")):
      raise errors.DatasetError(
          f"{root}: no test/images folder (expected "
          f"{root}/{{train,validation,test}}/images/ and labels/).")
    items = {"train": _list_split(root, "train"),
             "test": _list_split(root, "test")}
    if os.path.isdir(os.path.join(root, "validation", "images")):
      items["validation"] = _list_split(root, "validation")
    else:
      p = self.builder_config.params
      items["train"], items["validation"] = split_validation(
          items["train"], p["validation_fraction"], p["split_seed"])
    return items

  @staticmethod
  def load_item(item):
    stem, image_path, label_path, coarse_path = item
    image = base.read_image(image_path)
    label = read_label(label_path)
    coarse_label = read_label(coarse_path) if coarse_path else None
    return base.LoadedItem(
        stem, image, label, coarse_label,
        base.ItemFiles(image_path, label_path, coarse_path))
