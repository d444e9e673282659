"""The photo-texture benchmark: HCFCN-16 with the regularizer on texture_mosaic.

  --config=configs/texture_mosaic.py         the project's variant
  --config=configs/texture_mosaic.py:paper   the authors' code

Class regions cut from photographs and textures that ship with scikit-image
(coarseseg_jax/datasets/texture_mosaic.py; no download), so class borders are
texture borders, not colour edges. Sized like configs/synthetic.py (400 / 50
/ 100 images of 256 x 256, 6 classes). Evaluation is on fine labels.
"""

from coarseseg_jax.configs import synthetic


def get_config(arg=None):
  # The synthetic config's sizes and schedule (the generator's parameters
  # have the same names: coarseseg_jax/datasets/texture_mosaic.py), on
  # texture_mosaic.
  config = synthetic.get_config(arg)
  config.data.dataset = "texture_mosaic"
  return config
