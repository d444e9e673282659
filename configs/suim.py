"""SUIM (underwater imagery, 8 classes): the paper's experiment.

  --config=configs/suim.py            the authors' code (`default.authors_code`:
                                      their model, loss and validation)
  --config=configs/suim.py:improved   the project's variant (configs/default.py)

Both train HCFCN-16 with the SLIC regularizer (lambda 0.05, m 0) with Adam at
5e-4 on random 512 x 512 crops with horizontal flips for 75 epochs, keeping
the checkpoint with the best validation pixel accuracy. Images are stored at
512 x 512 (`size=512`: the thesis reduces SUIM "by half to 512 by 512"; see
coarseseg_jax/datasets/suim.py), so a crop is the whole image. Validation is
a fixed, seeded part of train_val (150 images) and train is the rest: in
paper mode 1290 as in the thesis (the 85 size-mismatched pairs of the
download skipped, `on_size_mismatch=skip`), in `:improved` 1375 (their masks
resized to the image, `resize`); test is TEST (110). Paper mode also selects
on the coarse validation labels and fine-tunes on train + validation with the
authors' stop rule (`default.AUTHORS_PROTOCOL`).
Download SUIM and pass --config.data.manual_dir (see data/README.md).
"""

from coarseseg_jax.configs import default


def get_config(arg=None):
  config = default.get_config()
  config.data.dataset = "suim"
  config.data.builder_kwargs.resize = 1.0
  config.data.builder_kwargs.size = 512     # Every image 512 x 512.
  # Masks whose size differs from their image (85 in the download's
  # train_val): resize (nearest neighbour) | crop | skip | error. Paper
  # mode skips them as the thesis does (1290 train images); the project's
  # variant keeps them with the mask resized (1375).
  config.data.builder_kwargs.on_size_mismatch = (
      "resize" if arg == "improved" else "skip")
  config.data.builder_kwargs.num_validation = 150
  config.data.builder_kwargs.split_seed = 0
  config.data.crop_size = 512
  config.model.num_classes = 8
  config.train.num_epochs = 75
  config.train.lmbda = 0.05
  return default.variant(config, arg, "paper")
