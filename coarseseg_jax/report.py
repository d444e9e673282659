"""Tables and figures of the experiments (`coarseseg_jax.experiments`).

Bookkeeping over finished runs' results.json dicts: per-seed test means, mean
and sample std (ddof 1) over seeds, Welch's t-tests against reference
methods, CSV and Markdown tables with their footnotes, and the figures
(predictions side by side, drawn from the arrays each run saved in
figures/samples.npz; metrics against the erosion kernel). Nothing here runs
a model.
"""

import csv
import io
import os
import platform
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np

from coarseseg_jax import figures
from coarseseg_jax import methods
from coarseseg_jax import workdir as workdir_lib

METRICS = ("accuracy", "boundary_recall", "boundary_f1", "asa", "miou")
LABELS = {"accuracy": "pixel accuracy", "boundary_recall": "boundary recall",
          "boundary_f1": "boundary F1", "asa": "ASA", "miou": "mIoU"}
# Assignment diagnostics reported by the similarity sweep (validation).
DIAGNOSTICS = ("a4_entropy", "a8_entropy", "a4_starved_cells",
               "a8_starved_cells")
STATS = [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]


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


def per_seed(results: Sequence[dict], metric: str, split: str = "test"
             ) -> List[float]:
  """Each run's mean over images of `metric` on `split` (NaN if absent)."""
  return [float((r.get(split) or {}).get(f"{metric}_mean", float("nan")))
          for r in results]


def _stats(row: dict, results, names, split: str) -> None:
  for metric in names:
    finite = [v for v in per_seed(results, metric, split) if np.isfinite(v)]
    row[f"{metric}_mean"] = float(np.mean(finite)) if finite else float("nan")
    row[f"{metric}_std"] = sample_std(finite)


def summary_row(results: Sequence[dict], reference: Optional[Sequence[dict]],
                second: Optional[Sequence[dict]] = None, **keys) -> dict:
  """`keys`, n_seeds, <metric>_mean/_std (test), and p-values: `p_<metric>`
  against `reference`, `p2_<metric>` against `second` (boundary recall and
  accuracy)."""
  row = dict(keys, n_seeds=len(results))
  _stats(row, results, METRICS, "test")
  for metric in ("boundary_recall", "accuracy"):
    for prefix, other in (("p", reference), ("p2", second)):
      row[f"{prefix}_{metric}"] = (float("nan") if other is None else welch_p(
          per_seed(results, metric), per_seed(other, metric)))
  return row


def validation_row(results: Sequence[dict], **keys) -> dict:
  """`keys`, n_seeds, and <metric>_mean/_std on VALIDATION (the selected
  checkpoint's), assignment diagnostics included."""
  row = dict(keys, n_seeds=len(results))
  _stats(row, results, METRICS + DIAGNOSTICS, "validation")
  return row


def write_csv(path, rows: Sequence[dict], columns: Sequence[str]) -> None:
  buffer = io.StringIO()
  writer = csv.writer(buffer)
  writer.writerow(columns)
  for row in rows:
    writer.writerow([f"{row[c]:.6g}" if isinstance(row[c], float)
                     else row[c] for c in columns])
  workdir_lib.write_bytes(path, buffer.getvalue())


def _fmt(mean, std) -> str:
  if not np.isfinite(mean):
    return "-"
  return f"{mean:.4f} ± {std:.4f}" if np.isfinite(std) else f"{mean:.4f}"


def _fmt_p(p) -> str:
  return ("-" if not np.isfinite(p) else f"{p:.3f}" if p >= 1e-3
          else f"{p:.0e}")


def markdown_table(rows: Sequence[dict], first: Sequence[Tuple[str, str]],
                   note: str, metrics: Sequence[str] = METRICS,
                   p_columns: Sequence[Tuple[str, str]] = (
                       ("p_boundary_recall", "p (boundary recall)"),
                       ("p_accuracy", "p (accuracy)"))) -> str:
  """Mean ± std per metric, the p-value columns, then `note`."""
  head = ([t for _, t in first] + ["seeds"]
          + [LABELS.get(m, m) for m in metrics] + [t for _, t in p_columns])
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    cells = [str(r[k]) for k, _ in first] + [str(r["n_seeds"])]
    cells += [_fmt(r[f"{m}_mean"], r[f"{m}_std"]) for m in metrics]
    cells += [_fmt_p(r[k]) for k, _ in p_columns]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n\n" + note + "\n"


def machine() -> str:
  """Processor, cores, JAX version and backend, for the tables."""
  return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} "
          f"CPU cores, JAX {jax.__version__} on {jax.devices()[0].platform}")


def setup_note(base, seeds: Sequence[int], tag: str,
               similarity: bool = True) -> str:
  """The data, model and schedule of a table's runs (from the base config);
  `similarity`: also the base's assignment similarity."""
  d, m, t = base.data, base.model, base.train
  sizes = d.builder_kwargs
  data = (f"{sizes.image_size}x{sizes.image_size} px synthetic images, "
          f"{sizes.num_train}/{sizes.num_validation}/{sizes.num_test} "
          "train/validation/test" if d.dataset == "synthetic"
          else f"dataset {tag}, {d.crop_size} px training crops")
  sim = ""
  if similarity:
    sim = (f", similarity {m.similarity} (tau {m.tau}"
           + (f", assign_init {m.assign_init}"
              if m.get("assign_init", "default") != "default" else "")
           + (f", parent bias {m.parent_bias}"
              if m.get("parent_bias") is not None else "") + ")")
  return (f"Data: {data}, {m.num_classes} classes, coarse kernel "
          f"{d.coarse_kernel}; model: encoder width {m.width}, blocks "
          f"{tuple(m.stage_blocks)}{sim}; {t.num_epochs} epochs, batch "
          f"{t.batch_size}; seeds {list(seeds)}. Machine: {machine()}.")


def _samples(workdir: str, k: int) -> List[dict]:
  path = workdir_lib.path(workdir) / "figures" / "samples.npz"
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


def write_main(out: str, runner, setup, names, chosen: Dict[str, dict],
               results: Dict[str, List[dict]], sweep_rows: List[dict],
               seeds: Sequence[int], metric: str, sweep_seeds: int) -> None:
  """`<out>_coarse.{csv,md}`, `_sweep.csv` and `_predictions.png`."""
  ref, second = methods.REFERENCE, methods.SECOND_REFERENCE
  rows = [summary_row(results[m], None if m == ref else results[ref],
                      None if m == second or second not in results
                      else results[second], method=m,
                      param=methods.param_name(chosen[m])) for m in names]
  columns = (["method", "param", "n_seeds"] + STATS
             + ["p_boundary_recall", "p_accuracy", "p2_boundary_recall",
                "p2_accuracy"])
  write_csv(f"{out}_coarse.csv", rows, columns)
  if sweep_rows:
    write_csv(f"{out}_coarse_sweep.csv", sweep_rows, list(sweep_rows[0]))
  grids = {"lambda": ("hcfcn_slic", setup.lambdas),
           "kappa": ("hcfcn_slicmap", setup.kappas)}
  swept = [f"{w} from {list(g)}" for w, (m, g) in grids.items() if m in names]
  note = (setup_note(runner.base, seeds, os.path.basename(out))
          + " Trained on coarse labels (hcfcn_fine: fine), tested on fine "
          "labels; mean ± sample std over seeds of each run's mean over test "
          f"images; p: Welch's t-test against {ref}, p vs {second}: against "
          f"{second}, on the per-seed means.")
  if swept:
    note += (" " + ", ".join(swept) + f", chosen by mean validation {metric} "
             f"over {sweep_seeds or len(seeds)} seed(s).")
  workdir_lib.write_bytes(f"{out}_coarse.md", markdown_table(
      rows, [("method", "method"), ("param", "params")], note,
      p_columns=(("p_boundary_recall", f"p (BR) vs {ref}"),
                 ("p_accuracy", f"p (acc.) vs {ref}"),
                 ("p2_boundary_recall", f"p (BR) vs {second}"),
                 ("p2_accuracy", f"p (acc.) vs {second}"))))
  figure_columns = [(m, _samples(runner.workdir(m, chosen[m], seeds[0]),
                                 setup.figure_images)) for m in names]
  figure_columns = [c for c in figure_columns if c[1]]
  ordered = sorted(figure_columns, key=lambda c: c[0] != ref)
  if ordered:
    predictions_figure(f"{out}_coarse_predictions.png", ordered,
                       runner.base.model.num_classes)


def coarseness_figure(path, rows: Sequence[dict], kernels: Sequence[int],
                      num_seeds: int) -> None:
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


def write_coarseness(out: str, runner, setup, rows, seeds, lmbda) -> None:
  """`<out>_coarseness.{csv,md,png}`."""
  write_csv(f"{out}_coarseness.csv", rows, ["method", "kernel", "n_seeds"]
            + STATS + ["p_boundary_recall", "p_accuracy"])
  note = (f"hcfcn_slic: lambda = {lmbda:g}; p: against hcfcn at the same "
          f"kernel. Coarse kernels {list(setup.kernels)}. "
          + setup_note(runner.base, seeds, os.path.basename(out)))
  workdir_lib.write_bytes(f"{out}_coarseness.md", markdown_table(
      rows, [("method", "method"), ("kernel", "kernel")], note))
  coarseness_figure(f"{out}_coarseness.png", rows, setup.kernels, len(seeds))


def write_similarity(out: str, runner, setup, rows, seeds, metric) -> None:
  """`<out>_similarity.{csv,md}`: validation only (the choice's evidence)."""
  names = METRICS + DIAGNOSTICS
  write_csv(f"{out}_similarity.csv", rows, ["option", "n_seeds", "selected"]
            + [f"{m}_{s}" for m in names for s in ("mean", "std")])
  for row in rows:
    row["option"] = row["option"] + (" (selected)" if row["selected"] else "")
  note = (f"hcfcn_slic (lambda {setup.similarity_lambda:g}) with each "
          "similarity option of methods.SIMILARITY_OPTIONS; VALIDATION split "
          "(fine labels), the checkpoint each run selected; mean ± sample "
          f"std over seeds; selected by mean validation {metric}. Entropy in "
          "nats (uniform 2.20), starved: share of coarse cells receiving less"
          " than one pixel of assignment mass. "
          + setup_note(runner.base, seeds, os.path.basename(out),
                       similarity=False))
  workdir_lib.write_bytes(f"{out}_similarity.md", markdown_table(
      rows, [("option", "option")], note, metrics=names, p_columns=()))
