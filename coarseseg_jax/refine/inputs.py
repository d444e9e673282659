"""What `--mode=refine` refines: the examples of a prepared split or of a
folder of images with coarse label PNGs matched by stem, checked before
anything is computed (`errors.DatasetError` naming the file)."""

import logging
import os
import re
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple

import ml_collections
import numpy as np

from coarseseg_jax import datasets
from coarseseg_jax import errors
from coarseseg_jax import input_pipeline
from coarseseg_jax import predictor
from coarseseg_jax.datasets import folder
from coarseseg_jax.datasets import items
from coarseseg_jax.datasets import slic as slic_lib
from coarseseg_jax.labels import IGNORE_LABEL

log = logging.getLogger(__name__)


def safe_stem(name: str) -> str:
  """A file-name stem for an example id: runs of characters other than
  letters, digits, `.`, `-`, `_` become `_` (`aachen/x_1` -> `aachen_x_1`)."""
  return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "example"


class Example(NamedTuple):
  """One image to refine."""
  stem: str             # Output name.
  source: str           # Example id or image file, for messages.
  image: np.ndarray     # (H, W, 3) uint8 RGB.
  coarse: np.ndarray    # (H, W) uint8, 255 = unlabelled.
  slic: np.ndarray      # (H, W) int32 SLIC ids.
  fine: Optional[np.ndarray] = None  # (H, W) uint8, prepared splits only.


def split_examples(resolved, split: str
                   ) -> Tuple[int, Iterator[Example], Optional[List[str]]]:
  """(count, examples, class names) of a split of `resolved`'s dataset
  (`config_validation.Resolved`), in file order (the dataset prepared first
  if it is not)."""
  config = resolved.config
  builder = datasets.prepare_on_hosts(  # As training does, if it is not.
      resolved.builder, config.data, config.model.num_classes)
  try:
    count = builder.info.splits[split].num_examples
  except (KeyError, ValueError):
    raise errors.DatasetError(
        f"{builder.data_dir}: no split {split!r}; the dataset has "
        f"{', '.join(builder.info.splits)}.") from None
  data = ml_collections.ConfigDict({"train_labels": "coarse",
                                    "eval_center_crop": None})
  batches = input_pipeline.create_eval_iterator(
      builder, data, split, int(config.data.eval_batch_size))
  names = datasets.class_names(builder)

  def examples():
    used = set()
    for batch in batches:
      for i in np.flatnonzero(batch["mask"] > 0):
        h, w = int(batch["height"][i]), int(batch["width"][i])
        ident = batch["id"][i].decode("utf-8", "replace")
        stem = safe_stem(ident)
        while stem in used or stem.endswith("_overlay"):
          stem += "_"
        used.add(stem)
        image = np.round(batch["image"][i, :h, :w] * 255).astype(np.uint8)
        coarse = batch["label"][i, :h, :w]
        bad = np.unique(coarse[(coarse >= config.model.num_classes)
                               & (coarse != IGNORE_LABEL)])
        if bad.size:
          raise errors.DatasetError(
              f"{ident} ({split}): coarse label values {bad[:5].tolist()} "
              f"are beyond the model's {config.model.num_classes} classes.")
        yield Example(stem, ident, image, coarse.astype(np.uint8),
                      batch["slic"][i, :h, :w],
                      batch["label_fine"][i, :h, :w].astype(np.uint8))

  return count, examples(), list(names) if names else None


def folder_pairs(input_dir: str, coarse_dir: str,
                 num_classes: int) -> List[Tuple[str, str, str]]:
  """(stem, image file, coarse PNG) of two folders matched by stem, checked.

  Checks every pair before anything is computed and names every problem:
  a stem without a partner (either way), two images of one stem, a coarse
  PNG that is no single-channel label, of another size than its image, or
  with class ids of `num_classes` or more (other than 255). One
  `errors.DatasetError` holds them all, one line `<file>: <what>` each.
  Hidden and other files are ignored (non-image files with a warning).
  """
  problems: List[str] = []

  def listing(root, extensions):
    if not os.path.isdir(root):
      raise errors.DatasetError(f"{root}: folder not found.")
    found: Dict[str, str] = {}
    for name in sorted(os.listdir(root)):
      path = os.path.join(root, name)
      stem, ext = os.path.splitext(name)
      if name.startswith(".") or os.path.isdir(path):
        continue
      if ext.lower() not in extensions:
        log.warning("ignored %s: not a %s file.", path, "/".join(extensions))
      elif stem in found:
        problems.append(
            f"{path}: another file has the stem {stem!r} ({found[stem]}); "
            "stems must be unique.")
      else:
        found[stem] = path
    return found

  images = listing(input_dir, predictor.IMAGE_EXTENSIONS)
  coarse = listing(coarse_dir, (".png",))
  for stem, path in coarse.items():
    if stem not in images:
      problems.append(f"{path}: no image named {stem}.* in {input_dir}.")
  pairs = []
  for stem, path in images.items():
    if stem not in coarse:
      problems.append(f"{path}: no coarse label {stem}.png in {coarse_dir}.")
      continue
    try:
      w, h = items.image_size(path)
      label = folder.read_label(coarse[stem])
      # The image's size from its header stands in for the pixels here.
      items.validate_item(items.LoadedItem(
          stem, np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (h, w, 3)),
          None, label, items.ItemFiles(path, None, coarse[stem])),
                          num_classes)
    except errors.DatasetError as e:
      problems.append(str(e))
      continue
    pairs.append((stem, path, coarse[stem]))
  if problems:
    raise errors.DatasetError("\n".join(problems))
  if not pairs:
    raise errors.DatasetError(f"{input_dir}: no images "
                              f"({', '.join(predictor.IMAGE_EXTENSIONS)}).")
  return pairs


def folder_examples(config, pairs) -> Iterator[Example]:
  """The `folder_pairs` read, with SLIC maps of the config's settings."""
  d = config.data
  for stem, image_path, coarse_path in pairs:
    image = items.read_image(image_path)
    segments = slic_lib.slic_map(image, block=int(d.slic_block),
                                 compactness=float(d.slic_compactness),
                                 sigma=float(d.slic_sigma))
    yield Example(stem, image_path, image, folder.read_label(coarse_path),
                  segments)
