r"""Your own data: a folder of images and label PNGs (see data/README.md).

  --config=configs/folder.py:paper      the authors' code (default.authors_code)
                                        instead of the project's variant

  python -m coarseseg_jax.main --config=configs/folder.py \
      --config.data.manual_dir=my_data --workdir=workdirs/my_data

Layout: my_data/{train,validation,test}/images/<stem>.png|jpg with
labels/<stem>.png (uint8 class ids, 255 = unlabelled) and optionally
coarse/<stem>.png (your coarse labels; without them coarse labels are made
by eroding the fine ones by `data.coarse_kernel` px). validation/ is
optional: without it a seeded `validation_fraction` of train is held out.
The number of classes is the line count of my_data/classes.txt (one name per
line, used in results and figures), or `--config.model.num_classes=N`.

The paper's training recipe (HCFCN-16, lambda 0.05, Adam 5e-4, flips) on
random `crop_size` crops; set `--config.data.crop_size` (a multiple of 16) to
your images' size or smaller and `--config.train.num_epochs` to your budget.
"""

from coarseseg_jax.configs import default


def get_config(arg=None):
  config = default.get_config()
  config.data.dataset = "folder"
  # config.data.manual_dir: your folder (required on the command line).
  # Hold-out of train when there is no validation/ folder.
  config.data.builder_kwargs.validation_fraction = 0.1
  config.data.builder_kwargs.split_seed = 0
  config.data.crop_size = 256
  config.data.slic_num_segments = 512
  config.train.num_epochs = 50
  config.train.lmbda = 0.05
  return default.variant(config, arg, "improved")
