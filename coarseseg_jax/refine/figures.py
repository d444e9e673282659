r"""The refine table and figure, from `--mode=refine` runs.

  python -m coarseseg_jax.refine.figures --workdir=W --refined=DIR \
      [--refined=DIR2 ...] --split=validation --out=results/refine_synthetic

writes `<out>.json` and `<out>.md` (the table of the reports that
`--mode=refine` wrote from W into DIR, every method, and DIR2, ..., the
model's row at their `--min_confidence`, with DIR's per-class figures) and
`<out>.png` (image, coarse label, the two baselines, the fill DIR wrote
(`<stem>.png`) and the fine label of the split's first images).
"""

import itertools
import json
import os
from typing import Optional, Sequence

import numpy as np

from coarseseg_jax import cli
from coarseseg_jax import config_validation
from coarseseg_jax import errors
from coarseseg_jax import figures
from coarseseg_jax import workdir as workdir_lib
from coarseseg_jax.refine import fills
from coarseseg_jax.refine import inputs as refine_inputs
from coarseseg_jax.refine import report as refine_report


def save_figure(examples, refined_dir: str, num_classes: int,
                class_names: Optional[Sequence[str]], path: str) -> None:
  """Image, coarse label, SLIC propagation, nearest labelled pixel, the
  model's refinement (read from `refined_dir`) and fine label of each
  `refine_inputs.Example`, one row each."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(15, 2.5 * len(examples) + 0.7))
  axes = fig.subplots(len(examples), 6, squeeze=False)
  for i, (row, ex) in enumerate(zip(axes, examples)):
    refined = np.asarray(Image.open(os.path.join(refined_dir,
                                                 f"{ex.stem}.png")))
    panels = [("image", ex.image / 255.0),
              ("coarse label", figures.colorize(ex.coarse, num_classes)),
              ("SLIC propagation", figures.colorize(
                  fills.slic_propagation(ex.coarse, ex.slic), num_classes)),
              ("nearest labelled pixel", figures.colorize(
                  fills.nearest_labelled(ex.coarse), num_classes)),
              ("model (refine)", figures.colorize(refined, num_classes)),
              ("fine label", figures.colorize(ex.fine, num_classes))]
    for ax, (title, img) in zip(row, panels):
      ax.imshow(img, interpolation="nearest")
      if i == 0:
        ax.set_title(title, fontsize=10)
      ax.axis("off")
  figures.class_legend(fig, num_classes, class_names)
  fig.tight_layout(rect=(0, 0.5 / fig.get_figheight(), 1, 1))
  figures.save_figure(fig, path)


def write(workdir: str, refined: Sequence[str], split: str, out: str,
          num_figure_images: int = 3) -> str:
  """Writes `<out>.json`, `.md` and `.png` from the refine reports in the
  `refined` folders (module docstring); returns the Markdown table.

  Raises:
    errors.DatasetError: a folder without `refine_<split>.json`.
  """
  reports = []
  for folder in refined:
    path = os.path.join(folder, f"refine_{split}.json")
    if not os.path.isfile(path):
      raise errors.DatasetError(
          f"{path}: no refine report; run --mode=refine --split={split} "
          f"--output_dir={folder} first.")
    with open(path) as f:
      reports.append(json.load(f))
  # The tool's one check of the refining run's config (an entry point).
  resolved = config_validation.resolve(
      workdir_lib.config_from_json(workdir_lib.load_config(workdir)), "split")
  config = resolved.config
  t, first = config.train, reports[0]
  run = (f"{config.data.dataset} data ({workdir}/config.json): "
         f"{config.model.name}, lambda {t.lmbda}, batch {t.batch_size}, "
         f"max_steps {t.max_steps}, checkpoint of step "
         f"{first['checkpoint_step']}; the {split} split, "
         f"{first['num_images']} images, "
         f"{100 * first['labelled_share']:.1f} % of pixels labelled")
  with open(out + ".json", "w") as f:
    json.dump({"run": run, "reports": list(refined),
               "rows": [{"method": label, **{k: v for k, v in row.items()
                                             if k != "per_class"}}
                        for label, row in refine_report.table_rows(reports)],
               "per_class": {k: v["per_class"]
                             for k, v in first["methods"].items()}},
              f, indent=1)
    f.write("\n")
  table = refine_report.markdown_table(reports)
  with open(out + ".md", "w") as f:
    f.write(f"Refine: {run}.\n\n{table}\nPer class (first run), band "
            f"accuracy / boundary F1:\n\n{refine_report.per_class_table(first)}")
  _, examples, names = refine_inputs.split_examples(resolved, split)
  picked = list(itertools.islice(examples, num_figure_images))
  save_figure(picked, refined[0], int(config.model.num_classes), names,
              out + ".png")
  return table


def _main() -> None:
  """The command line (module docstring), run by `cli.run`."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  values = flags.FLAGS
  print(write(values.workdir, values.refined, values.split, values.out,
              values.num_figure_images), end="")


def _define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("workdir", None, "The refining workdir.", required=True)
  flags.DEFINE_multi_string(
      "refined", None, "A refine output folder; more for the model rows of "
      "other --min_confidence runs.", required=True)
  flags.DEFINE_string("split", "validation", "The refined split.")
  flags.DEFINE_string("out", None, "Path prefix of the table and figure.",
                      required=True)
  flags.DEFINE_integer("num_figure_images", 3, "Rows of the figure.")


if __name__ == "__main__":  # Flags only for the command line, not imports.
  _define_flags()
  cli.run(_main, on_ctrl_c="interrupted; run the same command again.")
