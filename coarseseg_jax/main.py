r"""Command line of coarseseg-jax.

  python -m coarseseg_jax.main --config=configs/suim.py \
      --config.data.manual_dir=/data/SUIM --workdir=workdirs/suim
  python -m coarseseg_jax.main --config=configs/synthetic.py \
      --config.train.lmbda=0.1 --config.model.name=hcfcn --workdir=...
  python -m coarseseg_jax.main --workdir=... --mode=eval --split=test
  python -m coarseseg_jax.main --workdir=... --mode=predict \
      --input_dir=my_images/ --output_dir=predictions/
  python -m coarseseg_jax.main --config=... --mode=summary

Modes: `train` (default: prepares the dataset if needed, trains, evaluates,
writes results.json, TensorBoard events and figures; started again with the
same command it resumes, and `--workdir` alone resumes from the workdir's
config.json), `eval` (a checkpoint on a split, the dataset prepared first
if it is not; `--checkpoint=pretrained`:
the weights of `--config.model.pretrained`, e.g. the authors'), `predict` (a
folder of images
in, label PNGs and overlays out), `refine` (coarse labels of a split, or of
`--input_dir` images from `--coarse_dir`, filled into dense masks with the
model, and a report beside two baselines: `coarseseg_jax.refine`), `summary`
(the parameter table and the compiled train step's memory per device).
`eval`, `predict` and `refine` take the config from the workdir's
config.json; `--config` is then optional, and only `--config.data.*`
locations may be overridden.

`--config` is a config file's path, or the name of a config shipped with the
package (`--config=suim`). Mistakes print one line `error: ...`: exit status 2
for the command line, 1 for the config's values or the data. SIGTERM or
SIGINT during training saves a checkpoint of the current step, prints one
line and exits with 143 / 130; the same command resumes.
"""

import os
import signal
import sys


def _interrupted_while_starting(signum, frame) -> None:
  """SIGINT while the libraries load: nothing is written yet, exit at once.

  A KeyboardInterrupt raised while a run starts can be swallowed by library
  code (benchmarks/reliability/soak_interrupt.py found a Ctrl-C about 7 s after the
  start ignored, and the run trained to the end). `main` restores
  KeyboardInterrupt once the imports are done (dataset preparation stops at
  once, nothing half-written is kept); from then on `train` turns signals
  into stop requests.
  """
  del frame
  sys.stderr.write("interrupted while starting; nothing was written: run "
                   "the same command to start again.\n")
  os._exit(128 + signum)  # pylint: disable=protected-access


if __name__ == "__main__":  # The command line only, not an import.
  signal.signal(signal.SIGINT, _interrupted_while_starting)
from coarseseg_jax import xla_flags  # Before JAX and TensorFlow start.

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from ml_collections import config_flags

from coarseseg_jax import cli  # pylint: disable=g-bad-import-order
from coarseseg_jax import errors
from coarseseg_jax import refine
from coarseseg_jax import workdir as workdir_lib
from coarseseg_jax import writers

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/*.py), or a shipped config's name.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory (or gs:// URL) for checkpoints, metrics, "
    "results and figures (default: workdirs/<dataset>_<model>).")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "predict", "refine",
                                           "summary"], "What to do.")
_SPLIT = flags.DEFINE_string(
    "split", "test", "Split to evaluate or refine (--mode=eval, refine).")
_CHECKPOINT = flags.DEFINE_enum(
    "checkpoint", "best", ["best", "latest", "pretrained"],
    "Checkpoint to evaluate (--mode=eval); pretrained: the weights of "
    "--config.model.pretrained (e.g. the authors', with --config.model."
    "pretrained_format=authors), no training.")
_INPUT_DIR = flags.DEFINE_string("input_dir", None, "Images (--mode=predict).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None,
                                  "Where predictions go (--mode=predict, refine).")
_COARSE_DIR = flags.DEFINE_string(
    "coarse_dir", None, "Coarse label PNGs of the --input_dir images, matched "
    "by stem (--mode=refine).")
_MIN_CONFIDENCE = flags.DEFINE_float(
    "min_confidence", 0.0, "--mode=refine: unlabelled pixels where the "
    "model's max softmax probability is below this stay 255 (0: fill all).")
_REFINE_METHOD = flags.DEFINE_enum(
    "refine_method", "auto", ("auto",) + refine.FILLS,
    "--mode=refine: the fill written as <stem>.png (every fill is written "
    "under fills/ and reported); auto: the best by the coarse-only score.")


def _workdir_config(workdir: str):
  """eval / predict: the workdir's config, with --config.data.* locations."""
  recorded = workdir_lib.load_config(workdir)
  if recorded is None:
    if _CONFIG.value is None:
      raise errors.ConfigError(
          f"{workdir} has no config.json (no run was started there): pass "
          "the --workdir of a trained run, or --config.")
    return _CONFIG.value
  config = workdir_lib.config_from_json(recorded)
  config.update_from_flattened_dict(cli.config_overrides())
  diffs = workdir_lib.differences(recorded, workdir_lib.config_as_json(config))
  if diffs:
    raise errors.ConfigError(
        f"{workdir} was trained with another config ("
        f"{workdir_lib.describe(diffs)}); eval, predict and refine use the "
        "workdir's "
        "config.json: drop these overrides (only data locations and "
        "eval_batch_size may change).")
  return config


def _config_and_workdir():
  """The config to run and the workdir (see the module docstring)."""
  mode, given = _MODE.value, _CONFIG.value
  workdir = _WORKDIR.value
  if workdir is None:
    if given is None:
      raise app.UsageError("pass --config (and --workdir).")
    workdir = f"workdirs/{given.data.dataset}_{given.model.name}"
  if mode in ("eval", "predict", "refine"):
    return _workdir_config(workdir), workdir
  if given is None:
    recorded = workdir_lib.load_config(workdir) if mode == "train" else None
    if recorded is None:
      raise app.UsageError(
          f"pass --config (a config file, e.g. configs/synthetic.py); "
          f"{workdir} holds no run to resume.")
    return workdir_lib.config_from_json(recorded), workdir
  return given, workdir


def _run(config, workdir: str) -> None:
  # Before anything compiles: JAX's persistent compilation cache.
  from coarseseg_jax import compilation_cache  # pylint: disable=g-import-not-at-top
  compilation_cache.setup(config, workdir, _MODE.value)
  # Heavy imports after flag parsing, so `--help` and flag errors are fast.
  from coarseseg_jax import config_validation  # pylint: disable=g-import-not-at-top
  mode = _MODE.value
  folder = bool(_INPUT_DIR.value or _COARSE_DIR.value)
  if mode == "predict" and not (_INPUT_DIR.value and _OUTPUT_DIR.value):
    raise app.UsageError("--mode=predict needs --input_dir and --output_dir.")
  if mode == "refine":
    if not _OUTPUT_DIR.value or folder and not (_INPUT_DIR.value
                                                 and _COARSE_DIR.value):
      raise app.UsageError("--mode=refine needs --output_dir, and --input_dir "
                           "with --coarse_dir for images not prepared.")
    if not 0.0 <= _MIN_CONFIDENCE.value <= 1.0:
      raise app.UsageError("--min_confidence must be in [0, 1].")
  # The one check of the config: what runs below takes it as resolved here.
  use = {"train": "train", "eval": "split", "refine": "split"}.get(mode,
                                                                   "images")
  resolved = config_validation.resolve(
      config, "images" if mode == "refine" and folder else use)
  if mode == "summary":
    from coarseseg_jax import memory  # pylint: disable=g-import-not-at-top
    from coarseseg_jax import models  # pylint: disable=g-import-not-at-top
    print(models.summary(resolved.config.model,
                         image_size=resolved.config.data.crop_size),
          flush=True)
    # Compiles the train step (no step runs): a minute at 512x512 on 2 cores.
    print(memory.format_memory(memory.train_step_memory(resolved.config)))
  elif mode == "train":
    from coarseseg_jax import train  # pylint: disable=g-import-not-at-top
    results = train.train_and_evaluate(resolved, workdir)
    test = results["test"]
    print("test: " + ", ".join(
        f"{k}={v:.4f}" for k, v in sorted(test.items()) if k.endswith("_mean")))
    print(f"results: {workdir}/results.json, figures: {workdir}/figures/")
  elif mode == "eval":
    from coarseseg_jax import evaluate  # pylint: disable=g-import-not-at-top
    result = evaluate.evaluate_checkpoint(resolved, workdir, _SPLIT.value,
                                          _CHECKPOINT.value)
    print({k: round(v, 4) for k, v in result[_SPLIT.value].items()})
  elif mode == "predict":
    from coarseseg_jax import predictor  # pylint: disable=g-import-not-at-top
    report = predictor.predict_folder(resolved.config, workdir,
                                      _INPUT_DIR.value, _OUTPUT_DIR.value)
    print(f"wrote predictions for {len(report.written)} images to "
          f"{report.output_dir}; skipped {len(report.skipped)} files"
          + (" (named above)" if report.skipped else ""))
    if report.skipped:
      sys.exit(1)
  elif mode == "refine":
    from coarseseg_jax.refine import driver  # pylint: disable=g-import-not-at-top
    print(driver.run(resolved, workdir, _OUTPUT_DIR.value,
                     split=None if folder else _SPLIT.value,
                     input_dir=_INPUT_DIR.value, coarse_dir=_COARSE_DIR.value,
                     min_confidence=_MIN_CONFIDENCE.value,
                     method=_REFINE_METHOD.value)["line"])


def main() -> None:
  signal.signal(signal.SIGINT, signal.default_int_handler)  # Imports done.
  writers.setup_logging()
  _run(*_config_and_workdir())


if __name__ == "__main__":
  cli.run(main, on_ctrl_c=(
      "interrupted before training started (or while preparing the dataset);"
      " nothing half-written is kept: run the same command to start again."))
