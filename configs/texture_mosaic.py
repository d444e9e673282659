"""The photo-texture benchmark: HCFCN-16 with the regularizer on texture_mosaic.

  --config=configs/texture_mosaic.py         the project's variant
  --config=configs/texture_mosaic.py:paper   the authors' code

Class regions cut from photographs and textures that ship with scikit-image
(coarseseg_jax/datasets/texture_mosaic.py; no download), so class borders are
texture borders, not colour edges. Sized like configs/synthetic.py (400 / 50
/ 100 images of 256 x 256, 6 classes). Evaluation is on fine labels.
"""

from coarseseg_jax.configs import default


def get_config(arg=None):
  config = default.get_config()
  config.data.dataset = "texture_mosaic"
  # The generator's parameters (coarseseg_jax/datasets/texture_mosaic.py).
  config.data.builder_kwargs.num_classes = 6
  config.data.builder_kwargs.num_train = 400
  config.data.builder_kwargs.num_validation = 50
  config.data.builder_kwargs.num_test = 100
  config.data.builder_kwargs.image_size = 256
  config.data.builder_kwargs.seed = 0
  config.data.crop_size = 256          # The whole 256x256 image.
  config.data.eval_batch_size = 8
  config.data.shuffle_buffer = 512
  config.data.slic_num_segments = 512  # SLIC gives ~256 segments per image.
  config.train.batch_size = 8
  config.train.num_epochs = 10
  config.train.lmbda = 0.05
  config.train.log_every_steps = 10
  config.train.checkpoint_every_steps = 50
  return default.variant(config, arg, "improved")
