"""Cityscapes (19 classes) trained on its own gtCoarse labels, paper settings.

Images resized to 1024x512 at preparation; random 512x512 crops with flips,
Adam at 5e-4, 50 epochs, lambda 0.075, m 0, tau 0.07. Splits as the paper:
the official val (500) is test; validation is the train images of aachen,
monchengladbach, stuttgart and weimar (606); train is the rest (2369).
Evaluation is on fine labels. gtCoarse pixels that contradict gtFine become
255 (mask_conflicts=True, the project's rule; False keeps gtCoarse as is, as
the paper). Pass --config.data.manual_dir (data/README.md).
"""

from coarseseg_jax.configs import default


def get_config():
  config = default.get_config()
  config.data.dataset = "cityscapes_coarse"
  config.data.builder_kwargs.image_width = 1024
  config.data.builder_kwargs.image_height = 512
  config.data.builder_kwargs.mask_conflicts = True
  config.data.builder_kwargs.train_extra = False  # True: + split train_extra.
  config.data.crop_size = 512
  config.model.num_classes = 19
  config.train.num_epochs = 50
  config.train.lmbda = 0.075
  return config
