"""`cityscapes_coarse`: Cityscapes with its own coarse labels (19 classes).

TFDS already registers `cityscapes`, hence this name. Reads the official
packages as unpacked into one folder (pass it as --manual_dir):

  leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
  gtCoarse/{train,val}/<city>/<city>_<seq>_<frame>_gtCoarse_labelIds.png
  leftImg8bit/train_extra/..., gtCoarse/train_extra/...  (optional, below)

(leftImg8bit_trainvaltest.zip, gtFine_trainvaltest.zip, gtCoarse.zip; other
files there, such as *_color.png or *_polygons.json, are ignored.)

Label ids (0..33) map to the 19 train ids with the official table (`TRAIN_ID`
below, from cityscapesScripts' labels.py); the other ids become 255. A label
file with a value outside 0..33 (and not 255) stops preparation, naming the
file: it is not a Cityscapes labelIds image.

Coarse labels are Cityscapes' own gtCoarse polygons, not generated ones.
Where a gtCoarse pixel contradicts gtFine (a different train id, both
labelled), it becomes 255 and is counted (`coarse_stats`), so the coarse
label never contradicts the fine one; `mask_conflicts=False` keeps gtCoarse
as it is, as the paper does (conflicts are then only counted). Note that
masking uses the fine labels.

Splits, as the paper: test is the official val (500 images; its coarse
labels are gtCoarse/val, or generated from the fine labels when
gtCoarse/val is absent: they are never trained on); validation is the train
images of aachen, monchengladbach, stuttgart and weimar (606); train is the
rest (2369). Evaluation is on the fine labels. `train_extra=True` adds the
split `train_extra` (19998 images of the extra set with gtCoarse; no fine
labels: label_fine is all 255), e.g. for `train_split="train+train_extra"`.

Images are resized at preparation to `image_width` x `image_height` (default
1024 x 512, as the paper; bilinear, antialiased), labels by nearest
neighbour; 0 x 0 keeps the original 2048 x 1024.
"""

import dataclasses
from typing import Dict, List, Optional, Set, Tuple

import numpy as np

from coarseseg_jax import errors
from coarseseg_jax.datasets import base
from coarseseg_jax.datasets import items as items_lib
from coarseseg_jax.labels import IGNORE_LABEL

CLASS_NAMES = ("road", "sidewalk", "building", "wall", "fence", "pole",
               "traffic light", "traffic sign", "vegetation", "terrain", "sky",
               "person", "rider", "car", "truck", "bus", "train", "motorcycle",
               "bicycle")
# Official labelId -> trainId (cityscapesScripts' helpers/labels.py); ids not
# listed (0-6 unlabeled..ground, 9 parking, 10 rail track, 14 guard rail,
# 15 bridge, 16 tunnel, 18 polegroup, 29 caravan, 30 trailer) -> 255.
TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8,
            22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16,
            32: 17, 33: 18}
NUM_LABEL_IDS = 34  # Valid labelIds are 0..33 (and 255, unlabelled).
VALIDATION_CITIES = ("aachen", "monchengladbach", "stuttgart", "weimar")
IMAGE_SUFFIX = "_leftImg8bit.png"

# (id, image, fine labelIds or None, coarse labelIds or None, width, height)
Item = Tuple[str, str, Optional[str], Optional[str], int, int]


def _lut() -> np.ndarray:
  lut = np.full(256, IGNORE_LABEL, np.uint8)
  for label_id, train_id in TRAIN_ID.items():
    lut[label_id] = train_id
  return lut


LUT = _lut()


def read_label_ids(path: str) -> np.ndarray:
  """A labelIds PNG as (H, W) uint8 train ids (255 = ignored)."""
  arr, mode = items_lib.open_image(path, "label")
  if arr.ndim != 2:
    raise errors.DatasetError(
        f"{path}: expected a single-channel labelIds image, got mode {mode} "
        f"with shape {arr.shape}.")
  arr = arr.astype(np.int64)
  values = np.unique(arr)
  bad = values[((values < 0) | (values >= NUM_LABEL_IDS))
               & (values != IGNORE_LABEL)]
  if bad.size:
    raise errors.DatasetError(
        f"{path}: unknown label ids {bad[:5].tolist()} (Cityscapes labelIds "
        "are 0..33).")
  return LUT[arr]


def _images(root: str, split: str) -> List[Tuple[str, str, str]]:
  """[(city, prefix, image path)] of leftImg8bit/<split>, sorted."""
  split_dir = f"{root}/leftImg8bit/{split}"
  if not items_lib.is_dir(split_dir):
    raise errors.DatasetError(
        f"{split_dir}: folder not found (Cityscapes expects leftImg8bit/, "
        "gtFine/ and gtCoarse/ under --manual_dir; see data/README.md).")
  found = []
  for city in items_lib.list_dir(split_dir):
    city_dir = f"{split_dir}/{city}"
    if city.startswith(".") or not items_lib.is_dir(city_dir):
      continue
    for name in items_lib.list_dir(city_dir):
      if name.endswith(IMAGE_SUFFIX):
        found.append((city, name[:-len(IMAGE_SUFFIX)], f"{city_dir}/{name}"))
  if not found:
    raise errors.DatasetError(f"{split_dir}: no *{IMAGE_SUFFIX} images.")
  return found


def _label_path(root: str, kind: str, split: str, city: str, prefix: str,
                image: str, listed: Dict[str, Set[str]]) -> str:
  """The label file of an image; DatasetError if it is missing."""
  city_dir = f"{root}/{kind}/{split}/{city}"
  if city_dir not in listed:  # One listing per folder (fast on gs://).
    listed[city_dir] = (set(items_lib.list_dir(city_dir))
                        if items_lib.is_dir(city_dir) else set())
  name = f"{prefix}_{kind}_labelIds.png"
  if name not in listed[city_dir]:
    raise errors.DatasetError(
        f"{image}: its label {city_dir}/{name} is missing.")
  return f"{city_dir}/{name}"


def list_items(root: str, split: str, width: int, height: int,
               fine: bool = True, coarse: str = "required") -> List[Item]:
  """Items of leftImg8bit/<split> with their gtFine / gtCoarse labels.

  Args:
    coarse: "required" (every image has gtCoarse), "if_present" (used when
      gtCoarse/<split> exists, then for every image) or "none".
  """
  if fine and not items_lib.is_dir(f"{root}/gtFine/{split}"):
    raise errors.DatasetError(f"{root}/gtFine/{split}: folder not found "
                              "(unpack gtFine_trainvaltest.zip there).")
  use_coarse = coarse == "required" or (
      coarse == "if_present" and items_lib.is_dir(f"{root}/gtCoarse/{split}"))
  if coarse == "required" and not items_lib.is_dir(f"{root}/gtCoarse/{split}"):
    raise errors.DatasetError(f"{root}/gtCoarse/{split}: folder not found "
                              "(unpack gtCoarse.zip there).")
  items, listed = [], {}
  for city, prefix, image in _images(root, split):
    fine_path = (_label_path(root, "gtFine", split, city, prefix, image,
                             listed) if fine else None)
    coarse_path = (_label_path(root, "gtCoarse", split, city, prefix, image,
                               listed) if use_coarse else None)
    items.append((prefix, image, fine_path, coarse_path, width, height))
  return items


class CityscapesCoarse(base.CoarsesegBuilder):
  """Cityscapes with gtCoarse, 19 classes (see the module docstring)."""

  name = "coarseseg_cityscapes_coarse"
  NUM_CLASSES = 19
  CLASS_NAMES = CLASS_NAMES
  NEEDS_MANUAL_DIR = True
  PARAMS = {
      "image_width": ("w", int, 1024),
      "image_height": ("h", int, 512),
      "mask_conflicts": ("mc", bool, True),
      "train_extra": ("x", bool, False),
  }
  DESCRIPTION = __doc__

  @classmethod
  def check_params(cls, params):
    w, h = params["image_width"], params["image_height"]
    if (w == 0) != (h == 0) or w < 0 or h < 0:
      raise errors.ConfigError(
          f"cityscapes_coarse: image_width={w}, image_height={h} must both be "
          "> 0 (resize) or both 0 (keep the original size).")

  def process_spec(self):
    mask = bool(self.builder_config.params["mask_conflicts"])
    return dataclasses.replace(super().process_spec(),
                               mask_coarse_conflicts=mask)

  def _split_items(self, dl_manager):
    root = self.manual_dir_or_error().rstrip("/")
    p = self.builder_config.params
    size = (p["image_width"], p["image_height"])
    train = list_items(root, "train", *size)
    out = {
        "train": [it for it in train
                  if it[0].split("_")[0] not in VALIDATION_CITIES],
        "validation": [it for it in train
                       if it[0].split("_")[0] in VALIDATION_CITIES],
        "test": list_items(root, "val", *size, coarse="if_present"),
    }
    if p["train_extra"]:
      out["train_extra"] = list_items(root, "train_extra", *size, fine=False)
    return out

  @staticmethod
  def load_item(item: Item) -> base.LoadedItem:
    key, image_path, fine_path, coarse_path, width, height = item
    image = items_lib.read_image(image_path)
    h, w = image.shape[:2]
    labels = []
    for path in (fine_path, coarse_path):
      if path is None:
        labels.append(None)
        continue
      label = read_label_ids(path)
      if label.shape != (h, w):
        raise errors.DatasetError(
            f"{path}: label size {label.shape[1]}x{label.shape[0]} (WxH) "
            f"differs from its image's {w}x{h} ({image_path}).")
      labels.append(label)
    fine, coarse_label = labels
    if fine is None:  # train_extra: coarse labels only.
      fine = np.full((h, w), IGNORE_LABEL, np.uint8)
    if width and (width, height) != (w, h):
      image = items_lib.resize_image(image, width, height)
      fine = items_lib.resize_label(fine, width, height)
      if coarse_label is not None:
        coarse_label = items_lib.resize_label(coarse_label, width, height)
    return base.LoadedItem(key, image, fine, coarse_label,
                           base.ItemFiles(image_path, fine_path, coarse_path))
