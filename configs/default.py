"""Every knob of coarseseg-jax, with the paper's settings as defaults.

Other configs start from this one (`from coarseseg_jax.configs import default`:
configs/ is installed as the package `coarseseg_jax.configs`) and change what
differs. Any value can be overridden on the command line, e.g.
`--config.train.lmbda=0.05 --config.model.name=fcn`; fields without a value
are typed placeholders, so `--config.train.max_steps=10` works too.

The paper (de Jong & Holenderski, arXiv 2510.15756): Adam, learning rate 5e-4,
random 512x512 crops and horizontal flips, 75 epochs on SUIM with lambda 0.05,
50 epochs on Cityscapes with lambda 0.075, m = 0, tau = 0.07, 48 similarity
features, the checkpoint with the best validation pixel accuracy kept, then an
optional fine-tuning on train + validation with a fresh Adam until the
validation loss is no higher than the training loss before it (<= 15 epochs).
"""

import ml_collections
from ml_collections.config_dict import placeholder


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  # ---------------------------------------------------------------- data ----
  data = config.data = ml_collections.ConfigDict()
  data.dataset = "synthetic"   # synthetic | folder | suim | pannuke | cityscapes_coarse
  data.data_dir = "data"       # TFDS data dir (prepared TFRecords land here).
  data.manual_dir = placeholder(str)  # Raw download / your folder (folder, suim..).
  data.train_labels = "coarse"  # coarse | fine | slic_propagated (SLIC vote).
  data.train_split = "train"
  data.eval_split = "validation"  # Model selection split.
  data.test_split = "test"        # Final results split.
  # Builder-config parameters: changing them prepares a new cached version.
  data.coarse_kernel = 25      # Erosion kernel (px) of generated coarse labels.
  data.slic_block = 16         # One SLIC segment per slic_block^2 pixels.
  data.slic_compactness = 10.0
  data.slic_sigma = 1.0
  # Dataset parameters (each dataset config lists all of its own).
  data.builder_kwargs = ml_collections.ConfigDict()
  # Pipeline.
  data.crop_size = 512         # Random training crop (multiple of 16).
  data.scale_range = (1.0, 1.0)  # Random rescale before the crop (1, 1 = off).
  data.hflip = True
  data.eval_center_crop = placeholder(int)  # Paper's eval centre crop (px).
  data.slic_num_segments = 2048  # One-hot slots for slic_map_loss per crop.
  data.shuffle_buffer = 1024
  data.eval_batch_size = 8
  data.deterministic = True

  # --------------------------------------------------------------- model ----
  model = config.model = ml_collections.ConfigDict()
  model.name = "hcfcn"         # hcfcn | fcn | unet | fcn16s_vgg
  model.num_classes = placeholder(int)  # None: the dataset's number.
  # Soft assignments of HCFCN-16 (models/hcfcn.py: HCFCN; issue 15).
  # similarity: dot = the paper's published code (raw dot product / tau;
  # saturated at init with tau 0.07) | cosine = the thesis text (both
  # L2-normalised, / tau) | hcformer = HCFormer's clustering module
  # (LayerNorm, 1x1 projection, L2 norm, learnable tau initialised to
  # model.tau; HCFormer uses 0.05). Default cosine with tau 0.05, chosen on
  # validation accuracy (results/synthetic_similarity.md; README); the
  # paper's code: --config.model.similarity=dot --config.model.tau=0.07.
  model.similarity = "cosine"
  model.tau = 0.05             # Temperature (hcformer: its initial value).
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
  model.pretrained = placeholder(str)  # .npz / .pth torchvision state dict.

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
  train.kappa = 0.0            # Weight of slic_map_loss (beyond the paper).
  train.max_steps = placeholder(int)  # Stop after this many steps (tests).
  train.log_every_steps = 20
  train.eval_every_epochs = 1
  train.checkpoint_every_steps = 200
  train.keep_checkpoints = 2
  train.select_metric = "accuracy"  # Best checkpoint by validation metric.
  train.finetune = False       # Fine-tune on train + validation afterwards.
  train.finetune_max_epochs = 15
  train.num_figures = 4        # Test images drawn in workdir/figures.
  train.num_validation_images = 3  # Validation images in TensorBoard.
  train.profile_steps = 0      # > 0: a jax.profiler trace of that many steps
                               # (after 3 warm-up steps) in tensorboard/.

  config.distributed = False   # jax.distributed.initialize() on TPU pods.
  return config
