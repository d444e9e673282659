r"""Command line of coarseseg-jax.

  python -m coarseseg_jax.main --config=configs/suim.py --workdir=workdirs/suim
  python -m coarseseg_jax.main --config=configs/synthetic.py \
      --config.train.lmbda=0.1 --config.model.name=hcfcn --workdir=...
  python -m coarseseg_jax.main --config=... --workdir=... --mode=eval --split=test
  python -m coarseseg_jax.main --config=... --workdir=... --mode=predict \
      --input_dir=my_images/ --output_dir=predictions/
  python -m coarseseg_jax.main --config=... --mode=summary

Modes: `train` (default: prepares the dataset if needed, trains, evaluates,
writes results.json, TensorBoard events and figures; started again with the
same command it resumes), `eval` (a checkpoint on a split), `predict` (a folder
of images in, label PNGs and overlays out), `summary` (the parameter table).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's C++ INFO.

from coarseseg_jax import xla_flags  # Sets XLA CPU flags before JAX starts.

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from ml_collections import config_flags

from coarseseg_jax import writers  # pylint: disable=g-bad-import-order

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics, results and figures "
    "(default: workdirs/<dataset>_<model>).")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "predict", "summary"],
                          "What to do.")
_SPLIT = flags.DEFINE_string("split", "test", "Split to evaluate (--mode=eval).")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", ["best", "latest"],
                                "Checkpoint to evaluate (--mode=eval).")
_INPUT_DIR = flags.DEFINE_string("input_dir", None, "Images (--mode=predict).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None,
                                  "Where predictions go (--mode=predict).")
flags.mark_flags_as_required(["config"])


def _run(config, workdir: str) -> None:
  # Heavy imports after flag parsing, so `--help` and flag errors are fast.
  from coarseseg_jax import inference  # pylint: disable=g-import-not-at-top
  from coarseseg_jax import models  # pylint: disable=g-import-not-at-top
  from coarseseg_jax import train  # pylint: disable=g-import-not-at-top
  mode = _MODE.value
  if mode == "summary":
    print(models.summary(config.model, image_size=config.data.crop_size))
  elif mode == "train":
    results = train.train_and_evaluate(config, workdir)
    test = results["test"]
    print("test: " + ", ".join(
        f"{k}={v:.4f}" for k, v in sorted(test.items()) if k.endswith("_mean")))
    print(f"results: {workdir}/results.json, figures: {workdir}/figures/")
  elif mode == "eval":
    result = inference.evaluate_checkpoint(config, workdir, _SPLIT.value,
                                           _CHECKPOINT.value)
    print({k: round(v, 4) for k, v in result["summary"].items()})
  elif mode == "predict":
    if not _INPUT_DIR.value or not _OUTPUT_DIR.value:
      raise app.UsageError("--mode=predict needs --input_dir and --output_dir.")
    n, out = inference.predict_folder(config, workdir, _INPUT_DIR.value,
                                      _OUTPUT_DIR.value)
    print(f"wrote predictions for {n} images to {out}")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  workdir = _WORKDIR.value or (
      f"workdirs/{config.data.dataset}_{config.model.name}")
  writers.setup_logging()
  from coarseseg_jax import errors  # pylint: disable=g-import-not-at-top
  try:
    _run(config, workdir)
  except errors.USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
