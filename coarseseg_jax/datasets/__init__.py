"""Datasets as TFDS builders: registry, builder construction, preparation.

Every dataset is a `tfds.core.GeneratorBasedBuilder` (see `base.py`) whose
examples hold `image`, `label_fine`, `label_coarse`, `slic` and `id`
(`features.py`). From a config (`config.data`, see configs/default.py):

  builder = datasets.prepare(config.data, config.model.num_classes)
  ds = builder.as_dataset(split="train")

or, once prepared, `tfds.load("coarseseg_synthetic/<config name>",
data_dir=...)` (the config name encodes the coarse/SLIC/dataset parameters;
`builder.info.full_name` gives it).

Names in `DATASETS` are the config's `data.dataset`; their TFDS names carry a
`coarseseg_` prefix so they never clash with TFDS's own datasets. Add a
dataset with one line: `DATASETS["name"] = "module.path:ClassName"`.
"""

import importlib
import os
from typing import Any, Mapping, Optional, Tuple

from etils import epath
import tensorflow_datasets as tfds

from coarseseg_jax import errors

DATASETS = {
    "synthetic": "coarseseg_jax.datasets.synthetic:Synthetic",
    "texture_mosaic": "coarseseg_jax.datasets.texture_mosaic:TextureMosaic",
    "folder": "coarseseg_jax.datasets.folder:Folder",
    # The paper's datasets (modules of their own issue).
    "suim": "coarseseg_jax.datasets.suim:Suim",
    "pannuke": "coarseseg_jax.datasets.pannuke:PanNuke",
    "cityscapes_coarse": "coarseseg_jax.datasets.cityscapes:CityscapesCoarse",
}
# The builder-config fields of `config.data` (how coarse labels and SLIC maps
# are made; changing one prepares a new version) and their defaults, which
# configs/default.py repeats (tests/test_datasets.py checks that they agree).
# A data config without one (a config.json older than the key) takes it.
BUILDER_DEFAULTS = {"coarse_kernel": 25, "coarse_style": "erosion",
                    "slic_block": 16, "slic_compactness": 10.0,
                    "slic_sigma": 1.0}
DEFAULT_DATA_DIR = "data"  # configs/default.py's data.data_dir.


def builder_class(name: str):
  """The builder class of a registered dataset name (ConfigError if none)."""
  if name not in DATASETS:
    raise errors.ConfigError(
        f"dataset {name!r} is unknown; choose one of {sorted(DATASETS)}.")
  module, cls = DATASETS[name].split(":")
  try:
    return getattr(importlib.import_module(module), cls)
  except ModuleNotFoundError as e:
    if e.name != module:
      raise
    raise errors.ConfigError(
        f"dataset {name!r} is not available in this version ({module} is "
        "missing).") from None


def needs_manual_dir(name: str) -> bool:
  """Whether preparing `name` needs raw files in `manual_dir`."""
  return bool(builder_class(name).NEEDS_MANUAL_DIR)


def _get(config: Any, key: str, default: Any = None) -> Any:
  if isinstance(config, Mapping):
    return config.get(key, default)
  return getattr(config, key, default)


def _kwargs(data_config) -> dict:
  kwargs = _get(data_config, "builder_kwargs") or {}
  if hasattr(kwargs, "to_dict"):
    kwargs = kwargs.to_dict()
  return dict(kwargs)


def data_dir_of(data_config) -> str:
  """The data dir, absolute (URLs such as gs://... are left as they are)."""
  path = os.fspath(_get(data_config, "data_dir") or "data")
  return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def _find_prepared_folder(cls, data_dir: str, suffix: str) -> str:
  """The newest prepared folder config named `<tag>_<suffix>` in data_dir."""
  root = epath.Path(data_dir) / cls.name
  found = []
  if root.is_dir():
    for config_dir in root.iterdir():
      info = config_dir / str(cls.VERSION) / "dataset_info.json"
      if (config_dir.name.endswith("_" + suffix)
          and config_dir.name != suffix and info.is_file()):
        found.append((info.stat().mtime, config_dir.name))
  if not found:
    raise errors.DatasetError(
        f"config.data.manual_dir is not set and {root} holds no prepared "
        f"folder dataset with parameters {suffix}; pass --manual_dir.")
  return max(found)[1]


def get_builder(data_config, num_classes: Optional[int] = None, *,
                num_workers: Optional[int] = None
                ) -> tfds.core.DatasetBuilder:
  """The TFDS builder for `config.data` (not prepared by this call).

  Args:
    data_config: `config.data` (dataset, data_dir, manual_dir, coarse_kernel,
      coarse_style, slic_block, slic_compactness, slic_sigma, builder_kwargs).
    num_classes: used by datasets whose number of classes comes from the
      config (`folder` without classes.txt). Others know theirs; compare with
      `num_classes(builder)`.
    num_workers: processes for preparation (default all cores, 1 = none).
  """
  name = _get(data_config, "dataset") or "synthetic"
  cls = builder_class(name)
  data_dir = data_dir_of(data_config)
  manual_dir = _get(data_config, "manual_dir")
  fixed = {k: _get(data_config, k, v) for k, v in BUILDER_DEFAULTS.items()}
  kwargs = _kwargs(data_config)
  class_names = None
  if hasattr(cls, "config_for_dir"):  # Number of classes from the config.
    n = kwargs.pop("num_classes", None) or num_classes
    if manual_dir:
      config, class_names = cls.config_for_dir(manual_dir, n, **fixed,
                                               **kwargs)
      config = config.name
    else:
      suffix = cls.make_config(num_classes=n, **fixed, **kwargs).name
      config = _find_prepared_folder(cls, data_dir, suffix)
  else:
    config = cls.make_config(**fixed, **kwargs).name
  return cls(config=config, data_dir=data_dir, manual_dir=manual_dir,
             num_workers=num_workers, class_names=class_names)


def is_prepared(data_config, num_classes: Optional[int] = None) -> bool:
  """Whether `config.data`'s dataset is already prepared in its data_dir."""
  try:
    return get_builder(data_config, num_classes).is_prepared()
  except errors.DatasetError:
    return False


def prepare(data_config, num_classes: Optional[int] = None,
            num_workers: Optional[int] = None) -> tfds.core.DatasetBuilder:
  """Prepares the dataset unless it is already; returns its builder.

  Raises:
    errors.DatasetError: bad or missing input, naming the file; nothing
      half-written is left that looks prepared.
  """
  return prepare_builder(
      get_builder(data_config, num_classes, num_workers=num_workers))


def prepare_builder(builder: tfds.core.DatasetBuilder
                    ) -> tfds.core.DatasetBuilder:
  """Prepares a `get_builder` builder unless it is already; returns it.

  Raises:
    errors.DatasetError: it is not prepared and needs raw files that no
      `manual_dir` names (the message gives the command that prepares it).
  """
  if not builder.is_prepared():
    manual_dir = builder.manual_dir
    if builder.NEEDS_MANUAL_DIR and not manual_dir:
      raise errors.DatasetError(
          f"{builder.name} is not prepared in {builder.data_dir} and no "
          "manual_dir names its raw files (data/README.md says where to get "
          "them): pass --config.data.manual_dir=PATH, or prepare it first "
          "with python -m coarseseg_jax.datasets.prepare --config=CONFIG "
          "--config.data.manual_dir=PATH (flag by flag: --manual_dir=PATH).")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=os.path.abspath(manual_dir) if manual_dir else None))
  return builder


def prepare_on_hosts(builder: tfds.core.DatasetBuilder, data_config,
                     num_classes: Optional[int] = None
                     ) -> tfds.core.DatasetBuilder:
  """Prepares the dataset as a run does: process 0 prepares it (unless it is
  already), the other hosts wait for it; returns a builder of the prepared
  dataset (a new one where `builder` was made before the dataset was there:
  on the other hosts, or when another run prepared it since). `data_config`
  and `num_classes` are what made `builder`."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    prepare_builder(builder)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("coarseseg_dataset_prepared")
  if not list(builder.info.splits):  # Its info predates the prepared copy.
    builder = get_builder(data_config, num_classes)
  return builder


def num_classes(builder) -> Optional[int]:
  """The number of classes of a builder (None if it does not say)."""
  n = getattr(builder, "num_classes", None)
  if n is None and builder.info.metadata:
    n = builder.info.metadata.get("num_classes")
  return n


def class_names(builder) -> Optional[Tuple[str, ...]]:
  """Class names of a builder, if it has them."""
  names = getattr(builder, "class_names", None)
  if names is None and builder.info.metadata:
    names = builder.info.metadata.get("class_names")
  return tuple(names) if names else None
