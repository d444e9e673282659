"""Every knob of coarseseg-jax: the project's defaults, and the authors' code.

`get_config()` gives the project's defaults: the paper's training recipe with
the project's choices where it departs from the authors' code (each such
option's comment says "authors:" and the value that reproduces their code).
`authors_code(config)` sets every one of those options to the authors' value,
so the model, loss and evaluation are what their published PyTorch code
computes (tests/test_authors_parity.py checks it against a port of that code),
and the protocol around them is theirs (selection, fine-tuning). Every key is
classified below `get_config` (the authors' value, or no counterpart in their
code); `departures(config)` names the keys of a config that are not theirs.
The paper datasets' configs (suim.py, pannuke.py, cityscapes.py) run the
authors' code by default and the project's variant with the config argument
`improved` (`--config=configs/suim.py:improved`); synthetic.py and folder.py
run the project's variant (`:paper` gives the authors' code).

Other configs start from this one (`from coarseseg_jax.configs import default`:
configs/ is installed as the package `coarseseg_jax.configs`) and change what
differs. Any value can be overridden on the command line, e.g.
`--config.train.lmbda=0.05 --config.model.name=fcn`; fields without a value
are typed placeholders, so `--config.train.max_steps=10` works too.

The paper (de Jong & Holenderski, arXiv 2510.15756): Adam, learning rate 5e-4,
random 512x512 crops and horizontal flips, 75 epochs on SUIM with lambda 0.05,
50 epochs on Cityscapes with lambda 0.075, m = 0, tau = 0.07, 48 similarity
features, the checkpoint with the best validation pixel accuracy (on the
coarse validation labels) kept, then fine-tuning on train + validation with a
fresh Adam until the validation loss is no higher than the training loss
before it (<= 15 epochs). Paper mode runs that protocol
(`AUTHORS_PROTOCOL`); the project's defaults select on fine labels and do
not fine-tune.
"""

import ml_collections
from ml_collections.config_dict import placeholder


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  # ---------------------------------------------------------------- data ----
  data = config.data = ml_collections.ConfigDict()
  # synthetic | texture_mosaic | folder | suim | pannuke | cityscapes_coarse
  data.dataset = "synthetic"
  data.data_dir = "data"       # TFDS data dir (prepared TFRecords land here).
  data.manual_dir = placeholder(str)  # Raw download / your folder (folder, suim..).
  data.train_labels = "coarse"  # coarse | fine | slic_propagated (SLIC vote) | refined.
  # train_labels=refined: the --mode=refine output of the train split to train
  # on; refined_from is filled in from its report (workdir and step).
  data.refined_dir = ""
  # Which fill of that output: "" the one refine chose (its <stem>.png), a
  # fill's name (fills/<name>/), or "best_free": the free fill (no model) its
  # coarse-only score ranks first, resolved to the name when checked.
  data.refined_fill = ""
  data.refined_from = ""
  data.train_split = "train"
  data.eval_split = "validation"  # Model selection split.
  data.test_split = "test"        # Final results split.
  # fine | coarse: labels of checkpoint selection (authors: coarse).
  data.validation_labels = "fine"
  # Builder-config parameters: changing them prepares a new cached version.
  data.coarse_kernel = 25      # Erosion kernel (px) of generated coarse labels.
  # How coarse labels are generated (where a dataset has none of its own):
  # erosion (the paper's and the authors' code: every region eroded by
  # coarse_kernel // 2 px, polygons traced) | annotator (polygons with uneven
  # margins of about coarse_kernel / 2 px, some small regions unlabelled,
  # some regions only scribbled: datasets/annotator.py). The authors' code
  # only erodes: AUTHORS_SHARED (like coarse_kernel it chooses the data, not
  # the method, so it is not in AUTHORS_CODE and paper mode keeps it).
  data.coarse_style = "erosion"
  data.slic_block = 16         # One SLIC segment per slic_block^2 pixels.
  data.slic_compactness = 10.0
  data.slic_sigma = 1.0
  # Dataset parameters (each dataset config lists all of its own).
  data.builder_kwargs = ml_collections.ConfigDict()
  # Pipeline.
  data.crop_size = 512         # Random training crop (multiple of 16).
  data.scale_range = (1.0, 1.0)  # Random rescale before the crop (1, 1 = off).
  data.hflip = True
  # Centre crop of validation and test images (px; None: whole images).
  # Authors: CenterCrop(512) (the training crop size).
  data.eval_center_crop = placeholder(int)
  data.slic_num_segments = 2048  # One-hot slots for slic_map_loss per crop.
  data.shuffle_buffer = 1024
  data.eval_batch_size = 8
  data.deterministic = True

  # --------------------------------------------------------------- model ----
  model = config.model = ml_collections.ConfigDict()
  model.name = "hcfcn"         # hcfcn | fcn | unet | fcn16s_vgg
  model.num_classes = placeholder(int)  # None: the dataset's number.
  # Soft assignments of HCFCN-16 (models/hcfcn.py: HCFCN).
  # similarity: dot = raw dot product / tau (authors: dot, tau 0.07;
  # saturated at init) | cosine = the thesis text (both L2-normalised,
  # / tau) | hcformer = HCFormer's clustering module (LayerNorm, 1x1
  # projection, L2 norm, learnable tau initialised to model.tau; HCFormer
  # uses 0.05). Default cosine with tau 0.05, chosen on validation accuracy
  # (results/synthetic_similarity.md; results/README.md).
  model.similarity = "cosine"
  model.tau = 0.05             # Temperature (hcformer: its initial value).
  # Candidates outside the grid of the assignments: mask (weight 0) | zero
  # (authors: zero-padded cells with similarity 0 take part in the softmax
  # and the upsampling reads zeros from them).
  model.out_of_grid = "mask"
  model.sim_features = 48
  model.assign_init = "default"  # default | zero (dot only: the fine
                               # projection starts at 0: uniform assignments).
  # None (off) or the initial learnable parent-cell logit per level (e.g. 2).
  model.parent_bias = placeholder(float)
  model.deformable = True      # DCNv2 in the downsampling blocks.
  model.stage_blocks = (3, 4, 6)  # ResNet-34 stages up to stride 16.
  model.width = 64             # Channels of the first stage (ResNet-34: 64).
  model.head_channels = 64
  model.dropout = 0.1
  model.dtype = "float32"      # float32 | bfloat16 (params stay float32).
  # Encoder input: imagenet (mean / std normalised) | none (authors: the
  # [0, 1] images of ToTensor()).
  model.input_norm = "imagenet"
  # Initialisation: he_fan_out (torchvision's ResNet: He normal, fan_out;
  # Flax's lecun_normal for the 1x1 projections and the classifier) | pytorch
  # (authors: PyTorch's layer defaults, U(+-1/sqrt(fan_in)) kernels and
  # classifier bias; DCN kernel likewise, bias 0; offset / mask convs 0).
  model.weight_init = "he_fan_out"
  model.deform_bias = False    # Authors: True (their DCN has a bias, init 0).
  # Weights to start from (.npz / .pt / .pth): a torchvision resnet34 / vgg16
  # state dict (the encoder), or with pretrained_format=authors a state dict
  # of the authors' SegModel (the whole model: models/pretrained.py).
  model.pretrained = placeholder(str)
  model.pretrained_format = "torchvision"  # torchvision | authors

  # ------------------------------------------------------------ training ----
  train = config.train = ml_collections.ConfigDict()
  train.batch_size = 8         # Global batch size, over all devices and hosts.
  train.num_epochs = 75
  train.learning_rate = 5e-4
  train.optimizer = "adam"     # adam | adamw
  train.weight_decay = 0.0     # adamw only.
  # Options beyond the paper, off by default (the paper: constant rate).
  train.lr_schedule = "constant"  # constant | warmup_cosine (to 0 at the end)
  train.warmup_steps = 0       # warmup_cosine: linear warmup from 0.
  train.grad_clip_norm = placeholder(float)  # Clip the global norm (None: off).
  # Cross-entropy weight per class, e.g. '(1.0, 2.0, ...)' (None: all 1).
  train.class_weights = placeholder(tuple)
  train.lmbda = 0.05           # Weight of the paper's SLIC regularizer.
  train.m = 0.0                # Position weight inside the regularizer.
  # The regularizer's image at the finest assignment grid: block_mean (the
  # mean of each 4x4 block) | bilinear (authors: F.interpolate, which reads
  # the central 2x2 pixels of each block).
  train.slic_resize = "block_mean"
  # Divisor of the position term: cell_side (4) | stride_squared (authors:
  # 8^2 = 64). No effect with m = 0 (the paper's setting).
  train.slic_position_norm = "cell_side"
  train.kappa = 0.0            # Weight of slic_map_loss (beyond the paper).
  train.max_steps = placeholder(int)  # Stop after this many steps (tests).
  train.log_every_steps = 20
  train.eval_every_epochs = 1
  train.checkpoint_every_steps = 200
  train.keep_checkpoints = 2
  train.select_metric = "accuracy"  # Best checkpoint by validation metric.
  # Validation forward pass: eval (BN running averages, no dropout) | train
  # (authors: model.train() under no_grad: BN batch statistics, dropout on).
  train.validation_mode = "eval"
  train.finetune = False       # Fine-tune on train + validation afterwards.
  train.finetune_max_epochs = 15
  # When fine-tuning stops (coarseseg_jax/finetune.py): project = once the
  # validation cross-entropy is no higher than the last training epoch's
  # training cross-entropy | authors (their train_eval.finetune): once the
  # validation loss (cross-entropy + regularizer, in the validation pass)
  # is no higher than the loss on train in eval mode before fine-tuning.
  train.finetune_rule = "project"
  train.num_figures = 4        # Test images drawn in workdir/figures.
  train.num_validation_images = 3  # Validation images in TensorBoard.
  train.profile_steps = 0      # > 0: a jax.profiler trace of that many steps
                               # (after 3 warm-up steps) in tensorboard/.

  # JAX's persistent compilation cache (coarseseg_jax/compilation_cache.py):
  # "workdir" = <workdir>/compilation_cache (the environment's
  # JAX_COMPILATION_CACHE_DIR wins when set), a path = that directory
  # (shareable by runs), "" = off. Resumed runs, eval and predict then load
  # the programs compiled before instead of compiling them again. Changes
  # nothing about the run: it may differ when a run is resumed.
  config.compilation_cache_dir = "workdir"

  config.distributed = False   # jax.distributed.initialize() on TPU pods.
  return config


# Every config key is classified below (tests/test_paper_mode.py fails for
# a key that is not): the authors' value, per dataset where it is the
# dataset's, or "no counterpart in their code" with why. `authors_code` sets
# the values, `departures` lists the keys of a config that are not them.

# Where the project departs from the authors' model, loss and validation
# pass: key -> the authors' value (the experiments' authors'-code rows take
# these; docs/differences.md).
AUTHORS_CODE = {
    "model.similarity": "dot",
    "model.tau": 0.07,
    "model.sim_features": 48,
    "model.out_of_grid": "zero",
    "model.input_norm": "none",
    "model.weight_init": "pytorch",
    "model.deform_bias": True,
    "train.slic_resize": "bilinear",
    "train.slic_position_norm": "stride_squared",
    "train.validation_mode": "train",
    "train.lr_schedule": "constant",
    "train.optimizer": "adam",
    "train.learning_rate": 5e-4,
}
# Where the project's protocol around the model departs from the thesis's:
# selection and fine-tuning on the coarse labels, fine-tuning on train +
# validation with the authors' stop rule (their train_eval.finetune).
AUTHORS_PROTOCOL = {
    "data.validation_labels": "coarse",
    "train.finetune": True,
    "train.finetune_rule": "authors",
}
# Options whose default is already the authors' value (paper mode and the
# project's variant share it; another value departs).
AUTHORS_SHARED = {
    "data.train_labels": "coarse",
    "data.train_split": "train",
    "data.eval_split": "validation",
    "data.test_split": "test",
    "data.coarse_kernel": 25,         # Their DataSet(erode=25).
    "data.coarse_style": "erosion",   # Their only way to make coarse labels.
    "data.scale_range": (1.0, 1.0),   # No rescaling: RandomCrop only.
    "data.hflip": True,
    "model.name": "hcfcn",
    "model.assign_init": "default",
    "model.parent_bias": None,
    "model.deformable": True,
    "model.stage_blocks": (3, 4, 6),
    "model.width": 64,
    "model.head_channels": 64,
    "model.dropout": 0.1,
    "model.dtype": "float32",
    "model.pretrained": None,         # Trained from their initialisation.
    "train.weight_decay": 0.0,
    "train.warmup_steps": 0,
    "train.grad_clip_norm": None,
    "train.class_weights": None,
    "train.m": 0.0,
    "train.kappa": 0.0,
    "train.select_metric": "accuracy",
    "train.eval_every_epochs": 1,
    "train.finetune_max_epochs": 15,
}
# The authors' evaluation crop is their training crop (CenterCrop(512)).
AUTHORS_DERIVED = {"data.eval_center_crop": "data.crop_size"}
# Keys whose authors' value is the dataset's (set by its config; the
# authors' values of the thesis's datasets in DATASET_AUTHORS).
PER_DATASET = ("data.dataset", "data.builder_kwargs", "data.crop_size",
               "model.num_classes", "train.num_epochs", "train.lmbda")
DATASET_AUTHORS = {
    "suim": {
        "data.crop_size": 512, "model.num_classes": 8,
        "train.num_epochs": 75, "train.lmbda": 0.05,
        "data.builder_kwargs.size": 512, "data.builder_kwargs.resize": 1.0,
        "data.builder_kwargs.on_size_mismatch": "skip",  # 1290 train images.
        "data.builder_kwargs.num_validation": 150,
    },
    "cityscapes_coarse": {
        "data.crop_size": 512, "model.num_classes": 19,
        "train.num_epochs": 50, "train.lmbda": 0.075,
        "data.builder_kwargs.image_width": 1024,
        "data.builder_kwargs.image_height": 512,
        "data.builder_kwargs.mask_conflicts": False,
        "data.builder_kwargs.train_extra": False,
    },
}
NO_COUNTERPART = "no counterpart in their code"
# Keys with no counterpart in the authors' code: key -> why.
NO_COUNTERPART_KEYS = {
    "seed": "torch's random streams are not JAX's",
    "distributed": "multi-host set-up",
    "compilation_cache_dir": "JAX's compilation cache",
    "data.data_dir": "where prepared data is stored",
    "data.manual_dir": "where the download is",
    "data.refined_dir": "self-training (train_labels=refined), beyond them",
    "data.refined_fill": "self-training on one fill of a refine output, "
                         "beyond them",
    "data.refined_from": "recorded provenance of refined labels",
    "data.builder_kwargs.split_seed": "their random_split's draw is not "
                                      "recorded",
    "data.slic_block": "SLIC maps: the project's propagation and SLIC ASA",
    "data.slic_compactness": "SLIC maps, as slic_block",
    "data.slic_sigma": "SLIC maps, as slic_block",
    "data.slic_num_segments": "slots of slic_map_loss (kappa, beyond them)",
    "data.shuffle_buffer": "TFDS input pipeline",
    "data.eval_batch_size": "evaluation batching (no effect on results)",
    "data.deterministic": "TFDS input pipeline",
    "model.pretrained_format": "how model.pretrained is read",
    "train.batch_size": "not given in the thesis; their scripts' value is "
                        "not recorded here",
    "train.max_steps": "a step cap for tests",
    "train.log_every_steps": "logging",
    "train.checkpoint_every_steps": "checkpointing",
    "train.keep_checkpoints": "checkpointing",
    "train.num_figures": "figures",
    "train.num_validation_images": "TensorBoard images",
    "train.profile_steps": "profiling",
}


def _value(config: ml_collections.ConfigDict, key: str):
  """The value of a dotted key (None where a level is missing)."""
  for part in key.split("."):
    if config is None or part not in config:
      return None
    config = config[part]
  return config


def _same(a, b) -> bool:
  """Equality with lists and tuples alike (config.json holds lists)."""
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
  return a == b


def authors_values(config: ml_collections.ConfigDict) -> dict:
  """Dotted key -> the authors' value, for every key of `config` that has
  one (the dataset's from `DATASET_AUTHORS` for the thesis's datasets)."""
  out = {**AUTHORS_CODE, **AUTHORS_PROTOCOL, **AUTHORS_SHARED,
         **DATASET_AUTHORS.get(config.data.dataset, {})}
  for key, source in AUTHORS_DERIVED.items():
    out[key] = _value(config, source)
  return out


def departures(config: ml_collections.ConfigDict) -> list:
  """The keys of ``config`` whose value is not the authors' (empty: the
  authors' model, loss, validation, selection and fine-tuning; for SUIM and
  Cityscapes also their data and schedule). Keys with no counterpart in
  their code (`NO_COUNTERPART_KEYS`) never depart."""
  return [k for k, v in authors_values(config).items()
          if not _same(_value(config, k), v)]


def authors_code(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Paper mode (in place): every option of `AUTHORS_CODE` and
  `AUTHORS_PROTOCOL` at the authors' value, and the evaluation centre crop
  at the training crop (their CenterCrop). The shared and the dataset's
  values are the configs' own already."""
  for key, value in {**AUTHORS_CODE, **AUTHORS_PROTOCOL}.items():
    section, name = key.split(".")
    config[section][name] = value
  config.data.eval_center_crop = config.data.crop_size
  return config


VARIANTS = ("paper", "improved")


def variant(config: ml_collections.ConfigDict, arg, default: str):
  """Applies a config argument: ``paper`` (`authors_code`) or ``improved``
  (the project's defaults as they are); ``None`` or ``""`` means ``default``.

  A dataset config calls it last in its ``get_config(arg=None)``.
  """
  name = arg or default
  if name not in VARIANTS:
    raise ValueError(f"unknown config argument {arg!r}: use one of "
                     f"{', '.join(VARIANTS)} (e.g. --config=configs/suim.py:"
                     "improved).")
  return authors_code(config) if name == "paper" else config
