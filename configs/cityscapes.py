"""Cityscapes (19 classes) trained on its own gtCoarse labels, paper settings.

  --config=configs/cityscapes.py            the authors' code
                                            (default.authors_code; gtCoarse
                                            kept as it is: mask_conflicts=False)
  --config=configs/cityscapes.py:improved   the project's variant
                                            (mask_conflicts=True)


Images resized to 1024x512 at preparation; random 512x512 crops with flips,
Adam at 5e-4, 50 epochs, lambda 0.075, m 0, tau 0.07. Splits as the paper:
the official val (500) is test; validation is the train images of aachen,
monchengladbach, stuttgart and weimar (606); train is the rest (2369).
Evaluation is on fine labels. With mask_conflicts=True (the project's rule)
gtCoarse pixels that contradict gtFine become 255; False keeps gtCoarse as
it is, as the authors. Pass --config.data.manual_dir (data/README.md).
"""

from coarseseg_jax.configs import default


def get_config(arg=None):
  config = default.get_config()
  config.data.dataset = "cityscapes_coarse"
  config.data.builder_kwargs.image_width = 1024
  config.data.builder_kwargs.image_height = 512
  config.data.builder_kwargs.mask_conflicts = arg == "improved"
  config.data.builder_kwargs.train_extra = False  # True: + split train_extra.
  config.data.crop_size = 512
  config.model.num_classes = 19
  config.train.num_epochs = 50
  config.train.lmbda = 0.075
  return default.variant(config, arg, "paper")
