"""The experiments' files: tables as CSV and Markdown with their notes, and
figures (`coarseseg_jax.experiments.designs` calls the `write_*`).

The numbers come from `tables` (pure functions of the per-seed rows); this
module formats them and says how each was made (data, model, machine, how a
sweep chose); `plots` draws the figures. Nothing here runs a model.
"""

import collections
import math
import os
from typing import Dict, List, Sequence, Tuple

import ml_collections
import numpy as np

from coarseseg_jax import filesystem
from coarseseg_jax.experiments import methods
from coarseseg_jax.experiments import plots
from coarseseg_jax.experiments import stats
from coarseseg_jax.experiments import tables


def _fmt(mean, std) -> str:
  if not np.isfinite(mean):
    return "-"
  return f"{mean:.4f} ± {std:.4f}" if np.isfinite(std) else f"{mean:.4f}"


def _fmt_p(p) -> str:
  return ("-" if not np.isfinite(p) else f"{p:.3f}" if p >= 1e-3
          else f"{p:.0e}")


def _table(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in body]) + "\n"


def markdown_table(rows: Sequence[dict], first: Sequence[Tuple[str, str]],
                   metrics: Sequence[str] = tables.METRICS) -> str:
  """Mean ± std per metric, after the `first` (key, title) columns."""
  return _table([t for _, t in first] + ["seeds"]
                + [tables.METRIC_NAMES.get(m, m) for m in metrics],
                [[str(r[k]) for k, _ in first] + [str(r["n_seeds"])]
                 + [_fmt(r[f"{m}_mean"], r[f"{m}_std"]) for m in metrics]
                 for r in rows])


def comparison_table(rows: Sequence[dict], first: Sequence[Tuple[str, str]]
                     ) -> str:
  """The comparisons of `comparison_rows` as Markdown, with the verdicts."""
  num = lambda x, f=".4f": "-" if not np.isfinite(x) else f"{x:{f}}"
  return _table(
      [t for _, t in first] + ["metric", "mean a", "mean b", "a - b",
                               "p paired", "p Holm", "p Welch",
                               "TOST p (Holm)", "reading"],
      [[str(r[k]) for k, _ in first] + [
          tables.METRIC_NAMES.get(r["metric"], r["metric"]), num(r["mean"]),
          num(r["reference_mean"]), num(r["mean_diff"], "+.4f"),
          _fmt_p(r["p_paired"]), _fmt_p(r["p_paired_holm"]),
          _fmt_p(r["p_welch"]), _fmt_p(r["p_tost_holm"]), r["verdict"]]
       for r in rows])


def machine_note(seed_rows: Sequence[dict]) -> str:
  """The machines that trained a table's runs (their seed rows' `machine`),
  with how many runs each where there are several."""
  counts = collections.Counter(r.get("machine", "") for r in seed_rows)
  parts = [f"{m} ({_runs(n)})" if len(counts) > 1 else m
           for m, n in counts.most_common() if m]
  if counts[""]:
    parts.append(("not recorded" if len(counts) == 1 else
                  f"not recorded for {_runs(counts[''])}")
                 + " (trained before runs recorded their machine, "
                 "2026-12-06; the runs file names each call's)")
  return ("Machine: " if len(counts) == 1 else "Machines: ") + "; ".join(
      parts) + "."


def _ranges(seed_rows: Sequence[dict], key: str, fmt: str, unit: str = ""):
  """Per method (in row order), "`m` lo-hi`unit` (n runs)" of the seed
  rows' finite `key` values formatted with `fmt`; and how many rows have
  none."""
  kept = collections.defaultdict(list)
  for r in seed_rows:
    value = r.get(key, math.nan)
    if isinstance(value, float) and math.isfinite(value):
      kept[r["method"]].append(value)
  parts = [f"`{m}` {min(v):{fmt}}" + (f"-{max(v):{fmt}}" if len(v) > 1
                                      else "") + f"{unit} ({_runs(len(v))})"
           for m, v in kept.items()]
  return parts, len(seed_rows) - sum(map(len, kept.values()))


def _runs(n: int) -> str:
  return f"{n} run" + "s" * (n != 1)


def cost_note(seed_rows: Sequence[dict]) -> str:
  """What a table's runs cost: per method, the range of their seed rows'
  `train_seconds` (training over all of a run's parts) and how many runs
  did not count it."""
  parts, missing = _ranges(seed_rows, "train_seconds", ",.0f", " s")
  if missing:
    parts.append(f"not counted for {_runs(missing)}" if parts else
                 "not counted")
    parts[-1] += (" (trained before 2026-12-07 or resumed from an older "
                  "checkpoint; the runs file has each call's time)")
  return ("Training time a run (all its parts, on the machines above): "
          + "; ".join(parts) + "." if parts else "")


def fit_note(seed_rows: Sequence[dict]) -> str:
  """How well a table's runs fit their training labels: per method, the
  range of their seed rows' `train_accuracy` (the last epoch's); '' where
  no run kept it (trained before 2026-12-07)."""
  parts, missing = _ranges(seed_rows, "train_accuracy", ".3f")
  if not parts:
    return ""
  if missing:
    parts.append(f"not kept for {_runs(missing)} (trained before runs "
                 "kept it, 2026-12-07)")
  return ("Training accuracy over a run's last epoch (the labelled pixels "
          "of its training labels): " + "; ".join(parts) + ".")


def setup_note(base, seeds: Sequence[int], tag: str,
               seed_rows: Sequence[dict], similarity: bool = True,
               kernel: bool = True, epochs: bool = True) -> str:
  """The data, model and schedule of a table's runs (from the base config)
  and the machines that trained them (`seed_rows`); `similarity`: also the
  base's assignment similarity; `kernel`, `epochs`: the base's coarse
  kernel, number of epochs (False where the table sweeps it)."""
  d, m, t = base.data, base.model, base.train
  sizes = d.builder_kwargs
  data = (f"{sizes.image_size}x{sizes.image_size} px {d.dataset} images, "
          f"{sizes.num_train}/{sizes.num_validation}/{sizes.num_test} "
          "train/validation/test" if d.dataset in ("synthetic",
                                                   "texture_mosaic")
          else f"dataset {tag}, {d.crop_size} px training crops")
  schedule = (", learning rate cosine to 0 at the last step"
              if t.lr_schedule == "warmup_cosine" and not t.warmup_steps
              else "")
  sim = ""
  if similarity:
    sim = (f", similarity {m.similarity} (tau {m.tau}"
           + (f", assign_init {m.assign_init}"
              if m.assign_init != "default" else "")
           + (f", parent bias {m.parent_bias}"
              if m.parent_bias is not None else "") + ")")
  coarse = f", coarse kernel {d.coarse_kernel}" if kernel else ""
  return (f"Data: {data}, {m.num_classes} classes{coarse}; model: encoder "
          f"width {m.width}, blocks {tuple(m.stage_blocks)}{sim}; "
          + (f"{t.num_epochs} epochs{schedule}, " if epochs else "")
          + "batch "
          f"{t.batch_size}; seeds {list(seeds)}; checkpoints selected on "
          f"{d.validation_labels} validation labels. "
          + machine_note(seed_rows)
          + "".join(" " + note for note in (cost_note(seed_rows),
                                             fit_note(seed_rows)) if note))


# Method keys the main note names elsewhere (the model family by the
# method's name, train labels in "Trained on ..."), not as departures.
_NAMED_ELSEWHERE = ("model.name", "data.train_labels", "data.refined_fill")


def departure_note(base: ml_collections.ConfigDict,
                   names: Sequence[str]) -> str:
  """Where rows depart from the setup `setup_note` describes (`base`): each
  key of a method's `methods.METHODS` delta whose value is not the base's
  (e.g. the `_authors` rows' size, similarity and learning rate schedule),
  methods with the same departures together; '' where none departs."""
  def value(key):
    node = base
    for part in key.split("."):
      node = node[part]
    return node
  same = lambda a, b: (list(a) == list(b) if isinstance(a, (list, tuple))
                       and isinstance(b, (list, tuple)) else a == b)
  text = lambda v: (str(tuple(v)) if isinstance(v, (list, tuple))
                    else f"{v:g}" if isinstance(v, float) else str(v))
  groups = collections.defaultdict(list)
  for name in names:
    delta = methods.METHODS[name].delta
    parts = tuple(f"{k} {text(v)}" for k, v in delta.items()
                  if k not in _NAMED_ELSEWHERE and not same(v, value(k)))
    if parts:
      groups[parts].append(name)
  if not groups:
    return ""
  return (" Rows run with another config than that (their method's delta, "
          "`methods.METHODS`): " + "; ".join(
              ", ".join(ns) + ": " + ", ".join(parts)
              for parts, ns in groups.items()) + ".")


def sweep_note(infos: Sequence[dict], metric: str, seeds: Sequence[int]
               ) -> str:
  """How each sweep chose (`designs.sweep`'s infos), widening included."""
  parts = []
  for i in infos:
    name = {"lmbda": "lambda"}.get(i["key"], i["key"])
    if len(i["grid"]) == 1:
      parts.append(f"{name} of {i['method']} fixed at {i['chosen']:g}")
      continue
    text = (f"{name} {i['chosen']:g} of {i['method']} from "
            f"{[float(v) for v in i['grid']]} by mean validation {metric} "
            f"over selection seeds {list(seeds)}")
    if i["added"]:
      text += f" (widened by {i['added']} beyond the given grid's edge)"
    if i["edge"]:
      text += f"; still at the grid's {i['edge']} edge: {i['edge_note']}"
    parts.append(text)
  return (" " + "; ".join(parts) + ". Reported runs never use a selection "
          "seed.") if parts else ""


def _write_tables(out: str, name: str, rows, comps, first, comp_first,
                  note: str, margin: float, metrics=tables.METRICS,
                  columns=None, shown=None) -> None:
  """`<out>_<name>.{csv,md}` and `<out>_<name>_tests.csv` (`shown`: the
  rows as the Markdown shows them, default `rows`)."""
  tables.write_csv(f"{out}_{name}.csv", rows,
                   columns or [k for k, _ in first]
            + ["n_seeds"] + [f"{m}_{s}" for m in metrics
                             for s in ("mean", "std")])
  tables.write_csv(f"{out}_{name}_tests.csv", comps,
                   [k for k, _ in comp_first] + tables.COMPARISON_COLUMNS)
  text = markdown_table(rows if shown is None else shown, first, metrics)
  if comps:
    text += "\n" + comparison_table(comps, comp_first) + "\n" + (
        stats.describe(comps, margin))
  filesystem.write_bytes(f"{out}_{name}.md", text + "\n" + note + "\n")


def write_main(out: str, base: ml_collections.ConfigDict,
               setup: methods.Setup, figure_workdirs: Dict[str, str],
               seed_rows: List[dict], sweep_rows: List[dict],
               sweep_infos: List[dict], seeds: Sequence[int],
               select_seeds: Sequence[int], metric: str,
               margin: float) -> None:
  """`<out>_main_seeds.csv`, `<out>_coarse{.csv,.md,_tests.csv,_sweep.csv,
  _predictions.png}`; `base`: the runs' base config; `figure_workdirs`:
  method -> the workdir of the run its figure column shows."""
  tables.write_csv(f"{out}_main_seeds.csv", seed_rows, list(seed_rows[0]),
                   True)
  if sweep_rows:
    tables.write_csv(f"{out}_coarse_sweep.csv", sweep_rows,
                     list(sweep_rows[0]))
  rows, comps = tables.main_tables(seed_rows, margin)
  note = (setup_note(base, seeds, os.path.basename(out), seed_rows)
          + departure_note(base, [r["method"] for r in rows])
          + " Trained on coarse labels (hcfcn_fine: fine; "
          "hcfcn_slic_refined: the train labels its seed's hcfcn_slic run "
          "refined, `--mode=refine`; hcfcn_slic_refined_free: the free fill "
          "of them the coarse-only score ranks first), tested on fine "
          "labels; mean ± sample std over seeds of each run's mean over test "
          "images." + sweep_note(sweep_infos, metric, select_seeds))
  _write_tables(out, "coarse", rows, comps, [("method", "method"),
                                            ("param", "params")],
                [("method", "a"), ("reference", "b")], note, margin)
  ref = methods.REFERENCE
  columns = [(m, plots.samples(w, setup.figure_images))
             for m, w in figure_workdirs.items()]
  columns = sorted([c for c in columns if c[1]], key=lambda c: c[0] != ref)
  if columns:
    plots.predictions_figure(f"{out}_coarse_predictions.png", columns,
                       base.model.num_classes)


def write_validation_cost(out: str, fine: List[dict], coarse: List[dict],
                          margin: float) -> None:
  """`<out>_validation_labels.{csv,md}`: what selecting on coarse labels
  costs (`validation_cost`)."""
  comps = tables.validation_cost(fine, coarse, margin)
  first = [("method", "method"), ("param_coarse", "params (coarse)"),
           ("param_fine", "params (fine)")]
  tables.write_csv(f"{out}_validation_labels.csv", comps,
                   [k for k, _ in first] + tables.COMPARISON_COLUMNS)
  filesystem.write_bytes(f"{out}_validation_labels.md", comparison_table(
      comps, first) + "\n" + stats.describe(comps, margin) + (
          " a: the main table's runs with checkpoints, lambda and kappa "
          "selected on COARSE validation labels; b: on fine ones; test "
          "figures on fine labels, paired by seed.\n"))


def write_coarseness(out: str, base: ml_collections.ConfigDict,
                     setup: methods.Setup, seed_rows, seeds, lmbda,
                     margin: float) -> None:
  """`<out>_coarseness_seeds.csv`, `<out>_coarseness{.csv,.md,.png,
  _tests.csv}`."""
  tables.write_csv(f"{out}_coarseness_seeds.csv", seed_rows,
                   list(seed_rows[0]), True)
  rows, comps = tables.coarseness_tables(seed_rows, margin)
  note = (f"hcfcn_slic: lambda = {lmbda:g}; compared with hcfcn at the same "
          f"kernel. Coarse kernels {list(setup.kernels)}. "
          + setup_note(base, seeds, os.path.basename(out), seed_rows,
                       kernel=False))
  _write_tables(out, "coarseness", rows, comps, [("method", "method"),
                                                ("kernel", "kernel")],
                [("kernel", "kernel"), ("method", "a"), ("reference", "b")],
                note, margin)
  plots.coarseness_figure(f"{out}_coarseness.png", rows, setup.kernels,
                          len(seeds))


def write_similarity(out: str, base: ml_collections.ConfigDict,
                     setup: methods.Setup, seed_rows, seeds, metric,
                     margin: float) -> List[dict]:
  """`<out>_similarity_seeds.csv`, `<out>_similarity{.csv,.md,_tests.csv}`:
  validation only (the choice's evidence); returns the summary rows."""
  tables.write_csv(f"{out}_similarity_seeds.csv", seed_rows,
                   list(seed_rows[0]), True)
  rows, comps = tables.similarity_tables(seed_rows, metric, margin)
  names = tables.METRICS + tables.DIAGNOSTICS
  shown = [dict(r, option=r["option"] + " (selected)" * r["selected"])
           for r in rows]
  note = (f"hcfcn_slic (lambda {setup.similarity_lambda:g}) with each "
          "similarity option of methods.SIMILARITY_OPTIONS on selection "
          "seeds; VALIDATION split, the checkpoint each run selected; mean ± "
          f"sample std over seeds; selected by mean validation {metric}. "
          "Entropy in nats (uniform 2.20), starved: share of coarse cells "
          "receiving less than one pixel of assignment mass. "
          + setup_note(base, seeds, os.path.basename(out), seed_rows,
                       similarity=False))
  _write_tables(out, "similarity", rows, comps, [("option", "option")],
                [("option", "a"), ("reference", "b")], note, margin,
                metrics=names, columns=["option", "n_seeds", "selected"]
                + [f"{m}_{s}" for m in names for s in ("mean", "std")],
                shown=shown)
  return rows


def budget_rule(metric: str, tolerance: float) -> str:
  """The rule `tables.budget_tables` chooses the budget by, in words."""
  name = tables.METRIC_NAMES.get(metric, metric)
  return (f"The chosen budget is the smallest one beyond which mean "
          f"validation {name} gains less than {tolerance:g}: per method, the "
          f"smallest budget that no larger budget's mean (over the selection "
          f"seeds) exceeds by {tolerance:g} or more; then the largest of the "
          "methods' budgets, so that every method has stopped gaining by it.")


def write_budget(out: str, base: ml_collections.ConfigDict,
                 setup: methods.Setup, seed_rows: List[dict],
                 seeds: Sequence[int], metric: str,
                 tolerance: float = tables.BUDGET_TOLERANCE) -> int:
  """`<out>_budget_seeds.csv`, `<out>_budget{.csv,.md,.png}`: validation
  only, on selection seeds; returns the chosen budget (epochs)."""
  tables.write_csv(f"{out}_budget_seeds.csv", seed_rows, list(seed_rows[0]),
                   True)
  rows, per_method, chosen = tables.budget_tables(seed_rows, metric,
                                                  tolerance)
  tables.write_csv(f"{out}_budget.csv", rows, tables.BUDGET_COLUMNS)
  num = lambda x, f="+.4f": "-" if not np.isfinite(x) else f"{x:{f}}"
  names = tables.METRIC_NAMES
  head = ["method", "epochs", "seeds", names[metric] + " (validation)",
          "gain over the previous budget", "largest later gain"] + [
              names[m] for m in tables.METRICS if m != metric] + [
                  "selected step"]
  largest = {m: max(r["epochs"] for r in rows if r["method"] == m)
             for m in per_method}
  # "converged" only where a larger budget shows the gain has stopped.
  mark = lambda r: "" if not r["chosen"] else (
      " (converged)" if r["epochs"] < largest[r["method"]]
      else " (chosen, convergence not shown)")
  body = [[r["method"] + mark(r), str(r["epochs"]),
           str(r["n_seeds"]), _fmt(r[f"{metric}_mean"], r[f"{metric}_std"]),
           num(r["gain"]), num(r["later_gain"])] + [
               _fmt(r[f"{m}_mean"], r[f"{m}_std"])
               for m in tables.METRICS if m != metric] + [
                   num(r["selected_step_mean"], ".0f")] for r in rows]
  unshown = chosen == max(r["epochs"] for r in rows)  # Also of one budget.
  edge = (f" {chosen} epochs is the largest budget run, which meets the "
          "rule by default: convergence is not shown; add larger --budgets."
          if unshown else "")
  name = lambda k: "lambda" if k == "lmbda" else k
  fixed = [f"{m} " + ", ".join(f"{name(k)} {v:g}" for k, v in params.items())
           for m, params in ((m, methods.budget_params(m, setup))
                             for m in per_method) if params]
  note = (budget_rule(metric, tolerance) + " Per method: "
          + ", ".join(f"{m} {b}" for m, b in per_method.items())
          + f". **Chosen budget: {chosen} epochs.**" + edge
          + " Each run's learning rate follows a cosine from "
          f"{base.train.learning_rate:g} to 0 at its own last step "
          "(`train.lr_schedule=warmup_cosine`, no warmup); VALIDATION split, "
          "the checkpoint each run selected (validated every "
          f"{base.train.eval_every_epochs} epochs); mean ± sample std over "
          "selection seeds (no reported run uses one); no test figure is "
          "written." + (" Fixed: " + "; ".join(fixed) + "." if fixed else "")
          + " " + setup_note(base, seeds, os.path.basename(out),
                             seed_rows, epochs=False))
  filesystem.write_bytes(f"{out}_budget.md",
                         _table(head, body) + "\n" + note + "\n")
  plots.budget_figure(f"{out}_budget.png", rows, seed_rows, chosen,
                      convergence_shown=not unshown)
  return chosen
