r"""Prepares a dataset as TFRecord shards (TFDS), ready for training.

  python -m coarseseg_jax.datasets.prepare --config=configs/suim.py \
      --config.data.manual_dir=data/manual/suim
  python -m coarseseg_jax.datasets.prepare --dataset=synthetic --data_dir=data
  python -m coarseseg_jax.datasets.prepare --dataset=folder \
      --manual_dir=/path/to/mydata --num_classes=5 --data_dir=data
  python -m coarseseg_jax.datasets.prepare --dataset=synthetic \
      --builder_kwargs=num_train=40,image_size=128 --coarse_kernel=15
  python -m coarseseg_jax.datasets.prepare --dataset=texture_mosaic \
      --coarse_style=annotator
  python -m coarseseg_jax.datasets.prepare --dataset=suim \
      --manual_dir=data/manual/suim --builder_kwargs=resize=0.5 \
      --on_size_mismatch=resize
  python -m coarseseg_jax.datasets.prepare --dataset=cityscapes_coarse \
      --manual_dir=gs://bucket/cityscapes --data_dir=gs://bucket/data \
      --beam_pipeline_options=runner=DataflowRunner,project=P,region=R,...

With `--config` (a config file or a shipped config's name, and any
`--config.*` overrides) it prepares exactly the dataset that config trains
and evaluates on (`config.data`, as `coarseseg_jax.main` reads it); the other
dataset flags then do not apply. Without it, the flags give the dataset.
Already-prepared datasets are left as they are. Bad input stops with one
line `error: ...` naming the file (exit status 1); nothing half-written is
left that looks prepared, so running it again after a fix starts cleanly.
The last line printed on success tells how to load the dataset with
`tfds.load`.
"""

import ast
import os
import time

from absl import app
from absl import flags
from ml_collections import config_flags
import tensorflow_datasets as tfds

from coarseseg_jax import cli
from coarseseg_jax import datasets
from coarseseg_jax import errors

# Defaults: the builders' (which configs/default.py's `config.data` repeats).
_D = datasets.BUILDER_DEFAULTS
# The function, bound now: once this module is imported (rather than run with
# -m), Python makes `datasets.prepare` the module.
_prepare = datasets.prepare
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A config file (configs/*.py) or a shipped config's name: "
    "prepare the dataset it reads (with its --config.data.* overrides).",
    lock_config=True)
_DATASET = flags.DEFINE_string(
    "dataset", "synthetic",
    "synthetic | texture_mosaic | folder | suim | pannuke | "
    "cityscapes_coarse.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", datasets.DEFAULT_DATA_DIR,
    "TFDS data dir where the prepared dataset goes.")
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None, "Raw files (the folder of `folder`, downloads of the "
    "paper datasets; see data/README.md).")
_NUM_CLASSES = flags.DEFINE_integer(
    "num_classes", None, "Number of classes (folder without classes.txt; "
    "synthetic: how many to generate; others: checked).")
_COARSE_KERNEL = flags.DEFINE_integer(
    "coarse_kernel", _D["coarse_kernel"],
    "Erosion kernel (px) of generated coarse labels.")
_COARSE_STYLE = flags.DEFINE_enum(
    "coarse_style", _D["coarse_style"], ["erosion", "annotator"],
    "How coarse labels are generated: erosion (the paper's) or annotator "
    "(uneven polygons, scribbles, small regions skipped).")
_SLIC_BLOCK = flags.DEFINE_integer(
    "slic_block", _D["slic_block"], "One SLIC segment per slic_block^2 pixels.")
_SLIC_COMPACTNESS = flags.DEFINE_float(
    "slic_compactness", _D["slic_compactness"], "SLIC compactness.")
_SLIC_SIGMA = flags.DEFINE_float("slic_sigma", _D["slic_sigma"],
                                 "SLIC smoothing sigma.")
_NUM_WORKERS = flags.DEFINE_integer(
    "num_workers", None, "Worker processes (default: all cores; 1 = none).")
_BUILDER_KWARGS = flags.DEFINE_string(
    "builder_kwargs", "", "Dataset parameters as key=value,key=value, e.g. "
    "num_train=40,image_size=128 (synthetic).")
_ON_SIZE_MISMATCH = flags.DEFINE_enum(
    "on_size_mismatch", None, ["resize", "crop", "skip", "error"],
    "suim: what to do with a mask whose size differs from its image "
    "(default resize; same as --builder_kwargs=on_size_mismatch=...).")
_BEAM_PIPELINE_OPTIONS = flags.DEFINE_string(
    "beam_pipeline_options", None, "Prepare with Apache Beam (pip install "
    ".[beam]): pipeline options as key=value,key=value, e.g. "
    "runner=DirectRunner,direct_num_workers=4 or runner=DataflowRunner,"
    "project=P,region=R,temp_location=gs://... (see data/README.md).")


def parse_kwargs(text: str) -> dict:
  """'a=1,b=0.5,c=x' -> {'a': 1, 'b': 0.5, 'c': 'x'}."""
  out = {}
  for part in filter(None, (p.strip() for p in text.split(","))):
    if "=" not in part:
      raise errors.ConfigError(
          f"--builder_kwargs: {part!r} is not key=value.")
    key, value = (s.strip() for s in part.split("=", 1))
    try:
      out[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key] = value
  return out


def data_config_from_flags():
  """The `config.data` fields that the flags set."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict({
      "dataset": _DATASET.value,
      "data_dir": _DATA_DIR.value,
      "manual_dir": _MANUAL_DIR.value,
      "coarse_kernel": _COARSE_KERNEL.value,
      "coarse_style": _COARSE_STYLE.value,
      "slic_block": _SLIC_BLOCK.value,
      "slic_compactness": _SLIC_COMPACTNESS.value,
      "slic_sigma": _SLIC_SIGMA.value,
      "builder_kwargs": dict(
          parse_kwargs(_BUILDER_KWARGS.value),
          **({"on_size_mismatch": _ON_SIZE_MISMATCH.value}
             if _ON_SIZE_MISMATCH.value else {})),
  })


# The flags that `--config` replaces (its config.data gives them).
_DATA_FLAGS = ("dataset", "data_dir", "manual_dir", "num_classes",
               "coarse_kernel", "slic_block", "slic_compactness",
               "slic_sigma", "builder_kwargs", "on_size_mismatch")


def _config_flag_conflicts() -> list:
  """The dataset flags given beside `--config` (which gives the dataset)."""
  return [f"--{n}" for n in _DATA_FLAGS if flags.FLAGS[n].present]


def beam_options(text: str):
  """'runner=DirectRunner,a=b' -> Beam PipelineOptions(['--runner=...'])."""
  try:
    # pylint: disable-next=g-import-not-at-top
    from apache_beam.options import pipeline_options
  except ImportError:
    raise errors.ConfigError(
        "--beam_pipeline_options needs Apache Beam: pip install "
        "'coarseseg_jax[beam]' (or apache-beam).") from None
  args = [f"--{p.strip().lstrip('-')}" for p in text.split(",") if p.strip()]
  return pipeline_options.PipelineOptions(args)


def run(data_config, num_classes, num_workers, beam_pipeline_options=None,
        *, from_config: bool = False) -> str:
  """Prepares; returns a summary. Raises errors.Error on bad input.

  `from_config`: `data_config` is a run's `config.data` and `num_classes`
  its `config.model.num_classes`, used as the run uses them (the builder
  of `datasets.get_builder(config.data, config.model.num_classes)`);
  otherwise `num_classes` is the `--num_classes` flag, which also sets a
  dataset's `num_classes` parameter.
  """
  cls = datasets.builder_class(data_config.dataset)
  if (not from_config and num_classes is not None
      and "num_classes" in cls.PARAMS):
    data_config.builder_kwargs["num_classes"] = num_classes
  tic = time.time()
  builder = datasets.get_builder(data_config, num_classes,
                                 num_workers=num_workers)
  n = datasets.num_classes(builder)
  if num_classes is not None and n is not None and n != num_classes:
    raise errors.DatasetError(
        f"dataset {data_config.dataset!r} has {n} classes, not "
        + (f"config.model.num_classes={num_classes}: set "
           f"--config.model.num_classes={n} (or leave it unset)."
           if from_config else f"--num_classes={num_classes}."))
  done = builder.is_prepared()
  if not done and beam_pipeline_options is not None:
    manual_dir = data_config.manual_dir
    if manual_dir and "://" not in manual_dir:
      manual_dir = os.path.abspath(manual_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir,
        beam_options=beam_options(beam_pipeline_options)))
  elif not done:
    builder = _prepare(data_config, num_classes, num_workers)
  splits = ", ".join(f"{k} {v.num_examples}"
                     for k, v in builder.info.splits.items())
  name = builder.info.full_name.rsplit("/", 1)[0]
  what = "already prepared" if done else (
      f"prepared in {time.time() - tic:.1f} s")
  cover = (builder.info.metadata or {}).get("coarse_stats", {}).get("train")
  cover = (f", coarse labels cover {100 * cover['labelled'] / cover['pixels']:.1f}"
           "% of train pixels" if cover else "")
  sizes = (builder.info.metadata or {}).get("size_mismatches") or {}
  if sizes.get("count"):
    cover += (f"; {sizes['count']} masks differed in size from their image "
              f"(on_size_mismatch={sizes['on_size_mismatch']}; named in the "
              "warnings and in metadata.json)")
  return (f"{name} {what}: {splits} examples, "
          f"{datasets.num_classes(builder)} classes{cover}, in "
          f"{builder.data_dir}\nload with: tfds.load({name!r}, "
          f"data_dir={datasets.data_dir_of(data_config)!r})")


def main() -> None:
  config = _CONFIG.value
  if config is None:
    print(run(data_config_from_flags(), _NUM_CLASSES.value, _NUM_WORKERS.value,
              _BEAM_PIPELINE_OPTIONS.value))
    return
  conflicts = _config_flag_conflicts()
  if conflicts:
    raise app.UsageError(
        f"{', '.join(conflicts)}: --config gives the dataset; pass its "
        "settings as --config.data.* overrides instead (e.g. "
        "--config.data.manual_dir=PATH).")
  # The entry point's one check, as `main` makes it for a run on a split.
  from coarseseg_jax import config_validation  # pylint: disable=g-import-not-at-top
  config = config_validation.resolve(config, "split").config
  print(run(config.data, config.model.num_classes, _NUM_WORKERS.value,
            _BEAM_PIPELINE_OPTIONS.value, from_config=True))


if __name__ == "__main__":
  cli.run(main, on_ctrl_c="error: interrupted; nothing was kept, run again "
          "to start over.")
