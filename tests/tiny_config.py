"""A tiny config for end-to-end tests: 64x64 synthetic images, a narrow model.

Also usable from the command line:
  python -m coarseseg_jax.main --config=tests/tiny_config.py --workdir=/tmp/w
  python -m coarseseg_jax.main --config=tests/tiny_config.py:paper ...
"""

import os

from coarseseg_jax.configs import synthetic


def get_config(arg=None):
  """`arg`: synthetic.py's (`paper` for the authors' code)."""
  config = synthetic.get_config(arg)
  config.data.data_dir = os.environ.get("COARSESEG_TEST_DATA_DIR", "data")
  config.data.builder_kwargs.num_train = 16
  config.data.builder_kwargs.num_validation = 4
  config.data.builder_kwargs.num_test = 4
  config.data.builder_kwargs.image_size = 64
  config.data.crop_size = 64
  config.data.coarse_kernel = 7  # 25 would leave ~8 % labelled at 64x64.
  config.data.slic_num_segments = 64
  config.data.eval_batch_size = 8
  config.data.shuffle_buffer = 16
  config.model.stage_blocks = (1, 1, 1)
  config.model.width = 8
  config.model.head_channels = 8
  config.model.sim_features = 8
  config.train.batch_size = 8
  config.train.num_epochs = 3
  config.train.lmbda = 0.05
  config.train.kappa = 0.05
  config.train.log_every_steps = 1
  config.train.checkpoint_every_steps = 1
  config.train.num_figures = 2
  return config
