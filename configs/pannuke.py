"""PanNuke (histology nuclei: 5 nucleus types + background, 256x256 images).

  --config=configs/pannuke.py            the authors' code (default.authors_code)
  --config=configs/pannuke.py:improved   the project's variant


Folds 1/2/3 are train/validation/test (builder_kwargs train_fold,
validation_fold, test_fold rearrange them). The paper's training recipe (Adam
5e-4, lambda 0.05, m 0, tau 0.07, 75 epochs) with 256x256 crops (the whole
image). Pass --config.data.manual_dir (see data/README.md).
"""

from coarseseg_jax.configs import default


def get_config(arg=None):
  config = default.get_config()
  config.data.dataset = "pannuke"
  config.data.builder_kwargs.train_fold = 1
  config.data.builder_kwargs.validation_fold = 2
  config.data.builder_kwargs.test_fold = 3
  config.data.crop_size = 256
  config.data.slic_num_segments = 512
  config.model.num_classes = 6
  config.train.num_epochs = 75
  config.train.lmbda = 0.05
  return default.variant(config, arg, "paper")
