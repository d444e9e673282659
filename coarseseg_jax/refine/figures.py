r"""The refine table and figure, from `--mode=refine` runs.

  python -m coarseseg_jax.refine.figures --workdir=W --refined=DIR \
      [--refined=DIR2 ...] --split=validation --out=results/refine_synthetic

writes `<out>.json` and `<out>.md` (the table of the reports that
`--mode=refine` wrote from W into DIR, every method, and DIR2, ..., the
model's row at their `--min_confidence`, with DIR's per-class figures) and
`<out>.png` (image, coarse label, the two baselines, the fill DIR wrote
(`<stem>.png`) and the fine label of the split's first images).
"""

import argparse
import itertools
import json
import os
from typing import Optional, Sequence

import numpy as np

from coarseseg_jax import figures
from coarseseg_jax.refine import fills
from coarseseg_jax.refine import inputs as refine_inputs
from coarseseg_jax.refine import report as refine_report
from coarseseg_jax import workdir as workdir_lib


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


def main(argv=None) -> None:
  """The README's table and figure from refine runs (module docstring)."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--refined", required=True, action="append",
                      help="A refine output folder; more for the model "
                      "rows of other --min_confidence runs.")
  parser.add_argument("--split", default="validation")
  parser.add_argument("--out", required=True)
  parser.add_argument("--num_figure_images", type=int, default=3)
  args = parser.parse_args(argv)
  reports = []
  for folder in args.refined:
    with open(os.path.join(folder, f"refine_{args.split}.json")) as f:
      reports.append(json.load(f))
  config = workdir_lib.config_from_json(workdir_lib.load_config(args.workdir))
  t, first = config.train, reports[0]
  run = (f"{config.data.dataset} data ({args.workdir}/config.json): "
         f"{config.model.name}, lambda {t.lmbda}, batch {t.batch_size}, "
         f"max_steps {t.max_steps}, checkpoint of step "
         f"{first['checkpoint_step']}; the {args.split} split, "
         f"{first['num_images']} images, "
         f"{100 * first['labelled_share']:.1f} % of pixels labelled")
  with open(args.out + ".json", "w") as f:
    json.dump({"run": run, "reports": args.refined,
               "rows": [{"method": label, **{k: v for k, v in row.items()
                                             if k != "per_class"}}
                        for label, row in refine_report.table_rows(reports)],
               "per_class": {k: v["per_class"]
                             for k, v in first["methods"].items()}},
              f, indent=1)
    f.write("\n")
  table = refine_report.markdown_table(reports)
  with open(args.out + ".md", "w") as f:
    f.write(f"Refine: {run}.\n\n{table}\nPer class (first run), band "
            f"accuracy / boundary F1:\n\n{refine_report.per_class_table(first)}")
  _, examples, names = refine_inputs.split_examples(config, args.split)
  picked = list(itertools.islice(examples, args.num_figure_images))
  save_figure(picked, args.refined[0], int(config.model.num_classes), names,
              args.out + ".png")
  print(table, end="")


if __name__ == "__main__":
  main()
