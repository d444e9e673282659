"""Tables and figures of the experiments (`coarseseg_jax.experiments`).

Pure bookkeeping over finished runs' ``results.json`` dicts: per-seed test
means, mean and sample std (ddof 1) over seeds, Welch's t-test against a
reference method, CSV and Markdown tables, and the figures (predictions side
by side; metrics against the erosion kernel of the coarse labels).
"""

import csv
import functools
import os
import platform
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np

from coarseseg_jax import datasets
from coarseseg_jax import figures
from coarseseg_jax import inference
from coarseseg_jax import input_pipeline

METRICS = ("accuracy", "boundary_recall", "boundary_f1", "asa", "miou")
LABELS = {"accuracy": "pixel accuracy", "boundary_recall": "boundary recall",
          "boundary_f1": "boundary F1", "asa": "ASA", "miou": "mIoU"}


def sample_std(values) -> float:
  values = np.asarray(values, np.float64)
  return float(np.std(values, ddof=1)) if values.size > 1 else float("nan")


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
  """Welch's t-test p-value (NaN with fewer than 2 finite values a side)."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  a, b = a[np.isfinite(a)], b[np.isfinite(b)]
  if a.size < 2 or b.size < 2:
    return float("nan")
  with warnings.catch_warnings(), np.errstate(all="ignore"):
    warnings.simplefilter("ignore")  # Zero variance: NaN, and a warning.
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def per_seed(results: Sequence[dict], metric: str) -> List[float]:
  """Each run's test mean over images of `metric` (NaN where absent)."""
  return [float(r["test"].get(f"{metric}_mean", float("nan")))
          for r in results]


def summary_row(results: Sequence[dict], reference: Optional[Sequence[dict]],
                **keys) -> dict:
  """`keys`, n_seeds, <metric>_mean/_std, p_<metric> against `reference`."""
  row = dict(keys, n_seeds=len(results))
  for metric in METRICS:
    finite = [v for v in per_seed(results, metric) if np.isfinite(v)]
    row[f"{metric}_mean"] = float(np.mean(finite)) if finite else float("nan")
    row[f"{metric}_std"] = sample_std(finite)
  for metric in ("boundary_recall", "accuracy"):
    row[f"p_{metric}"] = (float("nan") if reference is None else welch_p(
        per_seed(results, metric), per_seed(reference, metric)))
  return row


def write_csv(path: str, rows: Sequence[dict], columns: Sequence[str]):
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    for row in rows:
      writer.writerow([f"{row[c]:.6g}" if isinstance(row[c], float)
                       else row[c] for c in columns])


def markdown_table(rows: Sequence[dict], first: Sequence[Tuple[str, str]],
                   note: str) -> str:
  """Mean ± std per metric, p-values against the reference, then `note`."""
  def fmt(mean, std):
    if not np.isfinite(mean):
      return "-"
    return f"{mean:.4f} ± {std:.4f}" if np.isfinite(std) else f"{mean:.4f}"
  def fmt_p(p):
    return ("-" if not np.isfinite(p) else f"{p:.3f}" if p >= 1e-3
            else f"{p:.0e}")
  head = [t for _, t in first] + ["seeds"] + [LABELS[m] for m in METRICS] + [
      "p (boundary recall)", "p (accuracy)"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    cells = [str(r[k]) for k, _ in first] + [str(r["n_seeds"])]
    cells += [fmt(r[f"{m}_mean"], r[f"{m}_std"]) for m in METRICS]
    cells += [fmt_p(r["p_boundary_recall"]), fmt_p(r["p_accuracy"])]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n\n" + note + "\n"


def predictions(config, workdir: str, num_images: int) -> Dict[str, np.ndarray]:
  """The first test images and the run's predictions (cached in workdir)."""
  path = os.path.join(workdir, "figure_predictions.npz")
  if os.path.exists(path):
    with np.load(path) as z:
      return dict(z)
  state, model, _, _ = inference.load_state(config, workdir)
  builder = datasets.get_builder(config.data, config.model.num_classes)
  batch = next(input_pipeline.create_eval_iterator(
      builder, config.data, config.data.test_split,
      config.data.eval_batch_size))
  k = int(min(num_images, batch["mask"].sum()))
  logits, _ = jax.jit(functools.partial(model.apply, train=False))(
      {"params": state.params, "batch_stats": state.batch_stats},
      batch["image"][:k])
  out = {"pred": np.argmax(np.asarray(logits), -1).astype(np.uint8),
         "image": np.round(batch["image"][:k] * 255).astype(np.uint8),
         "height": batch["height"][:k], "width": batch["width"][:k]}
  for key in ("label", "label_fine"):
    out[key] = batch[key][:k].astype(np.uint8)
  np.savez_compressed(path, **out)
  return out


def predictions_figure(path: str, ref: dict,
                       columns: Sequence[Tuple[str, dict]],
                       num_classes: int) -> None:
  """Per test image: image, coarse and fine label, each column's prediction.

  `ref` and `columns` (title, dict) are `predictions` dicts; the image and
  labels drawn are `ref`'s (a coarse-label run's).
  """
  titles = ["image", "coarse label", "fine label"] + [t for t, _ in columns]
  fig = figures.Figure(figsize=(1.9 * len(titles), 2.0 * len(ref["pred"]) + .4))
  axes = fig.subplots(len(ref["pred"]), len(titles), squeeze=False)
  for i, row in enumerate(axes):
    h, w = int(ref["height"][i]), int(ref["width"][i])
    panels = [ref["image"][i, :h, :w] / 255.0] + [
        figures.colorize(x[i, :h, :w], num_classes)
        for x in [ref["label"], ref["label_fine"]] + [p["pred"]
                                                      for _, p in columns]]
    for ax, title, img in zip(row, titles, panels):
      ax.imshow(img, interpolation="nearest")
      ax.axis("off")
      ax.set_title(title if i == 0 else "", fontsize=8)
  fig.tight_layout()
  figures.save_figure(fig, path)


def coarseness_figure(path: str, rows: Sequence[dict],
                      kernels: Sequence[int], num_seeds: int) -> None:
  """Test boundary recall and accuracy (mean ± std) against the kernel size.

  `rows`: `summary_row`s with keys method ('hcfcn' | 'hcfcn_slic') and kernel.
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
           ylabel=f"test {LABELS[metric]}", xticks=list(kernels))
    ax.legend()
  fig.suptitle(f"mean ± std over {num_seeds} seeds")
  fig.tight_layout()
  figures.save_figure(fig, path)


def machine() -> str:
  """Processor, cores, JAX version and backend, for the tables."""
  return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} "
          f"CPU cores, JAX {jax.__version__} on {jax.devices()[0].platform}")


def setup_note(s, b, seeds: Sequence[int], metric: Optional[str],
               sweep_seeds: int, kernels: Optional[Sequence[int]] = None,
               reference: str = "hcfcn",
               swept: Sequence[str] = ("lambda", "kappa")) -> str:
  """The footnote of a table: setup `s`, base config `b`, seeds, selection.

  With `metric`, it names the grids of the `swept` weights (lambda, kappa).
  """
  coarse = (f"coarse kernels {list(kernels)}" if kernels else
            f"coarse kernel {b.data.coarse_kernel}")
  text = (f"Synthetic data: {s.image_size}x{s.image_size} px, {s.num_train}/"
          f"{s.num_validation}/{s.num_test} train/validation/test images, "
          f"{b.model.num_classes} classes, {coarse}; encoder width "
          f"{s.width}, blocks {tuple(s.stage_blocks)}; {s.num_epochs} "
          f"epochs, batch {b.train.batch_size}; seeds {list(seeds)}. Tested "
          "on fine labels; "
          "mean ± sample std over seeds of each run's mean over test images; "
          f"p: Welch's t-test against {reference} on the per-seed means.")
  grids = {"lambda": s.lambdas, "kappa": s.kappas}
  if metric and swept:
    text += (" " + ", ".join(f"{w} from {list(grids[w])}" for w in swept)
             + f", chosen by mean validation {metric} over "
             f"{sweep_seeds or len(seeds)} seed(s).")
  return text + f" Machine: {machine()}."
