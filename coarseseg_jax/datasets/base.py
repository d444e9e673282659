"""Shared machinery of the coarseseg TFDS builders.

A dataset subclasses `CoarsesegBuilder` and says what its raw items are and
how to load one:

  class Mine(base.CoarsesegBuilder):
    name = "coarseseg_mine"             # TFDS name (prefixed: no clashes).
    NUM_CLASSES = 8                     # Or a "num_classes" entry in PARAMS.
    PARAMS = {"resize": ("r", float, 1.0)}   # name: (abbrev, type, default)

    def _split_items(self, dl_manager):  # -> {split: [picklable item, ...]}
      root = self.manual_dir_or_error()
      ...

    @staticmethod
    def load_item(item):                # Runs in worker processes.
      return base.LoadedItem(id, image, label_fine, label_coarse_or_None,
                             files=base.ItemFiles(image=..., label_fine=...))

The base validates every item (image RGB uint8, labels of the same size, label
values in 0..C-1 or 255), generates coarse labels when the item has none
(`coarse.coarse_label`), computes its SLIC map (`slic.slic_map`), PNG-encodes
and yields the examples: over a pool of spawned processes with a progress bar
(`num_workers`, default all cores; 1 = in-process; the result does not depend
on it), or as `beam.Create(items) | beam.Map(...)` when TFDS prepares with
Apache Beam (a `beam_runner` / `beam_options` in the DownloadConfig).

The builder config carries the coarse-annotation and SLIC parameters and the
dataset's PARAMS; its name is derived from them (`k25_s16_c10.0_g1.0_...`), so
changing any makes a new, separately cached dataset, and the name parses back
into the config, so `tfds.load("coarseseg_mine/<config name>", data_dir=...)`
works. Bad input raises `errors.DatasetError` naming the file; TFDS writes
into a temporary `*.incomplete*` directory, so nothing half-written looks
prepared.
"""

import dataclasses
import functools
import inspect
import io
import os
import re
from typing import (Any, Callable, Dict, List, NamedTuple, Optional,
                    Sequence, Tuple)

from absl import logging
from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from coarseseg_jax import errors
from coarseseg_jax.datasets import coarse
from coarseseg_jax.datasets import features
from coarseseg_jax.datasets import slic

IGNORE_INDEX = features.IGNORE_INDEX
CITATION = """@article{dejong2025coarse,
  title={Semantic segmentation with coarse annotations},
  author={de Jong, Jort and Holenderski, Mike},
  journal={arXiv preprint arXiv:2510.15756},
  year={2025}
}"""
_FIXED = ("coarse_kernel", "slic_block", "slic_compactness", "slic_sigma")
_NAME_RE = re.compile(
    r"^(?:(?P<tag>.+?)_)?k(?P<coarse_kernel>\d+)_s(?P<slic_block>\d+)"
    r"_c(?P<slic_compactness>[0-9.eE+-]+)_g(?P<slic_sigma>[0-9.eE+-]+)"
    r"(?P<rest>(?:_[A-Za-z][^_]*)*)$")


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


@dataclasses.dataclass(eq=False)
class CoarsesegConfig(tfds.core.BuilderConfig):
  """Builder config: coarse-label and SLIC parameters plus dataset params."""
  coarse_kernel: int = 25
  slic_block: int = 16
  slic_compactness: float = 10.0
  slic_sigma: float = 1.0
  params: Dict[str, Any] = dataclasses.field(default_factory=dict)
  tag: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class ProcessSpec:
  """What a worker needs to turn a loaded item into an example (picklable)."""
  num_classes: int
  coarse_kernel: int
  slic_block: int
  slic_compactness: float
  slic_sigma: float
  mask_coarse_conflicts: bool = True


# ------------------------------------------------------------ file reading --
def open_image(path: str, what: str = "image",
               mode: Optional[str] = None) -> Tuple[np.ndarray, str]:
  """(pixels, PIL mode) of an image file, converted to `mode` if given.

  Raises:
    errors.DatasetError: naming the file if it is missing or unreadable.
  """
  try:
    with Image.open(path) as im:
      im = im.convert(mode) if mode else im
      return np.asarray(im), im.mode
  except FileNotFoundError:
    raise errors.DatasetError(f"{path}: file not found.") from None
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise errors.DatasetError(
        f"{path}: cannot read the {what} ({e}).") from None


def read_image(path: str) -> np.ndarray:
  """Reads an image file as (H, W, 3) uint8 RGB; DatasetError if unreadable."""
  return open_image(path, "image", "RGB")[0].astype(np.uint8, copy=False)


def encode_png(array: np.ndarray) -> bytes:
  """PNG bytes of an (H, W), (H, W, 1) or (H, W, 3) uint8 array."""
  if array.ndim == 3 and array.shape[-1] == 1:
    array = array[..., 0]
  buf = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
  return buf.getvalue()


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
    bad = values[(values >= num_classes) & (values != IGNORE_INDEX)]
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
    label_coarse, conflicts = coarse.coarse_label(
        fine, spec.coarse_kernel, return_conflicts=True)
  else:
    label_coarse = np.asarray(loaded.label_coarse, dtype=np.uint8).reshape(
        image.shape[:2]).copy()
    clash = ((label_coarse != fine) & (label_coarse != IGNORE_INDEX)
             & (fine != IGNORE_INDEX))
    conflicts = int(np.count_nonzero(clash))
    if spec.mask_coarse_conflicts:
      label_coarse[clash] = IGNORE_INDEX
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
           "labelled": int(np.count_nonzero(label_coarse != IGNORE_INDEX))}
  return str(loaded.id), example, stats


def _key_example(loader, spec, item):
  key, example, _ = process_item(loader, spec, item)
  return key, example


# ----------------------------------------------------------------- builder --
def _format_value(value: Any) -> str:
  if isinstance(value, bool):
    return "1" if value else "0"
  if isinstance(value, float):
    return repr(value)
  return str(value)


def _cast(kind: type, value: Any) -> Any:
  if value is None:
    return None
  if kind is bool and isinstance(value, str):
    return value.lower() in ("1", "true", "yes")
  if kind is int and isinstance(value, float) and not value.is_integer():
    raise ValueError(f"{value} is not an integer")
  return kind(value)


class CoarsesegBuilder(tfds.core.GeneratorBasedBuilder,
                       skip_registration=True):
  """Base of the coarseseg datasets (see the module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  # Dataset-specific parameters: {name: (abbreviation, type, default)}. A
  # "num_classes" entry makes the number of classes a parameter.
  PARAMS: Dict[str, Tuple[str, type, Any]] = {}
  NUM_CLASSES: Optional[int] = None
  CLASS_NAMES: Optional[Tuple[str, ...]] = None
  NEEDS_MANUAL_DIR = False
  # Native coarse labels that contradict the fine label become 255.
  MASK_COARSE_CONFLICTS = True
  DESCRIPTION = ""
  HOMEPAGE = "https://arxiv.org/abs/2510.15756"

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    # TFDS's own lookup needs `importlib_resources` (not installed); the
    # file of the class is what it would find.
    return epath.Path(inspect.getfile(cls))

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    if "BUILDER_CONFIGS" not in cls.__dict__:
      cls.BUILDER_CONFIGS = [cls.make_config()]

  def __init__(self, *, num_workers: Optional[int] = None,
               manual_dir: Optional[str] = None,
               class_names: Optional[Sequence[str]] = None, **kwargs):
    self.num_workers = num_workers
    self.manual_dir = manual_dir
    self._class_names = tuple(class_names) if class_names else self.CLASS_NAMES
    self._use_beam = False
    self._executor = None
    self._stats: Dict[str, Dict[str, int]] = {}
    super().__init__(**kwargs)

  # -- configs -----------------------------------------------------------
  @classmethod
  def make_config(cls, *, coarse_kernel: int = 25, slic_block: int = 16,
                  slic_compactness: float = 10.0, slic_sigma: float = 1.0,
                  tag: Optional[str] = None, **params) -> CoarsesegConfig:
    """A config whose name encodes every parameter (so it parses back)."""
    unknown = sorted(set(params) - set(cls.PARAMS))
    if unknown:
      raise errors.ConfigError(
          f"builder parameter(s) {unknown} unknown to dataset {cls.name!r}; "
          f"known: {sorted(cls.PARAMS) or 'none'}.")
    values = {}
    for key, (_, kind, default) in cls.PARAMS.items():
      try:
        values[key] = _cast(kind, params.get(key, default))
      except (TypeError, ValueError):
        raise errors.ConfigError(
            f"builder parameter {key}={params[key]!r} of dataset {cls.name!r} "
            f"must be a {kind.__name__}.") from None
    cls.check_params(values)
    fixed = dict(coarse_kernel=int(coarse_kernel), slic_block=int(slic_block),
                 slic_compactness=float(slic_compactness),
                 slic_sigma=float(slic_sigma))
    if fixed["coarse_kernel"] < 1 or fixed["slic_block"] < 1:
      raise errors.ConfigError("coarse_kernel and slic_block must be >= 1.")
    if tag is not None:
      tag = re.sub(r"[^A-Za-z0-9.\-]+", "-", str(tag)).strip("-.") or None
    name = (f"k{fixed['coarse_kernel']}_s{fixed['slic_block']}_"
            f"c{fixed['slic_compactness']!r}_g{fixed['slic_sigma']!r}")
    for key, (abbrev, _, _) in cls.PARAMS.items():
      if values[key] is not None:
        name += f"_{abbrev}{_format_value(values[key])}"
    if tag:
      name = f"{tag}_{name}"
    return CoarsesegConfig(name=name, tag=tag, params=values,
                           description=cls.DESCRIPTION or None, **fixed)

  @classmethod
  def check_params(cls, params: Dict[str, Any]) -> None:
    """Raises ConfigError for invalid dataset params (override)."""

  @classmethod
  def parse_config_name(cls, name: str) -> CoarsesegConfig:
    """Inverse of `make_config(...).name`; ValueError if it does not parse."""
    match = _NAME_RE.match(name)
    if not match:
      raise ValueError(f"not a coarseseg config name: {name!r}")
    kwargs = {k: match.group(k) for k in _FIXED}
    by_abbrev = {abbrev: key for key, (abbrev, _, _) in cls.PARAMS.items()}
    for token in filter(None, match.group("rest").split("_")):
      abbrev = max((a for a in by_abbrev if token.startswith(a)), key=len,
                   default=None)
      if abbrev is None:
        raise ValueError(f"unknown parameter {token!r} in {name!r}")
      kwargs[by_abbrev[abbrev]] = token[len(abbrev):]
    try:
      config = cls.make_config(tag=match.group("tag"), **kwargs)
    except errors.ConfigError as e:
      raise ValueError(str(e)) from None
    if config.name != name:
      raise ValueError(f"{name!r} is not canonical (expected {config.name!r})")
    return config

  @classmethod
  def get_builder_config(cls, name, version=None):
    config = super().get_builder_config(name, version)
    if config is None:
      try:
        config = cls.parse_config_name(name)
      except ValueError:
        return None
    return config

  # -- what the datasets provide ------------------------------------------
  def _split_items(self, dl_manager) -> Dict[str, List[Any]]:
    """{split: [item, ...]}; items are picklable (paths, indices)."""
    raise NotImplementedError

  @staticmethod
  def load_item(item: Any) -> LoadedItem:
    """(id, image, label_fine, label_coarse or None[, files]) of one item."""
    raise NotImplementedError

  def _item_loader(self) -> Callable[[Any], Any]:
    """A picklable callable item -> LoadedItem (override to bind params)."""
    return type(self).load_item

  # -- properties -----------------------------------------------------------
  @property
  def num_classes(self) -> Optional[int]:
    n = self.builder_config.params.get("num_classes")
    return n if n is not None else self.NUM_CLASSES

  @property
  def class_names(self) -> Optional[Tuple[str, ...]]:
    metadata = self.info.metadata or {}
    names = metadata.get("class_names")
    return tuple(names) if names else self._class_names

  def manual_dir_or_error(self) -> str:
    """The raw-data directory; DatasetError if unset or missing."""
    path = self.manual_dir
    if not path:
      raise errors.DatasetError(
          f"dataset {self.name!r} needs its raw files: pass --manual_dir "
          "(config.data.manual_dir); data/README.md says where to get them.")
    if not os.path.isdir(path):
      raise errors.DatasetError(f"{path}: dataset directory not found.")
    return os.fspath(path)

  def process_spec(self) -> ProcessSpec:
    if self.num_classes is None:
      raise errors.DatasetError(
          f"dataset {self.name!r}: the number of classes is unknown; pass "
          "--num_classes (config.model.num_classes) or write classes.txt.")
    c = self.builder_config
    return ProcessSpec(self.num_classes, c.coarse_kernel, c.slic_block,
                       c.slic_compactness, c.slic_sigma,
                       self.MASK_COARSE_CONFLICTS)

  # -- TFDS hooks -------------------------------------------------------------
  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    metadata = tfds.core.MetadataDict(
        num_classes=self.num_classes,
        class_names=list(self._class_names) if self._class_names else None,
        coarse_kernel=c.coarse_kernel, slic_block=c.slic_block,
        slic_compactness=c.slic_compactness, slic_sigma=c.slic_sigma,
        params=dict(c.params))
    return tfds.core.DatasetInfo(
        builder=self, description=self.DESCRIPTION or self.__doc__,
        features=features.segmentation_features(), homepage=self.HOMEPAGE,
        citation=CITATION, metadata=metadata)

  def _generate_splits(self, dl_manager, download_config):
    self._use_beam = bool(download_config.beam_runner
                          or download_config.beam_options)
    return super()._generate_splits(dl_manager, download_config)

  def _download_and_prepare(self, dl_manager, download_config):
    self._stats = {}
    try:
      super()._download_and_prepare(dl_manager, download_config)
    finally:
      if self._executor is not None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._executor = None
    if self._stats:
      self.info.metadata["coarse_stats"] = self._stats

  def _split_generators(self, dl_manager):
    items = self._split_items(dl_manager)
    for split, split_items in items.items():
      if not split_items:
        raise errors.DatasetError(f"dataset {self.name!r}: split {split!r} "
                                  "has no items.")
    spec = self.process_spec()  # Checked before anything is written.
    return {split: self._generate_examples(split_items, split, spec)
            for split, split_items in items.items()}

  def _generate_examples(self, items, split, spec):
    loader = self._item_loader()
    if self._use_beam:
      beam = tfds.core.lazy_imports.apache_beam
      return beam.Create(list(items)) | beam.Map(
          functools.partial(_key_example, loader, spec))
    return self._iter_examples(loader, spec, list(items), split)

  def _iter_examples(self, loader, spec, items, split):
    workers = self.num_workers or slic.default_num_workers()
    n = min(workers, len(items))
    if n > 1 and self._executor is None:  # Shared by the splits.
      self._executor = slic.make_pool(workers)
    totals = {"pixels": 0, "labelled": 0, "conflicts": 0}
    fn = functools.partial(process_item, loader, spec)
    for key, example, stats in slic.parallel_map(
        fn, items, n, desc=f"{self.name} {split}",
        executor=self._executor if n > 1 else None):
      for k in totals:
        totals[k] += stats[k]
      yield key, example
    self._stats[split] = totals
    logging.info(
        "%s %s: %d images, coarse labels cover %.1f%% of pixels; %d polygon "
        "pixels that contradicted the fine label were set to 255.",
        self.name, split, len(items),
        100.0 * totals["labelled"] / max(totals["pixels"], 1),
        totals["conflicts"])
