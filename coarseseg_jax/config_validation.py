"""The config, checked and completed once, before anything is compiled, read
or written.

Every entry point (`main`'s modes, the experiments, `datasets.prepare`,
`refine.figures`, `quickstart`) calls `resolve` once per run; what runs below it takes the `Resolved` it returns
and neither checks the config again nor changes it. Each problem raises
`ConfigError` with one message saying which config value is wrong and what
would be right; the entry points print it without a traceback. `resolve`
works on a copy: it completes `config.model.num_classes` when it is None
(the dataset's number: its builder parameters, or a folder's classes.txt)
and, for training, `config.data.refined_from` (the source of refined
training labels, from their refine report) and `refined_fill` (`best_free`
becomes the free fill the report ranks first). `check_dataset` checks the
config against the prepared dataset, once it is prepared.
"""

import copy
import dataclasses
from typing import Any

import jax
import ml_collections

from coarseseg_jax import datasets
from coarseseg_jax import errors
from coarseseg_jax import evaluate
from coarseseg_jax import finetune
from coarseseg_jax import input_pipeline
from coarseseg_jax import losses
from coarseseg_jax import models
from coarseseg_jax import refine
from coarseseg_jax import state
from coarseseg_jax.datasets import annotator
from coarseseg_jax.datasets import refined
from coarseseg_jax.errors import ConfigError
from coarseseg_jax.refine import scores

TRAIN_LABELS = ("coarse", "fine", "slic_propagated", "refined")
# Models whose decoder produces superpixel assignments (needed by lmbda/kappa).
SUPERPIXEL_MODELS = ("hcfcn",)
# Selection metrics that coarse validation labels can score (no boundaries).
COARSE_SELECTABLE = tuple(m for m in evaluate.SELECTABLE
                          if "boundary" not in m)
# data.refined_fill: the free fill (no model) the refine report's coarse-only
# scores rank first, resolved to its name.
BEST_FREE = "best_free"


# What a run reads (`resolve`'s `use`): "train" the dataset and (with
# train_labels='refined') its refined labels; "split" a prepared split (eval,
# refine of a split, prepare); "images" no dataset (predict, refine of a
# folder, summary): a dataset that is not there is no error.
USES = ("train", "split", "images")


@dataclasses.dataclass(frozen=True)
class Resolved:
  """A config checked and completed by `resolve`, and what the run needs."""
  config: ml_collections.ConfigDict  # A completed copy (locked: no new keys).
  builder: Any  # The dataset's TFDS builder, not prepared; None if "images"
  #               and there is no dataset to build.

  @property
  def num_classes(self) -> int:
    return int(self.config.model.num_classes)


def resolve(config: ml_collections.ConfigDict, use: str = "train"
            ) -> Resolved:
  """The one check of a config at an entry point (see the module docstring).

  Args:
    config: as given (a config file with overrides, or a workdir's
      config.json); not changed.
    use: what the run reads, one of `USES`.

  Returns:
    `Resolved`: a completed copy of `config` and the dataset's builder.

  Raises:
    ConfigError: the first invalid value, in one line.
  """
  if use not in USES:
    raise ValueError(f"use={use!r}: one of {USES}.")
  config = copy.deepcopy(config)
  builder = _complete(config, use)
  config.lock()
  return Resolved(config, builder)


def _complete(config: ml_collections.ConfigDict, use: str):
  """Checks `config` and completes it in place; returns the builder."""
  d, m, t = config.data, config.model, config.train
  check_sizes(config, jax.device_count(),
              ("train.batch_size", "data.eval_batch_size") if use == "train"
              else ("data.eval_batch_size",))
  if d.train_labels not in TRAIN_LABELS:
    raise ConfigError(
        f"config.data.train_labels={d.train_labels!r}: use one of "
        f"{', '.join(TRAIN_LABELS)}.")
  if use == "train":  # Only training reads them; the others keep the record.
    _resolve_refined(d)
  if d.coarse_style not in annotator.STYLES:
    raise ConfigError(
        f"config.data.coarse_style={d.coarse_style!r}: use one of "
        f"{', '.join(annotator.STYLES)}.")
  if d.dataset not in datasets.DATASETS:
    raise ConfigError(
        f"config.data.dataset={d.dataset!r} is unknown; choose one of "
        f"{sorted(datasets.DATASETS)}.")
  try:
    builder = datasets.get_builder(d, m.num_classes)
  except errors.DatasetError:
    builder = None  # A folder dataset with no prepared copy and no files.
  if (use != "images" and datasets.needs_manual_dir(d.dataset)
      and not d.manual_dir and (builder is None or not builder.is_prepared())):
    raise ConfigError(
        f"dataset {d.dataset!r} is not prepared in {d.data_dir!r} and "
        "config.data.manual_dir is not set: download it (see data/README.md) "
        "and pass --config.data.manual_dir=PATH.")
  _resolve_num_classes(config, builder)
  if m.num_classes < 2:
    raise ConfigError(f"config.model.num_classes={m.num_classes} must be >= 2.")
  try:
    models.create_model(m)
  except ValueError as e:
    raise ConfigError(f"config.model: {e}") from None
  if (t.lmbda or t.kappa) and m.name not in SUPERPIXEL_MODELS:
    raise ConfigError(
        f"config.train.lmbda={t.lmbda} / kappa={t.kappa} need a model with "
        f"superpixel upsampling ({', '.join(SUPERPIXEL_MODELS)}), not "
        f"{m.name!r}; set them to 0 for this model.")
  if t.lmbda < 0 or t.kappa < 0 or t.m < 0:
    raise ConfigError("config.train.lmbda, m and kappa must be >= 0.")
  if t.num_epochs < 1:
    raise ConfigError(f"config.train.num_epochs={t.num_epochs} must be >= 1.")
  _validate_training_options(config)
  if t.select_metric not in evaluate.SELECTABLE:
    raise ConfigError(
        f"config.train.select_metric={t.select_metric!r} is not a "
        f"validation metric ({', '.join(evaluate.SELECTABLE)}).")
  labels = d.validation_labels
  if labels not in ("fine", "coarse"):
    raise ConfigError(f"config.data.validation_labels={labels!r}: use 'fine' "
                      "or 'coarse'.")
  if labels == "coarse" and t.select_metric not in COARSE_SELECTABLE:
    raise ConfigError(
        f"config.train.select_metric={t.select_metric!r} needs fine "
        "validation labels (coarse labels have no class boundaries); use "
        f"{' or '.join(COARSE_SELECTABLE)}, or data.validation_labels='fine'.")
  return builder


def check_sizes(config: ml_collections.ConfigDict, num_devices: int,
                batches=("train.batch_size", "data.eval_batch_size")) -> None:
  """Crop sizes that the models' output stride (16) divides; `batches`
  (dotted keys) that divide over `num_devices` (sharded over all)."""
  d = config.data
  if d.crop_size <= 0 or d.crop_size % 16:
    raise ConfigError(
        f"config.data.crop_size={d.crop_size} must be a positive multiple of "
        "16 (the models' output stride).")
  if d.eval_center_crop and d.eval_center_crop % 16:
    raise ConfigError(
        f"config.data.eval_center_crop={d.eval_center_crop} must be a "
        "multiple of 16.")
  for name in batches:
    section, key = name.split(".")
    size = config[section][key]
    if size < 1 or size % num_devices:
      raise ConfigError(
          f"config.{name}={size} must be a positive multiple of the number "
          f"of devices ({num_devices}); batches are sharded over all "
          "devices.")


def _validate_training_options(config) -> None:
  t, n = config.train, config.model.num_classes
  if t.lr_schedule not in state.LR_SCHEDULES:
    raise ConfigError(f"config.train.lr_schedule={t.lr_schedule!r}: use one "
                      f"of {', '.join(state.LR_SCHEDULES)}.")
  if t.warmup_steps < 0:
    raise ConfigError("config.train.warmup_steps must be >= 0.")
  if t.grad_clip_norm is not None and not t.grad_clip_norm > 0:
    raise ConfigError(f"config.train.grad_clip_norm={t.grad_clip_norm} must "
                      "be > 0 (or unset).")
  weights = t.class_weights
  if weights is not None and (len(weights) != n or min(weights) < 0
                              or not sum(weights) > 0):
    raise ConfigError(
        f"config.train.class_weights has {len(weights)} values; give "
        f"{n} (one per class), all >= 0, not all 0.")
  if t.profile_steps < 0:
    raise ConfigError("config.train.profile_steps must be >= 0.")
  for key, valid in (("slic_resize", losses.SLIC_RESIZES),
                     ("slic_position_norm", losses.SLIC_POSITION_NORMS),
                     ("validation_mode", ("eval", "train")),
                     ("finetune_rule", finetune.RULES)):
    if t[key] not in valid:
      raise ConfigError(f"config.train.{key}={t[key]!r}: use one of "
                        f"{', '.join(valid)}.")
  labels = config.data.train_labels
  if t.finetune and t.finetune_rule == "authors" and labels not in (
      "coarse", "fine"):
    raise ConfigError(
        f"config.train.finetune_rule='authors' measures the loss on the "
        f"train split's coarse or fine labels, not train_labels={labels!r}; "
        "use finetune_rule='project'.")
  m = config.model
  if m.pretrained_format not in models.PRETRAINED_FORMATS:
    raise ConfigError(
        f"config.model.pretrained_format={m.pretrained_format!r}: use one of "
        f"{', '.join(models.PRETRAINED_FORMATS)}.")


def _resolve_refined(d) -> None:
  """Checks `data.refined_dir` against `train_labels` (`d` = config.data);
  sets `refined_from` from the refine report, what config.json records of
  the labels' source (ConfigError if the report is missing)."""
  if d.train_labels != "refined":
    for key in ("refined_dir", "refined_fill"):
      if d[key]:
        raise ConfigError(
            f"config.data.{key}={d[key]!r} is read only with "
            "config.data.train_labels='refined'; unset it or set "
            "train_labels.")
    d.refined_from = ""
    return
  if not d.refined_dir:
    raise ConfigError(
        "config.data.train_labels='refined' needs config.data.refined_dir: "
        f"the --output_dir of `--mode=refine --split={d.train_split}`.")
  if d.refined_fill == BEST_FREE:
    d.refined_fill = scores.choose(refined.coarse_only_scores(
        d.refined_dir, d.train_split), among=refine.FREE_FILLS)[0]
  elif d.refined_fill and d.refined_fill not in refine.FILLS:
    raise ConfigError(
        f"config.data.refined_fill={d.refined_fill!r}: use '' (the fill "
        f"refine chose), {BEST_FREE!r} or one of {', '.join(refine.FILLS)}.")
  d.refined_from = refined.provenance(d.refined_dir, d.train_split, d.dataset,
                                      d.refined_fill)


def _resolve_num_classes(config: ml_collections.ConfigDict,
                         builder=None) -> None:
  """Sets `config.model.num_classes` to the dataset's when it is None.

  The dataset's number comes from its builder (`builder`, or one made here;
  not prepared) without preparing it (its parameters, or the classes.txt of
  a folder). Raises ConfigError if neither says, or if they disagree.
  """
  m = config.model
  if builder is None:
    if m.num_classes is not None:  # Nothing to complete or compare.
      return
    builder = datasets.get_builder(config.data, m.num_classes)
  n = datasets.num_classes(builder)
  if m.num_classes is None:
    if n is None:
      raise ConfigError(
          f"the number of classes of dataset {config.data.dataset!r} is "
          "unknown: pass --config.model.num_classes=N (or, for a folder, "
          "write classes.txt with one class name per line).")
    m.num_classes = n
  elif n is not None and n != m.num_classes:
    raise ConfigError(
        f"config.model.num_classes={m.num_classes} but dataset "
        f"{config.data.dataset!r} has {n} classes; set "
        f"--config.model.num_classes={n} (or leave it unset).")


def check_dataset(config: ml_collections.ConfigDict, builder) -> None:
  """Checks the config against the prepared dataset: the number of classes,
  and with `train_labels='refined'` a refined label of the right size for
  every training example (`errors.DatasetError` otherwise)."""
  n = datasets.num_classes(builder)
  if n is not None and n != config.model.num_classes:
    raise ConfigError(
        f"config.model.num_classes={config.model.num_classes} but dataset "
        f"{config.data.dataset!r} has {n} classes; set "
        f"--config.model.num_classes={n}.")
  d = config.data
  if d.train_labels == "refined":
    refined.check_split(input_pipeline.example_shapes(builder, d.train_split),
                        d.train_split, d.refined_dir, d.refined_fill)
