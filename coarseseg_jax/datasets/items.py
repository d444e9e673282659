"""Per-item work of dataset preparation: read, validate, complete, encode.

A builder's `load_item` turns one raw item (paths, an index) into a
`LoadedItem`; `process_item` validates it, generates its coarse label when it
has none (in the config's coarse style, seeded by the item's id), computes
its SLIC map and PNG-encodes it into a TFDS example. These functions run in
worker processes (the spawned pool, or Beam workers), so they take only
picklable arguments.

Paths may be local or URLs that `etils.epath` understands (`gs://...`), so
the same loaders read the raw files on a Beam cluster.
"""

import dataclasses
import io
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from etils import epath
import numpy as np
from PIL import Image

from coarseseg_jax import errors
from coarseseg_jax.datasets import annotator
from coarseseg_jax.datasets import slic
from coarseseg_jax.labels import IGNORE_LABEL



class ItemFiles(NamedTuple):
  """Where an item came from, for error messages (any may be None)."""
  image: Optional[str] = None
  label_fine: Optional[str] = None
  label_coarse: Optional[str] = None


class LoadedItem(NamedTuple):
  """What `load_item` returns (a plain 4-tuple without `files` works too)."""
  id: str
  image: np.ndarray          # (H, W, 3) uint8 RGB.
  label_fine: np.ndarray     # (H, W) uint8, 255 = unlabelled.
  label_coarse: Optional[np.ndarray]  # (H, W) uint8 or None: generate it.
  files: Optional[ItemFiles] = None


@dataclasses.dataclass(frozen=True)
class ProcessSpec:
  """What a worker needs to turn a loaded item into an example (picklable)."""
  num_classes: int
  coarse_kernel: int
  slic_block: int
  slic_compactness: float
  slic_sigma: float
  mask_coarse_conflicts: bool = True
  coarse_style: str = "erosion"   # annotator.STYLES.


# ------------------------------------------------------------------ files --
def is_url(path: Any) -> bool:
  return "://" in str(path)


def list_dir(path: str) -> List[str]:
  """Sorted entry names of a local or URL directory (DatasetError if none)."""
  try:
    return sorted(p.name for p in epath.Path(path).iterdir())
  except (FileNotFoundError, NotADirectoryError):
    raise errors.DatasetError(f"{path}: folder not found.") from None


def is_dir(path: str) -> bool:
  return epath.Path(path).is_dir()


def is_file(path: str) -> bool:
  return epath.Path(path).is_file()


def to_rgb8(im: "Image.Image", path: str) -> np.ndarray:
  """(H, W, 3) uint8 RGB of a PIL image, whatever its mode.

  8-bit modes (1, L, P, LA, RGB(A), CMYK, YCbCr, ...) go through PIL's
  conversion (alpha dropped). 16-bit grayscale (I;16*, and I with values in
  0..65535) is scaled to 8 bits (v / 257, rounded): PIL's own conversion
  would clip it at 255. 16-bit RGB PNGs are read by PIL at 8 bits per
  channel. Floating-point and other images raise DatasetError naming `path`.
  """
  mode = im.mode
  if mode.startswith("I"):
    arr = np.asarray(im)
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
      raise errors.DatasetError(
          f"{path}: {mode} image with values outside 0..65535 is not "
          "supported; convert it to 8-bit RGB.")
    gray = np.round(arr.astype(np.float64) / 257.0).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)
  if mode == "F":
    raise errors.DatasetError(
        f"{path}: floating-point images (mode F) are not supported; convert "
        "it to 8-bit RGB.")
  return np.asarray(im.convert("RGB"), np.uint8)


def _open(path: str):
  if is_url(path):
    with epath.Path(path).open("rb") as f:
      return Image.open(io.BytesIO(f.read()))
  return Image.open(path)


def open_image(path: str, what: str = "image",
               mode: Optional[str] = None) -> Tuple[np.ndarray, str]:
  """(pixels, PIL mode) of an image file, converted to `mode` if given.

  `mode="RGB"` converts as `to_rgb8` (16-bit grayscale scaled, not clipped).

  Raises:
    errors.DatasetError: naming the file if it is missing or unreadable.
  """
  try:
    with _open(path) as im:
      if mode == "RGB":
        return to_rgb8(im, path), "RGB"
      im = im.convert(mode) if mode else im
      return np.asarray(im), im.mode
  except FileNotFoundError:
    raise errors.DatasetError(f"{path}: file not found.") from None
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise errors.DatasetError(
        f"{path}: cannot read the {what} ({e}).") from None


def image_size(path: str, what: str = "image") -> Tuple[int, int]:
  """(width, height) of an image file from its header (no decoding)."""
  try:
    with _open(path) as im:
      return im.size
  except FileNotFoundError:
    raise errors.DatasetError(f"{path}: file not found.") from None
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise errors.DatasetError(
        f"{path}: cannot read the {what} ({e}).") from None


def read_image(path: str) -> np.ndarray:
  """Reads an image file as (H, W, 3) uint8 RGB (`to_rgb8`); DatasetError
  naming the file if it is unreadable or of an unsupported kind."""
  return open_image(path, "image", "RGB")[0].astype(np.uint8, copy=False)


def encode_png(array: np.ndarray) -> bytes:
  """PNG bytes of an (H, W), (H, W, 1) or (H, W, 3) uint8 array."""
  if array.ndim == 3 and array.shape[-1] == 1:
    array = array[..., 0]
  buf = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
  return buf.getvalue()


# --------------------------------------------------------------- resizing --
def resize_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
  """Bilinear resize of an (H, W, 3) uint8 image (antialiased when shrinking).
  """
  if image.shape[:2] == (height, width):
    return image
  return np.asarray(Image.fromarray(image).resize(
      (width, height), Image.Resampling.BILINEAR))


def resize_label(label: np.ndarray, width: int, height: int) -> np.ndarray:
  """Nearest-neighbour resize of an (H, W) uint8 label (no new values)."""
  if label.shape[:2] == (height, width):
    return label
  return np.asarray(Image.fromarray(label).resize(
      (width, height), Image.Resampling.NEAREST))


def scaled_size(width: int, height: int, factor: float) -> Tuple[int, int]:
  """(width, height) scaled by `factor`, rounded, at least 1 x 1."""
  return (max(1, int(round(width * factor))),
          max(1, int(round(height * factor))))


# -------------------------------------------------------- item processing --
def validate_item(item: LoadedItem, num_classes: int) -> None:
  """Raises DatasetError naming the file if a loaded item is malformed."""
  files = item.files or ItemFiles()
  image_file = files.image or item.id
  image = np.asarray(item.image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise errors.DatasetError(
        f"{image_file}: expected an RGB uint8 image, got shape {image.shape} "
        f"and dtype {image.dtype}.")
  h, w = image.shape[:2]
  for kind, label, name in (("label", item.label_fine, files.label_fine),
                            ("coarse label", item.label_coarse,
                             files.label_coarse)):
    if label is None:
      continue
    name = name or f"{item.id} ({kind})"
    label = np.asarray(label)
    if label.ndim == 3 and label.shape[-1] == 1:
      label = label[..., 0]
    if label.ndim != 2:
      raise errors.DatasetError(
          f"{name}: expected a single-channel {kind}, got shape {label.shape}.")
    if label.shape != (h, w):
      raise errors.DatasetError(
          f"{name}: {kind} size {label.shape[1]}x{label.shape[0]} (WxH) "
          f"differs from its image's {w}x{h} ({image_file}).")
    values = np.unique(label)
    bad = values[(values >= num_classes) & (values != IGNORE_LABEL)]
    if bad.size:
      raise errors.DatasetError(
          f"{name}: {kind} values {bad[:5].tolist()} are outside "
          f"0..{num_classes - 1} and not 255 (num_classes={num_classes}).")


def process_item(loader: Callable[[Any], Any], spec: ProcessSpec,
                 item: Any) -> Tuple[str, Dict[str, Any], Dict[str, int]]:
  """Loads, validates and completes one item; runs in worker processes.

  Returns:
    (key, example, stats): the TFDS example (PNG bytes, SLIC map, id) and
    pixel counts (`labelled`, `conflicts`: polygon pixels masked to 255).
  """
  loaded = LoadedItem(*loader(item))
  validate_item(loaded, spec.num_classes)
  image = np.asarray(loaded.image)
  fine = np.asarray(loaded.label_fine, dtype=np.uint8).reshape(image.shape[:2])
  if loaded.label_coarse is None:
    label_coarse, conflicts = annotator.make_coarse_label(
        fine, spec.coarse_style, spec.coarse_kernel, str(loaded.id))
  else:
    label_coarse = np.asarray(loaded.label_coarse, dtype=np.uint8).reshape(
        image.shape[:2]).copy()
    clash = ((label_coarse != fine) & (label_coarse != IGNORE_LABEL)
             & (fine != IGNORE_LABEL))
    conflicts = int(np.count_nonzero(clash))
    if spec.mask_coarse_conflicts:
      label_coarse[clash] = IGNORE_LABEL
  segments = slic.slic_map(image, block=spec.slic_block,
                           compactness=spec.slic_compactness,
                           sigma=spec.slic_sigma)
  example = {
      "image": encode_png(image),
      "label_fine": encode_png(fine),
      "label_coarse": encode_png(label_coarse),
      "slic": segments,
      "id": str(loaded.id),
  }
  stats = {"pixels": int(fine.size), "conflicts": int(conflicts),
           "labelled": int(np.count_nonzero(label_coarse != IGNORE_LABEL))}
  return str(loaded.id), example, stats


STAT_KEYS = ("pixels", "labelled", "conflicts")
BEAM_NAMESPACE = "coarseseg"


def beam_process_item(item: Any, loader: Callable[[Any], Any],
                      spec: ProcessSpec,
                      split: str) -> Tuple[str, Dict[str, Any]]:
  """`process_item` as a Beam map: (key, example); stats go to counters.

  The counters (namespace `coarseseg`, names `<split>/<stat>`) are read back
  from the pipeline result into the dataset's `coarse_stats` metadata.
  """
  from apache_beam import metrics  # pylint: disable=g-import-not-at-top
  key, example, stats = process_item(loader, spec, item)
  for name in STAT_KEYS:
    metrics.Metrics.counter(BEAM_NAMESPACE, f"{split}/{name}").inc(stats[name])
  return key, example
