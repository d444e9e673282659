"""The experiments' tables as pure functions of per-seed rows.

Each finished run (its results.json) becomes one row of `<out>_<experiment>_
seeds.csv` (`seed_row`, `budget_seed_row`, written exactly); every table is a pure
function of those rows (`main_tables`, `coarseness_tables`,
`similarity_tables`, `validation_cost`, `budget_tables`), so `read_seeds` and the same function recompute it from
the CSV: mean and sample std over seeds, comparisons paired by seed
(`stats.comparison_rows`). Writing them as Markdown, their notes and the
figures: `report`. Nothing here runs a model or draws.
"""

import csv
import io
import math
from typing import List, Mapping, Sequence

import numpy as np

from coarseseg_jax import evaluate
from coarseseg_jax import filesystem
from coarseseg_jax.experiments import methods
from coarseseg_jax.experiments import stats

# The tables' metrics: evaluate.METRICS but the learned superpixels' ASA.
METRICS = tuple(m for m in evaluate.METRICS if m != "superpixel_asa")
# Assignment diagnostics reported by the similarity sweep (validation).
DIAGNOSTICS = tuple(d for d in evaluate.DIAGNOSTICS
                    if not d.endswith("parent_share"))
STATS = [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
TESTED = ("boundary_recall", "accuracy")  # Metrics of the comparisons.
# How the tables and figures name the metrics.
METRIC_NAMES = {"accuracy": "pixel accuracy",
                "boundary_recall": "boundary recall",
                "boundary_f1": "boundary F1", "asa": "ASA", "miou": "mIoU"}
KEYS = ("option", "kernel", "lmbda", "kappa")  # Swept values of a run.
# Every test metric of results.json (means over images; mIoU of the split).
TEST_METRICS = tuple(evaluate.PER_IMAGE_METRICS) + ("miou_dataset",)
_TEXT = ("method", "param", "option", "validation_labels",
         "machine")  # String columns.
_INTS = ("seed", "epochs")  # Integer columns.
# The budget rule: a budget is enough once no larger budget's mean
# validation metric is this much (absolute) above its own (`chosen_budget`).
BUDGET_TOLERANCE = 0.01
BUDGET_COLUMNS = (["method", "epochs", "n_seeds", "gain", "later_gain",
                   "chosen", "selected_step_mean"]
                  + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")])
COMPARISON_COLUMNS = [
    "metric", "n_pairs", "mean", "reference_mean", "mean_diff", "ci_low",
    "ci_high", "p_paired", "p_paired_holm", "p_welch", "margin", "p_tost",
    "p_tost_holm", "verdict"]
MAIN_COLUMNS = ["method", "param", "n_seeds"] + STATS


def mean_of(results: dict, split: str, name: str) -> float:
  """`name`'s mean over images on `split` in results.json (NaN if absent;
  validation: at the checkpoint the run selected)."""
  summary = results.get(split) or {}
  return _number(summary.get(f"{name}_mean", summary.get(name)))


def _number(value) -> float:
  """A results.json value as a float, NaN where it is None (not recorded)."""
  return math.nan if value is None else float(value)


def seed_row(method: str, params: dict, seed: int, results: dict,
             validation_labels: str = "fine",
             validation: Sequence[str] = METRICS,
             test: Sequence[str] = TEST_METRICS) -> dict:
  """One run as a row of `_seeds.csv`.

  Columns: method, param (its workdir name), the swept values `KEYS` (''
  where not swept), seed, validation_labels, `validation_<m>` (at the
  checkpoint the run selected) for m in `validation` and `test_<m>` for m
  in `test` (NaN where results.json has none), then how well it fits its
  training labels (`train_accuracy`: its last epoch's mean training
  accuracy; NaN where results.json has none: runs trained before it was
  kept, 2026-12-07), what its training cost (results.json's
  `train_seconds`, all of the run's parts; NaN where not counted: runs
  trained before 2026-12-07), last the machine that
  trained it (`host.machine`; '' where results.json does not record it:
  runs trained before 2026-12-06).
  """
  row = {"method": method, "param": methods.param_name(params)}
  row.update({k: params.get(k, "") for k in KEYS})
  row.update(seed=int(seed), validation_labels=validation_labels)
  for split, names in (("validation", validation), ("test", test)):
    row.update({f"{split}_{m}": mean_of(results, split, m) for m in names})
  for key in ("train_accuracy", "train_seconds"):
    row[key] = _number(results.get(key))
  row["machine"] = results.get("machine", "")
  return row


def read_seeds(path) -> List[dict]:
  """The rows of a `_seeds.csv` as `seed_row` made them (seed and epochs
  ints, text columns strings, '' where a value was not swept, the rest
  floats)."""
  def parse(line, key, text):
    try:
      if key in _INTS:
        return int(text)
      return text if key in _TEXT or text == "" else float(text)
    except (TypeError, ValueError):
      raise ValueError(f"{path}, line {line}: {key}={text!r} is not a "
                       "number.") from None
  reader = csv.DictReader(io.StringIO(filesystem.path(path).read_text()))
  if not {"method", "seed"} <= set(reader.fieldnames or ()):
    raise ValueError(f"{path} is no _seeds.csv (no method and seed columns).")
  return [{k: parse(i + 2, k, v) for k, v in row.items()}
          for i, row in enumerate(reader)]


def csv_text(rows: Sequence[dict], columns: Sequence[str],
             exact: bool = False) -> str:
  """A CSV of `columns`; floats to 6 significant digits, or `exact` (repr:
  read back bit for bit)."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(columns)
  for row in rows:
    writer.writerow([(repr(float(row[c])) if exact else f"{row[c]:.6g}")
                     if isinstance(row[c], float) else row[c]
                     for c in columns])
  return buffer.getvalue()


def write_csv(path, rows: Sequence[dict], columns: Sequence[str],
              exact: bool = False) -> None:
  filesystem.write_bytes(path, csv_text(rows, columns, exact))


def main_tables(rows: Sequence[dict],
                margin: float = stats.EQUIVALENCE_MARGIN):
  """(summary rows, comparisons) of the main table from its seed rows.

  Every method against `methods.REFERENCE` and against
  `methods.SECOND_REFERENCE` (each pair of methods once), and each refined
  method against the method whose labels it learned from
  (`Method.refined_from`: the second round against the first), and each
  method against its `Method.against`, in `TESTED`.
  """
  by = {k[0]: v for k, v in stats.groups(rows, ("method",)).items()}
  refs = (methods.REFERENCE, methods.SECOND_REFERENCE)
  pairs = [({"method": m, "reference": ref}, runs, by[ref])
           for m, runs in by.items() for ref in refs
           if ref in by and m != ref and (m, ref) != refs]
  more = [(m, spec.refined_from) for m, spec in methods.METHODS.items()
          if spec.refined_from]
  more += [(m, ref) for m, spec in methods.METHODS.items()
           for ref in spec.against]
  pairs += [({"method": m, "reference": ref}, by[m], by[ref])
            for m, ref in more if m in by and ref in by and ref not in refs]
  return (stats.summary_rows(rows, ("method", "param"), METRICS),
          stats.comparison_rows(pairs, TESTED, margin))


def coarseness_tables(rows: Sequence[dict],
                      margin: float = stats.EQUIVALENCE_MARGIN):
  """(summary rows, comparisons): hcfcn_slic against hcfcn per kernel."""
  by = stats.groups(rows, ("method", "kernel"))
  pairs = [({"kernel": k, "method": m, "reference": "hcfcn"}, runs,
            by[("hcfcn", k)]) for (m, k), runs in by.items()
           if m == "hcfcn_slic" and ("hcfcn", k) in by]
  return (stats.summary_rows(rows, ("method", "kernel"), METRICS),
          stats.comparison_rows(pairs, TESTED, margin))


def similarity_tables(rows: Sequence[dict], metric: str,
                      margin: float = stats.EQUIVALENCE_MARGIN):
  """(validation summary per option, with `selected` by mean `metric`;
  each option against `dot`, the authors' similarity, on validation)."""
  summary = stats.summary_rows(rows, ("option",), METRICS + DIAGNOSTICS,
                               "validation")
  scores = np.array([r[f"{metric}_mean"] for r in summary])
  best = int(np.nanargmax(scores)) if np.isfinite(scores).any() else -1
  for i, row in enumerate(summary):
    row["selected"] = int(i == best)
  by = {k[0]: v for k, v in stats.groups(rows, ("option",)).items()}
  pairs = [({"option": o, "reference": "dot"}, runs, by["dot"])
           for o, runs in by.items() if o != "dot" and "dot" in by]
  return summary, stats.comparison_rows(pairs, tuple(dict.fromkeys(
      (metric,) + TESTED)), margin, split="validation")


def validation_cost(fine: Sequence[dict], coarse: Sequence[dict],
                    margin: float = stats.EQUIVALENCE_MARGIN) -> List[dict]:
  """Per method, selection on coarse against fine validation labels (main
  table seed rows of each): differences coarse - fine of the test metrics."""
  a = {k[0]: v for k, v in stats.groups(coarse, ("method",)).items()}
  b = {k[0]: v for k, v in stats.groups(fine, ("method",)).items()}
  return stats.comparison_rows(
      [({"method": m, "param_coarse": a[m][0]["param"],
         "param_fine": runs[0]["param"]}, a[m], runs)
       for m, runs in b.items() if m in a], TESTED, margin)


# The comparison whose interval `--ci_target` narrows by adding seeds
# (issue 41): the regularized model against FCN-16, test accuracy.
CI_PAIR = ("hcfcn_slic", "fcn", "accuracy")


def ci_half_width(rows: Sequence[dict], method: str = CI_PAIR[0],
                  reference: str = CI_PAIR[1], metric: str = CI_PAIR[2],
                  split: str = "test") -> float:
  """Half the width of the paired `stats.LEVEL` CI of `method` -
  `reference` in `<split>_<metric>`, over the seeds both have in the seed
  rows `rows` (`seed_row`); inf with fewer than 2 finite pairs (no
  interval yet)."""
  values = {m: {r["seed"]: r[f"{split}_{metric}"] for r in rows
                if r["method"] == m} for m in (method, reference)}
  _, a, b = stats.align(values[method], values[reference])
  paired = stats.paired_t(a, b)
  half = (paired.ci_high - paired.ci_low) / 2
  return float(half) if math.isfinite(half) else math.inf


def budget_seed_row(method: str, params: dict, seed: int, results: dict,
                    validation_labels: str = "fine") -> dict:
  """A run of the budget experiment as a row of its `_seeds.csv`: the
  `seed_row` columns with validation metrics only (selection runs report no
  test figures), after `param` its epochs, then the step of the checkpoint
  it selected (NaN if results.json has none), last its training accuracy,
  cost and machine."""
  row = seed_row(method, params, seed, results, validation_labels, test=())
  last = {k: row.pop(k) for k in ("train_accuracy", "train_seconds",
                                  "machine")}
  return {"method": row.pop("method"), "param": row.pop("param"),
          "epochs": int(params["epochs"]), **row,
          "selected_step": _number(results.get("selected_step")),
          **last}


def chosen_budget(means: Mapping[int, float],
                  tolerance: float = BUDGET_TOLERANCE) -> int:
  """The smallest budget beyond which the mean validation metric gains less
  than `tolerance`: the smallest b whose mean no larger budget exceeds by
  `tolerance` or more (budgets with a NaN mean are left out). The largest
  budget meets the rule by default: chosen, it shows no convergence.

  `means`: epochs -> mean validation metric over seeds. ValueError if no
  mean is finite.
  """
  budgets = sorted(b for b, v in means.items() if math.isfinite(v))
  if not budgets:
    raise ValueError("no budget has a finite mean validation metric.")
  for i, b in enumerate(budgets):
    if all(means[c] - means[b] < tolerance for c in budgets[i + 1:]):
      return b
  return budgets[-1]  # Unreachable: the last always qualifies.


def budget_tables(rows: Sequence[dict], metric: str = "accuracy",
                  tolerance: float = BUDGET_TOLERANCE):
  """(summary rows, the chosen budget per method, the chosen budget).

  Summary: one row per method (in order of appearance) and budget
  (ascending), `BUDGET_COLUMNS`: validation mean / sample std over seeds,
  `gain` (the mean `metric` minus the previous budget's; NaN at the first),
  `later_gain` (the largest later budget's mean minus this one; NaN at the
  last), `chosen` (1 at the method's `chosen_budget`) and the mean
  selected step. The chosen budget: the largest of the methods' (each
  method has stopped gaining by it).
  """
  summary = stats.summary_rows(rows, ("method", "epochs"), METRICS,
                               "validation")
  steps = {k: [r["selected_step"] for r in g] for k, g in
           stats.groups(rows, ("method", "epochs")).items()}
  order = list(dict.fromkeys(r["method"] for r in summary))
  summary.sort(key=lambda r: (order.index(r["method"]), r["epochs"]))
  chosen = {}
  for method in order:
    own = [r for r in summary if r["method"] == method]
    means = {r["epochs"]: r[f"{metric}_mean"] for r in own}
    chosen[method] = chosen_budget(means, tolerance)
    for i, row in enumerate(own):
      later = [r[f"{metric}_mean"] - row[f"{metric}_mean"] for r in own[i + 1:]]
      row["gain"] = (row[f"{metric}_mean"] - own[i - 1][f"{metric}_mean"]
                     if i else math.nan)
      row["later_gain"] = float(np.nanmax(later)) if later and any(
          math.isfinite(v) for v in later) else math.nan
      row["chosen"] = int(row["epochs"] == chosen[method])
      finite = [s for s in steps[(method, row["epochs"])] if math.isfinite(s)]
      row["selected_step_mean"] = (float(np.mean(finite)) if finite
                                   else math.nan)
  return ([{k: r[k] for k in BUDGET_COLUMNS} for r in summary], chosen,
          max(chosen.values()))
