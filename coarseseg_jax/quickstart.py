r"""The quick start: what the SLIC regularizer does, in minutes on a CPU.

  python -m coarseseg_jax.quickstart --config=configs/synthetic.py \
      --workdir=workdirs/quickstart [--config.*=...]

`./run.sh` runs it. It trains HCFCN-16 twice on coarse labels of the
synthetic data, at the size of the experiments' main table
(`experiments.methods.FULL_SYNTHETIC`: 200 training images of 160 x 160
pixels, a half-width model) for `EPOCHS` epochs instead of the table's 25, so
that it ends within about ten minutes on 2 CPU cores (`--config.*`
overrides go on top, e.g. `--config.train.num_epochs=25`: the table's runs):
once without the regularizer (lambda 0, `<workdir>/without`) and once with
it (lambda `LAMBDA`, `<workdir>/with`), from the same seed. Then it prints
their test figures side by side (fine labels) and writes

- `<workdir>/quickstart.json`: both runs' test figures and the differences;
- `<workdir>/quickstart.png`: per test image, both predictions, both
  models' learned superpixels and SLIC's.

Each run is an ordinary workdir: the command run again resumes an
interrupted run and skips a finished one, and `--mode=eval|predict|refine
--workdir=<workdir>/with` use it. One seed shows what the regularizer does
to the learned superpixels; whether a difference holds over seeds is what
the experiments measure (results/README.md).
"""

from coarseseg_jax import xla_flags  # pylint: disable=unused-import

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from ml_collections import config_flags
import numpy as np

from coarseseg_jax import cli
from coarseseg_jax import filesystem
from coarseseg_jax import writers

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "The config file (configs/synthetic.py; a shipped "
    "config's name works too) under the quick start's sizes.")
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/quickstart",
                               "The two runs go to <workdir>/without and "
                               "<workdir>/with; the table and figure here.")
LAMBDA = 0.05  # The main table's lambda, chosen on its selection seeds.
EPOCHS = 8  # 200 steps of 8 images; the main table trains 25 epochs.
# (name, title, lambda) of the two runs: the main table's `hcfcn` and
# `hcfcn_slic` (`experiments.methods`).
RUNS = (("without", "without the regularizer", 0.0),
        ("with", f"with it (lambda {LAMBDA})", LAMBDA))
_METHODS = {"without": "hcfcn", "with": "hcfcn_slic"}
# (results.json key, column title) of the printed table.
FIGURES = (("accuracy_mean", "pixel accuracy"),
           ("boundary_recall_mean", "boundary recall"),
           ("boundary_f1_mean", "boundary F1"),
           ("superpixel_asa_mean", "ASA of learned superpixels"),
           ("miou_mean", "mIoU"))


def configs(config):
  """{run name: config} of the two runs: `config` at the quick start's
  sizes, the command line's overrides on top, then the main table's
  `hcfcn` and `hcfcn_slic` deltas with each lambda and `config.seed`."""
  from coarseseg_jax.experiments import methods  # pylint: disable=g-import-not-at-top
  base = methods.apply(config, {**methods.FULL_SYNTHETIC,
                                 "train.num_epochs": EPOCHS,
                                 "train.eval_every_epochs": EPOCHS // 2})
  base = methods.apply(base, cli.config_overrides())
  return {name: methods.apply(base, methods.run_delta(
      _METHODS[name], {"lmbda": lmbda} if lmbda else {}, base.seed))
          for name, _, lmbda in RUNS}


def summary(results, seed: int) -> dict:
  """quickstart.json: each run's lambda and test `FIGURES` (from `results`,
  {run name: results.json's "test"}), their difference (with - without),
  the test images and the seed."""
  keys = [k for k, _ in FIGURES]
  return {"runs": {n: {"lmbda": l, **{k: results[n][k] for k in keys}}
                   for n, _, l in RUNS},
          "difference": {k: results["with"][k] - results["without"][k]
                         for k in keys},
          "test_images": results["with"]["num_images"], "seed": seed}


def table(out: dict) -> str:
  """The runs' test figures and their difference (`summary`), as printed."""
  width = max(len(title) for _, title, _ in RUNS) + 2
  rows = [(title, out["runs"][name], ".3f") for name, title, _ in RUNS]
  rows.append(("difference", out["difference"], "+.3f"))
  lines = ["".ljust(width) + "  ".join(t for _, t in FIGURES)]
  for title, values, fmt in rows:
    lines.append(title.ljust(width) + "  ".join(
        format(values[k], fmt).rjust(len(t)) for k, t in FIGURES))
  return "\n".join(lines)


def figure(path, samples, num_classes: int) -> None:
  """Per test image: the image, its coarse (training) and fine labels, each
  run's prediction and learned superpixels (stride 4), and SLIC's."""
  from coarseseg_jax import figures  # pylint: disable=g-import-not-at-top
  titles = ["image", "coarse label (trained on)", "fine label"] + [
      f"prediction, {t}" for _, t, _ in RUNS] + [
          f"learned superpixels, {t}" for _, t, _ in RUNS] + ["SLIC"]
  rows = len(samples["with"])
  fig = figures.Figure(figsize=(2.1 * len(titles), 2.3 * rows + 0.3))
  axes = fig.subplots(rows, len(titles), squeeze=False)
  for i, row in enumerate(axes):
    ref = samples["with"][i]
    h, w = int(ref["height"]), int(ref["width"])
    image = np.clip(ref["image"][:h, :w], 0, 1)
    panels = ([image, figures.colorize(ref["label"][:h, :w], num_classes),
               figures.colorize(ref["label_fine"][:h, :w], num_classes)]
              + [figures.colorize(samples[n][i]["pred"][:h, :w], num_classes)
                 for n, _, _ in RUNS]
              + [figures.overlay_learned(image, samples[n][i])
                 for n, _, _ in RUNS]
              + [figures.overlay_boundaries(image, ref["slic"][:h, :w])])
    for ax, title, img in zip(row, titles, panels):
      ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
      ax.axis("off")
      if i == 0:
        ax.set_title(title.replace(", ", ",\n").replace(" (", "\n("),
                     fontsize=8)
  fig.tight_layout()
  figures.save_figure(fig, path)


def main() -> None:
  writers.setup_logging()
  if _CONFIG.value is None:
    raise app.UsageError("pass --config=configs/synthetic.py.")
  from coarseseg_jax import compilation_cache  # pylint: disable=g-import-not-at-top
  from coarseseg_jax import config_validation  # pylint: disable=g-import-not-at-top
  from coarseseg_jax import figures  # pylint: disable=g-import-not-at-top
  from coarseseg_jax import train  # pylint: disable=g-import-not-at-top
  root = filesystem.path(_WORKDIR.value)
  # Both runs checked before either trains, each once.
  runs = {name: config_validation.resolve(config)
          for name, config in configs(_CONFIG.value).items()}
  compilation_cache.setup(runs["with"].config, str(root))
  results, samples = {}, {}
  for name, title, _ in RUNS:
    workdir = str(root / name)
    print(f"training HCFCN-16 {title}: {workdir}", flush=True)
    results[name] = train.train_and_evaluate(runs[name], workdir)["test"]
    samples[name] = figures.load_sample_arrays(
        root / name / "figures" / "samples.npz")
  config = runs["with"].config
  figure(root / "quickstart.png", samples, config.model.num_classes)
  out = summary(results, config.seed)
  filesystem.write_json(root / "quickstart.json", out)
  print(f"\nHCFCN-16 on coarse labels, seed {config.seed}, "
        f"{out['test_images']} test images (fine labels):")
  print(table(out))
  print(f"figure: {root / 'quickstart.png'} (learned superpixels beside "
        f"SLIC's); runs: {root}/without, {root}/with")


if __name__ == "__main__":
  cli.run(main, on_ctrl_c=(
      "interrupted: the run in training saved its step; run the same "
      "command to go on."))
