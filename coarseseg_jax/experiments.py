r"""The experiments: the main table, the coarseness sweep, the similarity sweep.

  python -m coarseseg_jax.experiments --experiment=main --out=results/
  python -m coarseseg_jax.experiments --experiment=main \
      --config=configs/folder.py --config.data.manual_dir=my_data
  python -m coarseseg_jax.experiments --experiment=similarity
  python -m coarseseg_jax.experiments --experiment=coarseness

Without `--config` the runs use the synthetic dataset sized by
`methods.FULL_SYNTHETIC`; with it, the config's dataset and sizes (any
`--config.*` override applies to every run). Runs train on coarse labels
(except `hcfcn_fine`) and are tested on fine labels. Each run is a method of
`methods.METHODS` (a named config delta) with its swept values and seed, in
its own workdir <workdir_root>/<dataset>/<experiment>[_quick][_e<n>]/
<method>/<params>/seed<k>; `<out>/<dataset>_<experiment>_runs.json` lists
each run's `coarseseg_jax.main` command, so one cell can be rerun alone.
A finished run is skipped, an interrupted one resumes, and a workdir of
another config stops the runner with one line (its config.json).

`main` (`<dataset>_coarse.{csv,md}`, `_sweep.csv`, `_predictions.png`):
fcn, hcfcn, hcfcn_slic (lambda swept), unet, hcfcn_fine, hcfcn_slic_propagated,
hcfcn_slicmap (kappa swept), hcfcn_slicmap_slic, and hcfcn_dot / hcfcn_dot_slic
(the paper's dot similarity, hcfcn_slic's lambda). Mean and sample std over
seeds of each run's test mean over images; p: Welch's t-test against `hcfcn`
and against `fcn` on the per-seed means. lambda and kappa maximise a
VALIDATION metric (--select_metric, default pixel accuracy) of the checkpoint
each run keeps, averaged over the first --sweep_seeds seeds; test figures
are never looked at. `coarseness` (`<dataset>_coarseness.*`): hcfcn and
hcfcn_slic at each erosion kernel. `similarity` (`<dataset>_similarity.*`):
hcfcn_slic with each of `methods.SIMILARITY_OPTIONS`, validation only.

The tables and figures are made by `coarseseg_jax.report`.
"""

import dataclasses
import logging
import os
import sys
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
from coarseseg_jax import config_validation
from coarseseg_jax import errors
from coarseseg_jax import methods
from coarseseg_jax import report
from coarseseg_jax import train
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
    total: the number of runs expected (the progress bar's length).
  """

  def __init__(self, base, root: str, config_file: str = "configs/synthetic.py",
               base_overrides: Optional[Dict] = None, total: int = 0):
    self.base, self.root = base, root
    self.config_file, self.base_overrides = config_file, base_overrides or {}
    self.records: List[dict] = []
    self.bar = tqdm.tqdm(total=total or None, desc="runs", unit="run",
                         disable=not total)

  def workdir(self, method: str, params: dict, seed: int) -> str:
    return os.path.join(self.root, method, methods.param_name(params),
                        f"seed{seed}")

  def run(self, method: str, params: dict, seed: int) -> dict:
    """results.json of the run, training it first unless it is finished."""
    delta = methods.run_delta(method, params, seed)
    config = methods.apply(self.base, delta)
    workdir, tic = self.workdir(method, params, seed), time.time()
    command = methods.command_line(self.config_file, self.base_overrides,
                                   delta, workdir)
    results_path = workdir_lib.path(workdir) / "results.json"
    if results_path.exists():
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


def validation_metric(results: dict, metric: str) -> float:
  """`metric`'s validation mean at the checkpoint the run selected."""
  value = (results.get("validation") or {}).get(f"{metric}_mean")
  return float("nan") if value is None else float(value)


def sweep(runner: Runner, method: str, candidates: Sequence[dict],
          seeds: Sequence[int], sweep_seeds: int, metric: str):
  """Trains each candidate on the first sweep_seeds seeds (0 = all), picks one.

  Returns (the chosen params, its results on all seeds, one row per candidate:
  method, param, n_seeds, validation_<metric>_mean/_std, selected); ties go
  to the earlier candidate.
  """
  first = list(seeds[:sweep_seeds or len(seeds)])
  rows, scores, done = [], [], []
  for params in candidates:
    done.append([runner.run(method, params, s) for s in first])
    values = [validation_metric(r, metric) for r in done[-1]]
    scores.append(np.nan_to_num(np.nanmean(values), nan=-np.inf))
    rows.append({"method": method, "param": methods.param_name(params),
                 "n_seeds": len(first),
                 f"validation_{metric}_mean": float(np.nanmean(values)),
                 f"validation_{metric}_std": report.sample_std(values)})
  best = int(np.argmax(scores))
  for i, row in enumerate(rows):
    row["selected"] = int(i == best)
  params = candidates[best]
  return params, done[best] + [runner.run(method, params, s)
                               for s in seeds[len(first):]], rows


def run_main(runner: Runner, setup: methods.Setup, seeds: Sequence[int],
             out: str, sweep_seeds: int, metric: str,
             names: Sequence[str] = methods.MAIN_METHODS) -> List[dict]:
  """Trains (or reuses) every run of the main table; writes its files."""
  chosen, results, sweep_rows = {}, {}, []
  grids = {"hcfcn_slic": ("lmbda", setup.lambdas),
           "hcfcn_slicmap": ("kappa", setup.kappas)}
  for method in names:
    if method in grids:
      key, grid = grids[method]
      chosen[method], results[method], rows = sweep(
          runner, method, [{key: v} for v in grid], seeds, sweep_seeds, metric)
      sweep_rows += rows
      continue
    chosen[method] = {}
    for key in methods.SWEPT.get(method, ()):
      source = "hcfcn_slicmap" if key == "kappa" else "hcfcn_slic"
      chosen[method][key] = chosen[source][key]
    results[method] = [runner.run(method, chosen[method], s) for s in seeds]
  report.write_main(out, runner, setup, names, chosen, results, sweep_rows,
                    seeds, metric, sweep_seeds)
  return results


def run_coarseness(runner: Runner, setup: methods.Setup, seeds: Sequence[int],
                   out: str, lmbda: float) -> List[dict]:
  """hcfcn and hcfcn_slic at every erosion kernel; writes its files."""
  rows = []
  for kernel in setup.kernels:
    ref = [runner.run("hcfcn", {"kernel": kernel}, s) for s in seeds]
    reg = [runner.run("hcfcn_slic", {"kernel": kernel, "lmbda": lmbda}, s)
           for s in seeds]
    rows.append(report.summary_row(ref, None, method="hcfcn", kernel=kernel))
    rows.append(report.summary_row(reg, ref, method="hcfcn_slic",
                                   kernel=kernel))
  report.write_coarseness(out, runner, setup, rows, seeds, lmbda)
  return rows


def run_similarity(runner: Runner, setup: methods.Setup, seeds: Sequence[int],
                   out: str, metric: str,
                   options: Sequence[str] = tuple(methods.SIMILARITY_OPTIONS)
                   ) -> List[dict]:
  """hcfcn_slic with each similarity option; the table on validation."""
  rows = []
  for option in options:
    params = {"option": option, "lmbda": setup.similarity_lambda}
    done = [runner.run("hcfcn_slic", params, s) for s in seeds]
    rows.append(report.validation_row(done, option=option))
  scores = [row[f"{metric}_mean"] for row in rows]
  for i, row in enumerate(rows):
    row["selected"] = int(i == int(np.nanargmax(scores)))
  report.write_similarity(out, runner, setup, rows, seeds, metric)
  return rows


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
_SEEDS = flags.DEFINE_integer("seeds", None, "Seeds 0..n-1 (default: setup).")
_SWEEP_SEEDS = flags.DEFINE_integer(
    "sweep_seeds", 0, "Seeds of the lambda/kappa sweeps (0 = all).")
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
  if base.data.get("manual_dir"):
    tag += "-" + os.path.basename(os.path.normpath(base.data.manual_dir))
  return base, config_file, overrides, tag


def _setup() -> methods.Setup:
  setup = methods.QUICK if _QUICK.value else methods.FULL
  for name, values in (("lambdas", _LAMBDAS.value), ("kappas", _KAPPAS.value)):
    if values:
      setup = dataclasses.replace(setup, **{name: tuple(map(float, values))})
  return setup


def _run(experiment: str) -> None:
  base, config_file, overrides, tag = _base_config()
  setup = _setup()
  names = methods.select_methods(_METHODS.value)
  options = _OPTIONS.value or list(methods.SIMILARITY_OPTIONS)
  unknown = sorted(set(options) - set(methods.SIMILARITY_OPTIONS))
  if unknown:
    raise app.UsageError(f"--options: unknown {unknown}; choose from "
                         f"{list(methods.SIMILARITY_OPTIONS)}.")
  seeds = list(range(_SEEDS.value or {
      "main": setup.seeds, "coarseness": setup.coarseness_seeds,
      "similarity": setup.similarity_seeds}[experiment]))
  root = experiment + ("_quick" if _QUICK.value else "") + (
      f"_e{_EPOCHS.value}" if _EPOCHS.value else "")
  total = {"main": len(names) * len(seeds),
           "coarseness": 2 * len(setup.kernels) * len(seeds),
           "similarity": len(options) * len(seeds)}[
               experiment]
  runner = Runner(base, os.path.join(_WORKDIR_ROOT.value, tag, root),
                  config_file, overrides, total)
  out = os.path.join(_OUT.value, tag)
  tic = time.time()
  if experiment == "main":
    run_main(runner, setup, seeds, out, _SWEEP_SEEDS.value, _SELECT.value,
             names)
  elif experiment == "coarseness":
    run_coarseness(runner, setup, seeds, out, setup.coarseness_lambda
                   if _LAMBDA.value is None else _LAMBDA.value)
  else:
    run_similarity(runner, setup, seeds, out, _SELECT.value, options)
  runner.bar.close()
  trained = sum(r["status"] == "trained" for r in runner.records)
  workdir_lib.write_json(f"{out}_{experiment}_runs.json", {
      "experiment": experiment, "quick": _QUICK.value, "dataset": tag,
      "num_epochs": base.train.num_epochs, "machine": report.machine(),
      "seconds": round(time.time() - tic, 1), "trained": trained,
      "runs": runner.records})
  print(f"{experiment}: {trained} runs trained, {len(runner.records) - trained}"
        f" skipped, {time.time() - tic:.0f} s; tables and figures in "
        f"{_OUT.value} ({tag}_*)")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  writers.setup_logging()
  cache = _CACHE.value
  if cache is None:
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(
        _WORKDIR_ROOT.value, "jax_cache")
  if cache:
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  experiment = _EXPERIMENT.value
  main_only = [f"--{f.name}" for f in (_METHODS, _LAMBDAS, _KAPPAS)
               if f.value]
  if _OPTIONS.value and experiment != "similarity":
    main_only.append("--options")
  try:
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
  except app.UsageError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(cli.USAGE_EXIT)
  except errors.Interrupted as e:  # The run in flight saved a checkpoint.
    print(f"{e} (The runner skips finished runs.)", file=sys.stderr)
    sys.exit(e.exit_status)
  except errors.USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
