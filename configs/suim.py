"""SUIM (underwater imagery, 8 classes) with the paper's settings.

The paper halves SUIM's resolution at preparation and trains HCFCN-16 with the
SLIC regularizer (lambda 0.05, m 0, tau 0.07, 48 similarity features) with Adam
at 5e-4 on random 512x512 crops with horizontal flips for 75 epochs, keeping
the checkpoint with the best validation pixel accuracy. Validation is a fixed,
seeded part of train_val (1290 train / 150 validation); test is TEST (110).
Download SUIM and pass --config.data.manual_dir (see data/README.md).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.dataset = "suim"
  config.data.builder_kwargs.resize = 0.5   # Half resolution, as the paper.
  config.data.crop_size = 512
  config.model.num_classes = 8
  config.train.num_epochs = 75
  config.train.lmbda = 0.05
  return config
