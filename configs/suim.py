"""SUIM (underwater imagery, 8 classes) with the paper's settings.

The paper halves SUIM's resolution at preparation and trains HCFCN-16 with the
SLIC regularizer (lambda 0.05, m 0, tau 0.07, 48 similarity features) with Adam
at 5e-4 on random 512x512 crops with horizontal flips for 75 epochs, keeping
the checkpoint with the best validation pixel accuracy. Validation is a fixed,
seeded part of train_val (150 images; train is the rest: 1375 with
on_size_mismatch=resize, or 1290 as in the paper if the 85 size-mismatched
pairs of the download are skipped); test is TEST (110).
Download SUIM and pass --config.data.manual_dir (see data/README.md).
"""

from coarseseg_jax.configs import default


def get_config():
  config = default.get_config()
  config.data.dataset = "suim"
  config.data.builder_kwargs.resize = 0.5   # Half resolution, as the paper.
  # Masks whose size differs from their image (over 80 in the download):
  # resize (nearest neighbour) | crop | skip | error.
  config.data.builder_kwargs.on_size_mismatch = "resize"
  config.data.builder_kwargs.num_validation = 150
  config.data.builder_kwargs.split_seed = 0
  config.data.crop_size = 512
  config.model.num_classes = 8
  config.train.num_epochs = 75
  config.train.lmbda = 0.05
  return config
