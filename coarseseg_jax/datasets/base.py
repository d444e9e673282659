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

The base, with the per-item functions of `items.py`, validates every item
(image RGB uint8, labels of the same size, label values in 0..C-1 or 255),
generates coarse labels when the item has none (`coarse.coarse_label`, or
`annotator.annotator_label` with coarse_style `annotator`),
computes its SLIC map (`slic.slic_map`), PNG-encodes and yields the
examples: over a pool of spawned processes with a progress bar (`num_workers`,
default all cores; 1 = in-process; the result does not depend on it), or
as a Beam pipeline (`beam.Create(items) | beam.Reshuffle() | beam.Map(...)`)
when TFDS prepares with Apache Beam (a `beam_runner` / `beam_options` in the
DownloadConfig): same examples, and the same `coarse_stats` metadata,
gathered from Beam counters.

The builder config carries the coarse-annotation and SLIC parameters and the
dataset's PARAMS; its name is derived from them (`k25_s16_c10.0_g1.0_...`;
`k25-annotator_s16_...` with the annotator coarse style), so
changing any makes a new, separately cached dataset, and the name parses back
into the config, so `tfds.load("coarseseg_mine/<config name>", data_dir=...)`
works. Bad input raises `errors.DatasetError` naming the file; TFDS writes
into a temporary `*.incomplete*` directory, so nothing half-written looks
prepared.
"""

import dataclasses
import functools
import inspect
import os
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from absl import logging
from etils import epath
import tensorflow_datasets as tfds

from coarseseg_jax import datasets
from coarseseg_jax import errors
from coarseseg_jax.datasets import annotator
from coarseseg_jax.datasets import features
from coarseseg_jax.datasets import items as items_lib
from coarseseg_jax.datasets import slic
# Per-item functions live in items.py; these names are kept for subclasses.
from coarseseg_jax.datasets.items import (  # pylint: disable=unused-import
    ItemFiles, LoadedItem, ProcessSpec, encode_png, open_image, process_item,
    read_image, validate_item)

_DEFAULTS = datasets.BUILDER_DEFAULTS  # Coarse kernel and style, SLIC.
CITATION = """@article{dejong2025coarse,
  title={Semantic segmentation with coarse annotations},
  author={de Jong, Jort and Holenderski, Mike},
  journal={arXiv preprint arXiv:2510.15756},
  year={2025}
}"""
_FIXED = ("coarse_kernel", "slic_block", "slic_compactness", "slic_sigma")
_NAME_RE = re.compile(
    r"^(?:(?P<tag>.+?)_)?k(?P<coarse_kernel>\d+)(?:-(?P<coarse_style>[a-z]+))?"
    r"_s(?P<slic_block>\d+)"
    r"_c(?P<slic_compactness>[0-9.eE+-]+)_g(?P<slic_sigma>[0-9.eE+-]+)"
    r"(?P<rest>(?:_[A-Za-z][^_]*)*)$")


@dataclasses.dataclass(eq=False)
class CoarsesegConfig(tfds.core.BuilderConfig):
  """Builder config: coarse-label and SLIC parameters plus dataset params."""
  coarse_kernel: int = 25
  coarse_style: str = "erosion"
  slic_block: int = 16
  slic_compactness: float = 10.0
  slic_sigma: float = 1.0
  params: Dict[str, Any] = dataclasses.field(default_factory=dict)
  tag: Optional[str] = None


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

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release.",
      "1.1.0": "Generated coarse labels: even erosion kernels erode the "
               "extra pixel on the top/left, as OpenCV (the authors' code).",
  }
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
  def make_config(cls, *, coarse_kernel: int = _DEFAULTS["coarse_kernel"],
                  slic_block: int = _DEFAULTS["slic_block"],
                  slic_compactness: float = _DEFAULTS["slic_compactness"],
                  slic_sigma: float = _DEFAULTS["slic_sigma"],
                  coarse_style: str = _DEFAULTS["coarse_style"],
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
    coarse_style = coarse_style or annotator.STYLES[0]
    if coarse_style not in annotator.STYLES:
      raise errors.ConfigError(
          f"coarse_style={coarse_style!r} is unknown; use one of "
          f"{', '.join(annotator.STYLES)}.")
    if tag is not None:
      tag = re.sub(r"[^A-Za-z0-9.\-]+", "-", str(tag)).strip("-.") or None
    style = "" if coarse_style == annotator.STYLES[0] else f"-{coarse_style}"
    name = (f"k{fixed['coarse_kernel']}{style}_s{fixed['slic_block']}_"
            f"c{fixed['slic_compactness']!r}_g{fixed['slic_sigma']!r}")
    for key, (abbrev, _, _) in cls.PARAMS.items():
      if values[key] is not None:
        name += f"_{abbrev}{_format_value(values[key])}"
    if tag:
      name = f"{tag}_{name}"
    return CoarsesegConfig(name=name, tag=tag, params=values,
                           coarse_style=coarse_style,
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
    kwargs["coarse_style"] = match.group("coarse_style")
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
    path = os.fspath(path)
    if not items_lib.is_dir(path):  # Local, or a URL (gs://) for Beam.
      raise errors.DatasetError(f"{path}: dataset directory not found.")
    return path

  def process_spec(self) -> ProcessSpec:
    if self.num_classes is None:
      raise errors.DatasetError(
          f"dataset {self.name!r}: the number of classes is unknown; pass "
          "--num_classes (config.model.num_classes) or write classes.txt.")
    c = self.builder_config
    return ProcessSpec(self.num_classes, c.coarse_kernel, c.slic_block,
                       c.slic_compactness, c.slic_sigma,
                       self.MASK_COARSE_CONFLICTS, c.coarse_style)

  # -- TFDS hooks -------------------------------------------------------------
  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    metadata = tfds.core.MetadataDict(
        num_classes=self.num_classes,
        class_names=list(self._class_names) if self._class_names else None,
        coarse_kernel=c.coarse_kernel, coarse_style=c.coarse_style,
        slic_block=c.slic_block,
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
      # The items (paths) go into the pipeline; Reshuffle spreads them over
      # the workers, which load and process them. TFDS then sorts examples
      # by hashed key, as in the plain build, so the output is the same.
      beam = tfds.core.lazy_imports.apache_beam
      return (beam.Create(list(items)) | "Reshuffle" >> beam.Reshuffle()
              | "Process" >> beam.Map(items_lib.beam_process_item, loader,
                                      spec, split))
    return self._iter_examples(loader, spec, list(items), split)

  def _process_pipeline_result(self, pipeline_result):
    """Coarse-label stats of a Beam build, from the workers' counters."""
    # pylint: disable-next=g-import-not-at-top
    from apache_beam.metrics import metric
    try:
      found = pipeline_result.metrics().query(
          metric.MetricsFilter().with_namespace(items_lib.BEAM_NAMESPACE))
    except (NotImplementedError, AttributeError) as e:  # Some runners.
      logging.warning("%s: no Beam metrics (%s); coarse_stats not recorded.",
                      self.name, e)
      return
    for counter in found["counters"]:
      split, stat = counter.key.metric.name.rsplit("/", 1)
      value = counter.committed
      if value is None:
        value = counter.attempted
      totals = self._stats.setdefault(
          split, {k: 0 for k in items_lib.STAT_KEYS})
      totals[stat] += int(value)

  def _iter_examples(self, loader, spec, items, split):
    workers = self.num_workers or slic.default_num_workers()
    n = min(workers, len(items))
    if n > 1 and self._executor is None:  # Shared by the splits.
      self._executor = slic.make_pool(workers)
    totals = {k: 0 for k in items_lib.STAT_KEYS}
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
