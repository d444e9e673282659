"""The experiments' designs: which runs each asks the runner for, on which
seeds, and which table it writes.

`sweep` chooses a swept value on the selection seeds and widens a grid whose
winner is at its edge; `run_main` (and `run_main_until`, adding seeds while a
CI is too wide), `run_coarseness`, `run_similarity` and `run_budget` are the
experiments of `python -m coarseseg_jax.experiments`, each writing its files
through `report`. The runs themselves (trained once, reused, archived) are
`runner`'s.
"""

import logging
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from coarseseg_jax.experiments import methods
from coarseseg_jax.experiments import report
from coarseseg_jax.experiments import runner as runner_lib
from coarseseg_jax.experiments import stats
from coarseseg_jax.experiments import tables

log = logging.getLogger("coarseseg_jax.experiments")


def sweep(runner: runner_lib.Runner, method: str, key: str,
          grid: Sequence[float], select_seeds: Sequence[int],
          seeds: Sequence[int], metric: str, widen_limit: int = 0):
  """Chooses `method`'s `key` from `grid` on the selection seeds.

  Each value is trained on every selection seed and scored by the mean
  validation `metric` of its runs (ties: the smaller value). While the
  winner is at an edge, the grid gains the next value beyond that edge
  (`methods.widen`), trained and scored alike, up to `widen_limit` added
  values. A one-value grid is taken as it is (no selection runs). Returns
  (the chosen params, its results on `seeds`, one row per selection run:
  method, param, value, seed, added, validation_<metric>, selected; an
  info dict for `report.sweep_note`).
  """
  grid, added, scores, rows = sorted(float(v) for v in grid), [], {}, []
  best, edge = grid[0], None  # One value: nothing to select, no runs.
  while len(grid) > 1:
    new_values = [v for v in grid if v not in scores]
    ran = iter(runner.run_many([(method, {key: v}, s) for v in new_values
                                for s in select_seeds]))
    for value in new_values:
      values = [tables.mean_of(next(ran), "validation", metric)
                for _ in select_seeds]
      finite = [v for v in values if np.isfinite(v)]
      scores[value] = float(np.mean(finite)) if finite else -np.inf
      rows += [{"method": method, "param": methods.param_name({key: value}),
                "value": value, "seed": s, "added": int(value in added),
                f"validation_{metric}": v}
               for s, v in zip(select_seeds, values)]
    best = max(grid, key=lambda v: scores[v])  # The first (smallest) maximum.
    edge = (None if grid[0] < best < grid[-1]
            else "low" if best == grid[0] else "high")
    new = (methods.widen(grid, edge) if edge and len(added) < widen_limit
           else None)
    if new is None:
      break
    added.append(new)
    grid = sorted(grid + [new])
  for row in rows:
    row["selected"] = int(row["value"] == best)
  info = {"method": method, "key": key, "grid": grid, "added": added,
          "chosen": best, "edge": edge, "edge_note": (
              f"the limit of {widen_limit} added values was reached"
              if len(added) >= widen_limit else "no weight lies below 0")}
  return ({key: best}, [runner.run(method, {key: best}, s) for s in seeds],
          sorted(rows, key=lambda r: (r["value"], r["seed"])), info)


def run_main(runner: runner_lib.Runner, setup: methods.Setup,
             seeds: Sequence[int], select_seeds: Sequence[int], out: str,
             metric: str,
             names: Sequence[str] = methods.MAIN_METHODS,
             margin: float = stats.EQUIVALENCE_MARGIN) -> List[dict]:
  """Trains (or reuses) every run of the main table, method by method in
  the order of `names` (`methods.select_methods`); writes its files in
  table order; returns its seed rows (`tables.seed_row`). With
  `runner.share`, a first pass trains the runs no other process trains
  (waiting only for the sweeps' selection runs, which the choice needs)."""
  if runner.share:
    with runner.skipping_busy():
      _main_runs(runner, setup, seeds, select_seeds, metric, names)
  chosen, results, sweep_rows, infos = _main_runs(
      runner, setup, seeds, select_seeds, metric, names)
  labels = runner.base.data.validation_labels
  table_order = [m for m in methods.MAIN_METHODS if m in names]
  seed_rows = [tables.seed_row(m, chosen[m], s, r, labels)
               for m in table_order for s, r in zip(seeds, results[m])]
  figure_workdirs = {m: runner.workdir(m, chosen[m], seeds[0])
                     for m in table_order}
  infos.sort(key=lambda info: table_order.index(info["method"]))
  sweep_rows.sort(key=lambda row: table_order.index(row["method"]))
  report.write_main(out, runner.base, setup, figure_workdirs, seed_rows,
                    sweep_rows, infos, seeds, select_seeds, metric, margin)
  return seed_rows


def _main_runs(runner: runner_lib.Runner, setup: methods.Setup,
               seeds: Sequence[int], select_seeds: Sequence[int],
               metric: str, names: Sequence[str]):
  """The runs of `run_main`, in order: (each method's chosen params, its
  results a seed (None: another process trains it, within
  `runner.skipping_busy`), the sweeps' rows, their infos)."""
  chosen, results, sweep_rows, infos = {}, {}, [], []
  for method in names:
    spec = methods.METHODS[method]
    if spec.sweeps:
      chosen[method], results[method], rows, info = sweep(
          runner, method, spec.sweeps, methods.grid(setup, spec.sweeps),
          select_seeds, seeds, metric, setup.widen_limit)
      sweep_rows += rows
      infos.append(info)
      continue
    chosen[method] = {p: chosen[methods.SWEEPER[p]][p] for p in spec.takes}
    source, results[method] = spec.refined_from, []
    for s in seeds:
      extra = None
      if source is not None:  # Its training labels: a run of `source`'s.
        refined = runner_lib.refined_labels(
            runner, source, chosen[source], s, labels_needed=not
            runner.finished(method, chosen[method], s),
            subdir=spec.refined_subdir)
        if refined is None:  # Its teacher or refining: another process's.
          results[method].append(None)
          continue
        extra = {"data.refined_dir": refined}
      results[method].append(runner.run(method, chosen[method], s, extra))
  return chosen, results, sweep_rows, infos


def run_main_until(runner: runner_lib.Runner, setup: methods.Setup,
                   seeds: Sequence[int], select_seeds: Sequence[int],
                   out: str, metric: str, names: Sequence[str],
                   margin: float, target: Optional[float], max_seeds: int,
                   widths: List[dict],
                   on_pass: Callable[[Sequence[int]], Any] = lambda s: None
                   ) -> Tuple[List[dict], Sequence[int]]:
  """`run_main`, then again with one reported seed more (every method of
  `names`) while the paired CI of `tables.CI_PAIR` is wider than
  +-`target` and there are fewer than `max_seeds` (target None: once).
  Calls `on_pass(seeds)` before each pass and appends {validation_labels,
  seeds, half_width} to `widths` after it. The stop depends on the data, so
  the final CI's coverage is about, not exactly, 95 %. Returns (the seed
  rows, the seeds they cover)."""
  while True:
    on_pass(seeds)
    rows = run_main(runner, setup, seeds, select_seeds, out, metric, names,
                    margin)
    if target is None:
      return rows, seeds
    width = tables.ci_half_width(rows)
    widths.append({"validation_labels": runner.base.data.validation_labels,
                   "seeds": len(seeds), "half_width": width})
    log.info("%d seeds: the CI of %s - %s test %s is +-%.4f (target "
             "+-%g)", len(seeds), *tables.CI_PAIR, width, target)
    if width <= target or len(seeds) >= max_seeds:
      return rows, seeds
    runner.bar.total = (runner.bar.total or 0) + (
        methods.num_runs("main", setup, names, len(seeds) + 1, 1)
        - methods.num_runs("main", setup, names, len(seeds), 1))
    seeds = methods.report_seeds(len(seeds) + 1)


def run_coarseness(runner: runner_lib.Runner, setup: methods.Setup,
                   seeds: Sequence[int], out: str, lmbda: float,
                   margin: float = stats.EQUIVALENCE_MARGIN) -> List[dict]:
  """hcfcn and hcfcn_slic at every erosion kernel; writes its files."""
  labels = runner.base.data.validation_labels
  specs = [(method, params, s) for kernel in setup.kernels
           for method, params in (("hcfcn", {"kernel": kernel}),
                                  ("hcfcn_slic", {"kernel": kernel,
                                                  "lmbda": lmbda}))
           for s in seeds]
  rows = [tables.seed_row(m, p, s, r, labels)
          for (m, p, s), r in zip(specs, runner.run_many(specs))]
  report.write_coarseness(out, runner.base, setup, rows, seeds, lmbda,
                          margin)
  return rows


def run_similarity(runner: runner_lib.Runner, setup: methods.Setup,
                   seeds: Sequence[int], out: str, metric: str,
                   options: Sequence[str] = tuple(methods.SIMILARITY_OPTIONS),
                   margin: float = stats.EQUIVALENCE_MARGIN) -> List[dict]:
  """hcfcn_slic with each similarity option on selection seeds; the table
  on validation (no test figure is written)."""
  labels = runner.base.data.validation_labels
  specs = [("hcfcn_slic", {"option": option,
                           "lmbda": setup.similarity_lambda}, s)
           for option in options for s in seeds]
  rows = [tables.seed_row(m, p, s, r, labels,
                          tables.METRICS + tables.DIAGNOSTICS, test=())
          for (m, p, s), r in zip(specs, runner.run_many(specs))]
  return report.write_similarity(out, runner.base, setup, rows, seeds,
                                 metric, margin)


def run_budget(runner: runner_lib.Runner, setup: methods.Setup,
               seeds: Sequence[int], out: str, metric: str,
               names: Sequence[str] = methods.BUDGET_METHODS) -> int:
  """Each method at each budget of `setup.budgets` on the selection seeds
  `seeds` (`methods.BUDGET_DELTA`: a cosine schedule ending at each run's
  own last step); writes the budget table (validation only) and returns the
  chosen budget. Runs go cheapest first: every method and seed at a budget
  before the next budget."""
  labels = runner.base.data.validation_labels
  specs = budget_runs(setup, seeds, names)
  rows = [tables.budget_seed_row(m, p, s, r, labels)
          for (m, p, s), r in zip(specs, runner.run_many(
              [spec + (dict(methods.BUDGET_DELTA),) for spec in specs]))]
  return report.write_budget(out, runner.base, setup, rows, seeds, metric)


def budget_runs(setup: methods.Setup, seeds: Sequence[int],
                names: Sequence[str] = methods.BUDGET_METHODS
                ) -> List[Tuple[str, dict, int]]:
  """The budget experiment's runs, (method, params, seed), in the order it
  trains them: every method and seed at a budget before the next."""
  return [(method, {**methods.budget_params(method, setup), "epochs": epochs},
           seed) for epochs in sorted(setup.budgets) for seed in seeds
          for method in names]
