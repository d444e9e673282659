r"""The experiments: the main table, the coarseness sweep, the similarity sweep.

  python -m coarseseg_jax.experiments --experiment=main|coarseness|similarity

(README, "Experiments", has the variants.) Without `--config` the runs use
the synthetic dataset sized by `methods.FULL_SYNTHETIC`, with it the
config's. Each run is a method of `methods.METHODS` with its swept values
and seed, trained on coarse labels (except `hcfcn_fine`), tested on fine
ones, in its own workdir <workdir_root>/<dataset>/<experiment>[_quick]
[_e<n>][_coarseval]/<method>/<params>/seed<k>; `<out>/<dataset>_
<experiment>_runs.json` lists each run's `coarseseg_jax.main` command. A
finished run is skipped, an interrupted one resumes, a workdir of another
config stops the runner. Each experiment writes `<dataset>_<experiment>_
seeds.csv`, one row per reported run, and its tables (`coarseseg_jax.report`:
main `<dataset>_coarse*`, `_coarseness*`, `_similarity*`).

Reported runs use seeds 0..--seeds-1, selection never: lambda and kappa are
swept on `methods.selection_seeds` (100, 101, ...), by a VALIDATION metric
(--select_metric) of the checkpoint each run kept, widening a grid whose
winner is at its edge (`sweep`); the similarity experiment runs on
selection seeds too. --validation_labels=coarse selects on coarse
validation labels (no fine labels needed; tables `<dataset>_coarseval_*`);
`both` runs both, and main writes `<dataset>_validation_labels.{csv,md}`.
"""

import dataclasses
import logging
import os
import time
from typing import Dict, List, Optional, Sequence

from coarseseg_jax import xla_flags  # pylint: disable=unused-import

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import jax
import numpy as np
from ml_collections import config_flags
import tqdm

from coarseseg_jax import cli
from coarseseg_jax import errors
from coarseseg_jax import methods
from coarseseg_jax import report
from coarseseg_jax import stats
from coarseseg_jax import workdir as workdir_lib
from coarseseg_jax import writers
from coarseseg_jax.configs import synthetic

log = logging.getLogger("coarseseg_jax.experiments")  # Not __main__.


class Runner:
  """Runs (or skips) single runs under `root`; remembers what it did.

  Args:
    base: the base config (sizes included).
    root: the experiment's workdir root.
    config_file, base_overrides: how the base is made on the command line
      (for each run's `coarseseg_jax.main` command).
    bar: a progress bar to advance by one a run (default none).
  """

  def __init__(self, base, root: str, config_file: str = "configs/synthetic.py",
               base_overrides: Optional[Dict] = None, bar=None):
    self.base, self.root = base, root
    self.config_file, self.base_overrides = config_file, base_overrides or {}
    self.records: List[dict] = []
    self.bar = bar or tqdm.tqdm(disable=True)

  def workdir(self, method: str, params: dict, seed: int) -> str:
    return os.path.join(self.root, method, methods.param_name(params),
                        f"seed{seed}")

  def run(self, method: str, params: dict, seed: int,
          extra: Optional[methods.Delta] = None) -> dict:
    """results.json of the run, training it first unless it is finished.
    `extra`: more dotted overrides (a refined method's data.refined_dir)."""
    delta = {**methods.run_delta(method, params, seed), **(extra or {})}
    config = methods.apply(self.base, delta)
    workdir, tic = self.workdir(method, params, seed), time.time()
    command = methods.command_line(self.config_file, self.base_overrides,
                                   delta, workdir)
    results_path = workdir_lib.path(workdir) / "results.json"
    # TensorFlow loads here, not at import: flag errors stay one fast line.
    from coarseseg_jax import config_validation  # pylint: disable=g-import-not-at-top
    from coarseseg_jax import train  # pylint: disable=g-import-not-at-top
    if results_path.exists():
      config_validation.resolve_refined(config.data)  # As training does.
      workdir_lib.check_config(workdir, config)  # Refuses another config.
      status, results = "skipped", workdir_lib.read_json(results_path)
    else:
      status = "trained"
      log.info("training %s\n  = %s", workdir, command)
      results = train.train_and_evaluate(config, workdir)
    log.info("%s %s (%.0f s)", status, workdir, time.time() - tic)
    self.records.append({"workdir": workdir, "status": status,
                         "seconds": round(time.time() - tic, 1),
                         "command": command})
    self.bar.update(1)
    return results


def refined_labels(runner: Runner, method: str, params: dict, seed: int
                   ) -> str:
  """The train split refined by `method`'s run (`params`, `seed`), written
  into its workdir unless it is there (`--mode=refine`); returns the dir."""
  from coarseseg_jax import refine  # pylint: disable=g-import-not-at-top
  from coarseseg_jax.datasets import refined as refined_data  # pylint: disable=g-import-not-at-top
  source = runner.workdir(method, params, seed)
  out = os.path.join(source, methods.REFINED_SUBDIR)
  split = runner.base.data.train_split
  command = (f"python -m coarseseg_jax.main --workdir={source} --mode=refine"
             f" --split={split} --output_dir={out}")
  status, tic = "skipped", time.time()
  if not workdir_lib.path(refined_data.report_path(out, split)).exists():
    status = "refined"
    log.info("refining %s\n  = %s", source, command)
    config = methods.apply(runner.base,
                           methods.run_delta(method, params, seed))
    report = refine.run(config, source, out, split=split)
    log.info("%s", report["line"])
  runner.records.append({"workdir": out, "status": status,
                         "seconds": round(time.time() - tic, 1),
                         "command": command})
  return out


def sweep(runner: Runner, method: str, key: str, grid: Sequence[float],
          select_seeds: Sequence[int], seeds: Sequence[int], metric: str,
          widen_limit: int = 0):
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
    for value in [v for v in grid if v not in scores]:
      values = [report.mean_of(runner.run(method, {key: value}, s),
                               "validation", metric) for s in select_seeds]
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


def run_main(runner: Runner, setup: methods.Setup, seeds: Sequence[int],
             select_seeds: Sequence[int], out: str, metric: str,
             names: Sequence[str] = methods.MAIN_METHODS,
             margin: float = stats.EQUIVALENCE_MARGIN) -> List[dict]:
  """Trains (or reuses) every run of the main table; writes its files;
  returns its seed rows (`report.seed_row`)."""
  chosen, results, sweep_rows, infos = {}, {}, [], []
  grids = {"hcfcn_slic": ("lmbda", setup.lambdas),
           "hcfcn_slicmap": ("kappa", setup.kappas)}
  for method in names:
    if method in grids:
      key, grid = grids[method]
      chosen[method], results[method], rows, info = sweep(
          runner, method, key, grid, select_seeds, seeds, metric,
          setup.widen_limit)
      sweep_rows += rows
      infos.append(info)
      continue
    chosen[method] = {}
    for key in methods.SWEPT.get(method, ()):
      source = "hcfcn_slicmap" if key == "kappa" else "hcfcn_slic"
      chosen[method][key] = chosen[source][key]
    source = methods.REFINED_FROM.get(method)
    results[method] = [runner.run(method, chosen[method], s, None if (
        source is None) else {"data.refined_dir": refined_labels(
            runner, source, chosen[source], s)}) for s in seeds]
  labels = runner.base.data.validation_labels
  seed_rows = [report.seed_row(m, chosen[m], s, r, labels)
               for m in names for s, r in zip(seeds, results[m])]
  report.write_main(out, runner, setup, chosen, seed_rows, sweep_rows, infos,
                    seeds, select_seeds, metric, margin)
  return seed_rows


def run_coarseness(runner: Runner, setup: methods.Setup, seeds: Sequence[int],
                   out: str, lmbda: float,
                   margin: float = stats.EQUIVALENCE_MARGIN) -> List[dict]:
  """hcfcn and hcfcn_slic at every erosion kernel; writes its files."""
  labels = runner.base.data.validation_labels
  rows = []
  for kernel in setup.kernels:
    for method, params in (("hcfcn", {"kernel": kernel}),
                           ("hcfcn_slic", {"kernel": kernel, "lmbda": lmbda})):
      rows += [report.seed_row(method, params, s,
                               runner.run(method, params, s), labels)
               for s in seeds]
  report.write_coarseness(out, runner, setup, rows, seeds, lmbda, margin)
  return rows


def run_similarity(runner: Runner, setup: methods.Setup, seeds: Sequence[int],
                   out: str, metric: str,
                   options: Sequence[str] = tuple(methods.SIMILARITY_OPTIONS),
                   margin: float = stats.EQUIVALENCE_MARGIN) -> List[dict]:
  """hcfcn_slic with each similarity option on selection seeds; the table
  on validation (no test figure is written)."""
  labels = runner.base.data.validation_labels
  rows = []
  for option in options:
    params = {"option": option, "lmbda": setup.similarity_lambda}
    rows += [report.seed_row("hcfcn_slic", params, s,
                             runner.run("hcfcn_slic", params, s), labels,
                             report.METRICS + report.DIAGNOSTICS, test=())
             for s in seeds]
  return report.write_similarity(out, runner, setup, rows, seeds, metric,
                                 margin)


_EXPERIMENT = flags.DEFINE_enum(
    "experiment", "main", ["main", "coarseness", "similarity"],
    "Which experiment.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A config file (or shipped config's name) whose dataset "
    "and sizes the runs use (default: the synthetic FULL setup).")
_OUT = flags.DEFINE_string("out", "results", "Tables and figures go here.")
_WORKDIR_ROOT = flags.DEFINE_string("workdir_root", "workdirs/experiments",
                                    "One workdir per run under this.")
_QUICK = flags.DEFINE_bool("quick", False, "A tiny model and 1 epoch (tests).")
_SEEDS = flags.DEFINE_integer(
    "seeds", None, "Number of seeds (default: setup): reported runs 0..n-1; "
    "similarity (a selection): 100..100+n-1.")
_SWEEP_SEEDS = flags.DEFINE_integer(
    "sweep_seeds", None, "Selection seeds of the lambda/kappa sweeps, "
    "100..100+n-1 (default: setup).")
_WIDEN = flags.DEFINE_integer(
    "widen_limit", None, "Values a sweep may add beyond its grid's edge "
    "(default: setup).")
_LABELS = flags.DEFINE_enum(
    "validation_labels", None, ["fine", "coarse", "both"], "Labels of "
    "checkpoint and sweep selection (default: the config's "
    "data.validation_labels); both: the experiment once with each.")
_MARGIN = flags.DEFINE_float(
    "margin", stats.EQUIVALENCE_MARGIN, "Equivalence margin of the TOSTs "
    "(absolute), fixed before looking at results.")
_SELECT = flags.DEFINE_enum("select_metric", "accuracy", list(report.METRICS),
                            "Validation metric choosing lambda, kappa and "
                            "the similarity option.")
_LAMBDA = flags.DEFINE_float("coarseness_lambda", None,
                             "lambda of hcfcn_slic in the coarseness sweep.")
_METHODS = flags.DEFINE_list(
    "methods", None, "main: only these methods (default all; hcfcn always).")
_EPOCHS = flags.DEFINE_integer(
    "num_epochs", None, "Epochs of every run instead of the setup's; the "
    "runs go to <experiment>_e<n> workdirs.")
_LAMBDAS = flags.DEFINE_list("lambdas", None, "main: lambda grid to sweep.")
_KAPPAS = flags.DEFINE_list("kappas", None, "main: kappa grid to sweep.")
_OPTIONS = flags.DEFINE_list(
    "options", None, "similarity: only these options of "
    "methods.SIMILARITY_OPTIONS (default all).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (default: "
                                "the config's, data/).")
_CACHE = flags.DEFINE_string(
    "jax_cache_dir", None, "Persistent compilation cache (default "
    "$JAX_COMPILATION_CACHE_DIR if set, else <workdir_root>/jax_cache; empty "
    "= off).")


def _base_config():
  """(base config, its config file, its overrides, dataset tag)."""
  from coarseseg_jax import config_validation  # pylint: disable=g-import-not-at-top
  if _CONFIG.value is None:
    config_file = "configs/synthetic.py"
    overrides = dict(methods.QUICK_SYNTHETIC if _QUICK.value
                     else methods.FULL_SYNTHETIC)
    base = synthetic.get_config()
  else:
    config_file = cli.flag_config_file("config")
    base = _CONFIG.value
    overrides = dict(cli.config_overrides())
    if _QUICK.value:
      overrides.update(methods.QUICK_SYNTHETIC if base.data.dataset ==
                       "synthetic" else methods.QUICK_ANY)
  if _DATA_DIR.value:
    overrides["data.data_dir"] = _DATA_DIR.value
  if _EPOCHS.value:
    overrides["train.num_epochs"] = _EPOCHS.value
  base = methods.apply(base, overrides)
  config_validation.resolve_num_classes(base)
  tag = base.data.dataset
  if base.data.manual_dir:
    tag += "-" + os.path.basename(os.path.normpath(base.data.manual_dir))
  return base, config_file, overrides, tag


def _setup() -> methods.Setup:
  setup = methods.QUICK if _QUICK.value else methods.FULL
  for name, flag in (("lambdas", _LAMBDAS), ("kappas", _KAPPAS),
                     ("sweep_seeds", _SWEEP_SEEDS), ("widen_limit", _WIDEN)):
    value = flag.value
    if value is not None:
      setup = dataclasses.replace(setup, **{name: tuple(map(float, value)) if
                                            isinstance(value, list) else value})
  return setup


def _run(experiment: str) -> None:
  from coarseseg_jax import config_validation  # pylint: disable=g-import-not-at-top
  base, config_file, overrides, tag = _base_config()
  setup = _setup()
  names = methods.select_methods(_METHODS.value)
  options = _OPTIONS.value or list(methods.SIMILARITY_OPTIONS)
  unknown = sorted(set(options) - set(methods.SIMILARITY_OPTIONS))
  if unknown:
    raise app.UsageError(f"--options: unknown {unknown}; choose from "
                         f"{list(methods.SIMILARITY_OPTIONS)}.")
  n = _SEEDS.value or {
      "main": setup.seeds, "coarseness": setup.coarseness_seeds,
      "similarity": setup.similarity_seeds}[experiment]
  default = base.data.validation_labels
  variants = {"both": ["fine", "coarse"], None: [default]}.get(
      _LABELS.value, [_LABELS.value])
  try:
    seeds = (methods.selection_seeds(n) if experiment == "similarity"
             else methods.report_seeds(n))
    select = methods.selection_seeds(setup.sweep_seeds)
  except ValueError as e:
    raise app.UsageError(f"--seeds / --sweep_seeds: {e}") from None
  if not _MARGIN.value > 0:
    raise app.UsageError(f"--margin={_MARGIN.value} must be > 0.")
  if ("coarse" in variants
      and _SELECT.value not in config_validation.COARSE_SELECTABLE):
    raise app.UsageError(f"--select_metric={_SELECT.value} needs fine "
                         "validation labels (coarse ones have no boundaries).")
  root = experiment + ("_quick" if _QUICK.value else "") + (
      f"_e{_EPOCHS.value}" if _EPOCHS.value else "")
  bar = tqdm.tqdm(total=len(variants) * methods.num_runs(
      experiment, setup, names, len(seeds), len(options)), desc="runs",
                  unit="run")
  tic, records, rows = time.time(), [], {}
  for labels in variants:
    suffix = "" if labels == "fine" else "_coarseval"
    v_overrides = dict(overrides)
    if labels != default:
      v_overrides["data.validation_labels"] = labels
    runner = Runner(methods.apply(base, {"data.validation_labels": labels}),
                    os.path.join(_WORKDIR_ROOT.value, tag, root + suffix),
                    config_file, v_overrides, bar)
    out = os.path.join(_OUT.value, tag + suffix)
    if experiment == "main":
      rows[labels] = run_main(runner, setup, seeds, select, out, _SELECT.value,
                              names, _MARGIN.value)
    elif experiment == "coarseness":
      run_coarseness(runner, setup, seeds, out, setup.coarseness_lambda
                     if _LAMBDA.value is None else _LAMBDA.value,
                     _MARGIN.value)
    else:
      run_similarity(runner, setup, seeds, out, _SELECT.value, options,
                     _MARGIN.value)
    records += runner.records
  bar.close()
  out = os.path.join(_OUT.value, tag)
  if len(rows) == 2:
    report.write_validation_cost(out, rows["fine"], rows["coarse"],
                                 _MARGIN.value)
  trained = sum(r["status"] == "trained" for r in records)
  workdir_lib.write_json(f"{out}_{experiment}_runs.json", {
      "experiment": experiment, "quick": _QUICK.value, "dataset": tag,
      "num_epochs": base.train.num_epochs, "seeds": list(seeds),
      "selection_seeds": list(select), "validation_labels": variants,
      "machine": report.machine(), "seconds": round(time.time() - tic, 1),
      "trained": trained, "runs": records})
  print(f"{experiment}: {trained} runs trained, {len(records) - trained}"
        f" skipped, {time.time() - tic:.0f} s; tables and figures in "
        f"{_OUT.value} ({tag}_*)")


def main() -> None:
  writers.setup_logging()
  cache = _CACHE.value
  if cache is None:
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(
        _WORKDIR_ROOT.value, "jax_cache")
  if cache:
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  experiment = _EXPERIMENT.value
  main_only = [f"--{f.name}" for f in (_METHODS, _LAMBDAS, _KAPPAS,
                                       _SWEEP_SEEDS, _WIDEN)
               if f.value is not None]
  if _OPTIONS.value and experiment != "similarity":
    main_only.append("--options")
  if experiment != "main" and main_only:
    raise app.UsageError(
        f"{', '.join(main_only)}: only for --experiment=main (--options: "
        "--experiment=similarity; the coarseness sweep: "
        "--coarseness_lambda).")
  try:
    methods.select_methods(_METHODS.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  _run(experiment)


if __name__ == "__main__":
  cli.run(main, on_stop=" (The runner skips finished runs.)", on_ctrl_c=(
      "interrupted; finished runs are kept and skipped next time, the run "
      "in flight resumes from its last checkpoint: run the same command to "
      "go on."))
