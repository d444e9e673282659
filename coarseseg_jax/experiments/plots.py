"""The experiments' figures: each run's test predictions side by side, the
coarseness sweep's curves and the budget grid's curves (`report` writes
them beside their tables). Drawing only: rows and a run's saved test
samples in, a PNG out; the numbers come from `tables`.
"""

from typing import List, Sequence, Tuple

import numpy as np

from coarseseg_jax import figures
from coarseseg_jax import filesystem
from coarseseg_jax.experiments import tables


def samples(workdir: str, k: int) -> List[dict]:
  """The first `k` test samples a run saved (figures/samples.npz), or []."""
  path = filesystem.path(workdir) / "figures" / "samples.npz"
  return figures.load_sample_arrays(path)[:k] if path.exists() else []


def predictions_figure(path, columns: Sequence[Tuple[str, List[dict]]],
                       num_classes: int) -> None:
  """Per test image: image, coarse and fine label, each column's prediction.

  `columns`: (title, samples of a run); the image and labels drawn are the
  first column's (a coarse-label run's).
  """
  ref = columns[0][1]
  titles = ["image", "coarse label", "fine label"] + [t for t, _ in columns]
  fig = figures.Figure(figsize=(1.9 * len(titles), 2.0 * len(ref) + .4))
  axes = fig.subplots(len(ref), len(titles), squeeze=False)
  for i, row in enumerate(axes):
    h, w = int(ref[i]["height"]), int(ref[i]["width"])
    colour = lambda x: figures.colorize(x[:h, :w], num_classes)
    panels = [ref[i]["image"][:h, :w], colour(ref[i]["label"]),
              colour(ref[i]["label_fine"])] + [
                  colour(s[i]["pred"]) for _, s in columns]
    for ax, title, img in zip(row, titles, panels):
      ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
      ax.axis("off")
      ax.set_title(title if i == 0 else "", fontsize=8)
  fig.tight_layout()
  figures.save_figure(fig, path)


def coarseness_figure(path, rows: Sequence[dict], kernels: Sequence[int],
                      num_seeds: int) -> None:
  """Test boundary recall and accuracy (mean ± std) against the kernel size.

  `rows`: `summary_rows` with keys method ('hcfcn' | 'hcfcn_slic') and kernel.
  """
  fig = figures.Figure(figsize=(10, 3.8))
  for ax, metric in zip(fig.subplots(1, 2), ("boundary_recall", "accuracy")):
    for method in ("hcfcn", "hcfcn_slic"):
      sel = [r for r in rows if r["method"] == method]
      ax.errorbar([r["kernel"] for r in sel],
                  [r[f"{metric}_mean"] for r in sel],
                  yerr=np.nan_to_num([r[f"{metric}_std"] for r in sel]),
                  marker="o", capsize=3, label=method)
    ax.set(xlabel="erosion kernel of the coarse labels (px)",
           ylabel=f"test {tables.METRIC_NAMES[metric]}", xticks=list(kernels))
    ax.legend()
  fig.suptitle(f"mean ± std over {num_seeds} seeds")
  fig.tight_layout()
  figures.save_figure(fig, path)


def budget_figure(path, rows: Sequence[dict], seed_rows: Sequence[dict],
                  chosen: int, convergence_shown: bool = True) -> None:
  """Validation accuracy and boundary recall (mean ± std over seeds, each
  seed a dot) against the epoch budget per method; the chosen budget dashed
  (the title says where `convergence_shown` is False: it is the largest
  budget run, so no larger one shows the gain has stopped).

  `rows`: `tables.budget_tables`' summary; `seed_rows`: its seed rows.
  """
  fig = figures.Figure(figsize=(10, 3.8))
  budgets = sorted({r["epochs"] for r in rows})
  for ax, metric in zip(fig.subplots(1, 2), ("accuracy", "boundary_recall")):
    for method in dict.fromkeys(r["method"] for r in rows):
      sel = [r for r in rows if r["method"] == method]
      line = ax.errorbar([r["epochs"] for r in sel],
                         [r[f"{metric}_mean"] for r in sel],
                         yerr=np.nan_to_num([r[f"{metric}_std"] for r in sel]),
                         marker="o", capsize=3, label=method)
      own = [r for r in seed_rows if r["method"] == method]
      ax.scatter([r["epochs"] for r in own],
                 [r[f"validation_{metric}"] for r in own], s=8, alpha=0.4,
                 color=line[0].get_color())
    ax.axvline(chosen, color="grey", linestyle="--", linewidth=1)
    ax.set(xlabel="epochs (each run's cosine schedule ends there)",
           ylabel=f"validation {tables.METRIC_NAMES[metric]}", xscale="log",
           xticks=budgets)
    ax.set_xticklabels([str(b) for b in budgets])
    ax.minorticks_off()
    ax.legend()
  edge = "dashed" + ("" if convergence_shown
                     else "; the largest run: convergence not shown")
  fig.suptitle(f"selected checkpoint, {len({r['seed'] for r in seed_rows})} "
               f"selection seeds; chosen budget {chosen} epochs ({edge})")
  fig.tight_layout()
  figures.save_figure(fig, path)
