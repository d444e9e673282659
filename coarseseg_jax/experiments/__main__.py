r"""The command line of the experiments (`python -m coarseseg_jax.experiments`;
the package docstring says what they are).

Flags choose the experiment, its config (default: the synthetic dataset, or
`--dataset=texture_mosaic`, at the FULL setup's sizes),
seeds, grids and where runs and tables go; `main` sets up the persistent
compilation cache, checks the flags and runs `designs.run_<experiment>` once
per validation-label variant, and writes `<out>/<dataset>_<experiment>_
runs.json` after every run (every run's command, status and time, and
`finished` once the call ends; the records of earlier calls, finished or
stopped, under `earlier_calls`).
"""

import dataclasses
import os
import time

from coarseseg_jax import xla_flags  # pylint: disable=unused-import

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import jax
from ml_collections import config_flags
import tqdm

from coarseseg_jax import cli
from coarseseg_jax import filesystem
from coarseseg_jax import host
from coarseseg_jax import writers
from coarseseg_jax.experiments import designs
from coarseseg_jax.experiments import methods
from coarseseg_jax.experiments import report
from coarseseg_jax.experiments import runner as runner_lib
from coarseseg_jax.experiments import stats
from coarseseg_jax.experiments import tables


_EXPERIMENT = flags.DEFINE_enum(
    "experiment", "main", ["main", "coarseness", "similarity", "budget"],
    "Which experiment.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A config file (or shipped config's name) whose dataset "
    "and sizes the runs use (default: --dataset at the FULL setup's sizes).")
# The generated datasets, sized alike by the setups (`methods.FULL_SYNTHETIC`).
_DATASET = flags.DEFINE_enum(
    "dataset", None, list(methods.GENERATED), "Without --config: the generated "
    "dataset of the runs, at the setup's sizes (default synthetic).")
_OUT = flags.DEFINE_string("out", "results", "Tables and figures go here.")
_WORKDIR_ROOT = flags.DEFINE_string("workdir_root", "workdirs/experiments",
                                    "One workdir per run under this.")
_ARCHIVE = flags.DEFINE_string(
    "archive", None, "Archive of finished runs (config.json, results.json "
    "under the workdir's path below --workdir_root): runs it holds are "
    "restored, not trained; new ones are added. Commit it to take a long "
    "experiment up on another machine.")
_QUICK = flags.DEFINE_bool("quick", False, "A tiny model and 1 epoch (tests).")
_SEEDS = flags.DEFINE_integer(
    "seeds", None, "Number of seeds (default: setup): reported runs 0..n-1; "
    "similarity and budget (selections): 100..100+n-1.")
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
_SELECT = flags.DEFINE_enum("select_metric", "accuracy", list(tables.METRICS),
                            "Validation metric choosing lambda, kappa and "
                            "the similarity option.")
_LAMBDA = flags.DEFINE_float("coarseness_lambda", None,
                             "lambda of hcfcn_slic in the coarseness sweep.")
_METHODS = flags.DEFINE_list(
    "methods", None, "main: only these methods, trained in this order "
    "(default all; hcfcn always, last unless named; tables keep table "
    "order); budget: these (default fcn, hcfcn, hcfcn_slic).")
_BUDGETS = flags.DEFINE_list(
    "budgets", None, "budget: the epoch budgets (default: setup, FULL 25, "
    "50, 100, 200).")
_EPOCHS = flags.DEFINE_integer(
    "num_epochs", None, "Epochs of every run instead of the setup's; the "
    "runs go to <experiment>_e<n> workdirs.")
_COSINE = flags.DEFINE_bool(
    "cosine", None, "Every run's learning rate falls to 0 at its own last "
    "step on a cosine, as in the budget experiment (methods.BUDGET_DELTA): "
    "the schedule a budget was chosen with, e.g. with --num_epochs=<it>; the "
    "runs go to <experiment>[_e<n>]_cosine workdirs.")
_LAMBDAS = flags.DEFINE_list("lambdas", None, "main: lambda grid to sweep; "
                             "budget: the one lambda of its runs.")
_KAPPAS = flags.DEFINE_list("kappas", None, "main: kappa grid to sweep; "
                            "budget: the one kappa of its runs.")
_OPTIONS = flags.DEFINE_list(
    "options", None, "similarity: only these options of "
    "methods.SIMILARITY_OPTIONS (default all).")
_CI_TARGET = flags.DEFINE_float(
    "ci_target", None, "main: after --seeds, add one reported seed at a time "
    "(every method) while the 95 %% CI of %s - %s test %s is wider than "
    "+-this, up to --max_seeds; the runs file records each half-width."
    % tables.CI_PAIR)
_MAX_SEEDS = flags.DEFINE_integer(
    "max_seeds", None, "main with --ci_target: at most this many seeds "
    "(default 10).")
_SHARE = flags.DEFINE_bool(
    "share", False, "Other processes run this same command on the same "
    "--workdir_root (a core or an accelerator each): each trains the runs no "
    "other one trains, and waits for theirs where the design needs them (a "
    "sweep's choice, a self-training row's teacher). The runs file is the "
    "record of the process that wrote it last.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (default: "
                                "the config's, data/).")
_CACHE = flags.DEFINE_string(
    "jax_cache_dir", None, "Persistent compilation cache (default "
    "$JAX_COMPILATION_CACHE_DIR if set, else <workdir_root>/jax_cache; empty "
    "= off).")


def _base_config():
  """(base config, its config file, its overrides, dataset tag)."""
  from coarseseg_jax import config_validation  # pylint: disable=g-import-not-at-top
  flagged = dict(num_epochs=_EPOCHS.value, cosine=_COSINE.value,
                 data_dir=_DATA_DIR.value)
  if _CONFIG.value is None:
    dataset = _DATASET.value or "synthetic"
    config_file = f"configs/{dataset}.py"
    base, overrides = methods.generated_base(dataset, quick=_QUICK.value,
                                             **flagged)
  elif _DATASET.value:
    raise app.UsageError(f"--dataset={_DATASET.value}: --config gives the "
                         "dataset; leave one of them out.")
  else:
    config_file = cli.flag_config_file("config")
    overrides = dict(cli.config_overrides())
    if _QUICK.value:
      overrides.update(methods.QUICK_SYNTHETIC if _CONFIG.value.data.dataset
                       in methods.GENERATED else methods.QUICK_ANY)
    base = methods.with_flags(_CONFIG.value, overrides, **flagged)
  # The entry point's one check; each run's config is checked where it is
  # trained (`runner.Runner.run`).
  base = config_validation.resolve(base).config
  tag = base.data.dataset
  if base.data.manual_dir:
    tag += "-" + os.path.basename(os.path.normpath(base.data.manual_dir))
  return base, config_file, overrides, tag


def _setup(experiment: str) -> methods.Setup:
  setup = methods.QUICK if _QUICK.value else methods.FULL
  for name, flag in (("lambdas", _LAMBDAS), ("kappas", _KAPPAS),
                     ("sweep_seeds", _SWEEP_SEEDS), ("widen_limit", _WIDEN)):
    value = flag.value
    if value is not None:
      setup = dataclasses.replace(setup, **{name: tuple(map(float, value)) if
                                            isinstance(value, list) else value})
  if experiment != "budget":
    return setup
  for name, flag in (("budget_lambda", _LAMBDAS), ("budget_kappa", _KAPPAS)):
    if flag.value is not None and len(flag.value) != 1:
      raise app.UsageError(f"--{flag.name}={','.join(flag.value)}: the "
                           "budget experiment takes one value.")
    if flag.value is not None:
      setup = dataclasses.replace(setup, **{name: float(flag.value[0])})
  if _BUDGETS.value is not None:
    try:
      budgets = tuple(sorted({int(b) for b in _BUDGETS.value}))
    except ValueError:
      budgets = ()
    if not budgets or budgets[0] < 1:
      raise app.UsageError(f"--budgets={','.join(_BUDGETS.value)}: give "
                           "whole numbers of epochs >= 1, e.g. 25,50,100.")
    setup = dataclasses.replace(setup, budgets=budgets)
  return setup


def _run(experiment: str) -> None:
  # The flags' own checks first: resolving the config (and importing
  # TensorFlow, which it needs) takes seconds.
  setup = _setup(experiment)
  names = methods.select_methods(_METHODS.value)
  if experiment == "budget":
    names = _budget_methods()
  options = _OPTIONS.value or list(methods.SIMILARITY_OPTIONS)
  unknown = sorted(set(options) - set(methods.SIMILARITY_OPTIONS))
  if unknown:
    raise app.UsageError(f"--options: unknown {unknown}; choose from "
                         f"{list(methods.SIMILARITY_OPTIONS)}.")
  n = _SEEDS.value or {
      "main": setup.seeds, "coarseness": setup.coarseness_seeds,
      "similarity": setup.similarity_seeds,
      "budget": setup.budget_seeds}[experiment]
  try:
    seeds = (methods.selection_seeds(n) if experiment in ("similarity",
                                                          "budget")
             else methods.report_seeds(n))
    select = methods.selection_seeds(setup.sweep_seeds)
  except ValueError as e:
    raise app.UsageError(f"--seeds / --sweep_seeds: {e}") from None
  max_seeds = _ci_limits(names, len(seeds))
  if not _MARGIN.value > 0:
    raise app.UsageError(f"--margin={_MARGIN.value} must be > 0.")
  from coarseseg_jax import config_validation  # pylint: disable=g-import-not-at-top
  base, config_file, overrides, tag = _base_config()
  default = base.data.validation_labels
  variants = {"both": ["fine", "coarse"], None: [default]}.get(
      _LABELS.value, [_LABELS.value])
  if ("coarse" in variants
      and _SELECT.value not in config_validation.COARSE_SELECTABLE):
    raise app.UsageError(f"--select_metric={_SELECT.value} needs fine "
                         "validation labels (coarse ones have no boundaries).")
  root = experiment + ("_quick" if _QUICK.value else "") + (
      f"_e{_EPOCHS.value}" if _EPOCHS.value else "") + (
          "_cosine" if _COSINE.value else "")
  bar = tqdm.tqdm(total=len(variants) * methods.num_runs(
      experiment, setup, names, len(seeds), len(options)), desc="runs",
                  unit="run")
  tic, records, rows, widths = time.time(), [], {}, []
  passes = [seeds]  # The seeds of the pass under way (--ci_target adds).
  runs_path = f"{os.path.join(_OUT.value, tag)}_{experiment}_runs.json"
  earlier = _earlier_calls(runs_path)

  def write_runs(runs, finished: bool = False) -> int:
    """Writes `runs` to `runs_path` (after every record, so that an
    invocation stopped part-way keeps its runs' commands and times);
    returns the number trained."""
    trained = sum(r["status"] == "trained" for r in runs)
    filesystem.write_json(runs_path, {
        "experiment": experiment, "quick": _QUICK.value, "dataset": tag,
        "num_epochs": None if experiment == "budget" else
                      base.train.num_epochs,
        "budgets": list(setup.budgets) if experiment == "budget" else None,
        "seeds": list(passes[-1]), "selection_seeds": list(select),
        "validation_labels": variants, "machine": host.machine(),
        "seconds": round(time.time() - tic, 1), "finished": finished,
        "ci_target": _CI_TARGET.value and {
            "pair": "%s - %s" % tables.CI_PAIR[:2], "metric": "test_" +
            tables.CI_PAIR[2], "target": _CI_TARGET.value,
            "max_seeds": max_seeds, "half_widths": widths},
        "trained": trained, "runs": runs, "earlier_calls": earlier})
    return trained

  for labels in variants:
    suffix = "" if labels == "fine" else "_coarseval"
    v_overrides = dict(overrides)
    if labels != default:
      v_overrides["data.validation_labels"] = labels
    runner = runner_lib.Runner(
        methods.apply(base, {"data.validation_labels": labels}),
        os.path.join(_WORKDIR_ROOT.value, tag, root + suffix), config_file,
        v_overrides, bar, _ARCHIVE.value and os.path.join(
            _ARCHIVE.value, tag, root + suffix),
        on_record=lambda own: write_runs(records + own), share=_SHARE.value)
    out = os.path.join(_OUT.value, tag + suffix)
    if experiment == "main":
      rows[labels], seeds = designs.run_main_until(
          runner, setup, seeds, select, out, _SELECT.value, names,
          _MARGIN.value, _CI_TARGET.value, max_seeds, widths, passes.append)
    elif experiment == "budget":
      designs.run_budget(runner, setup, seeds, out, _SELECT.value, names)
    elif experiment == "coarseness":
      designs.run_coarseness(
          runner, setup, seeds, out, setup.coarseness_lambda
          if _LAMBDA.value is None else _LAMBDA.value, _MARGIN.value)
    else:
      designs.run_similarity(runner, setup, seeds, out, _SELECT.value,
                             options, _MARGIN.value)
    records += runner.records
  bar.close()
  if len(rows) == 2:
    report.write_validation_cost(os.path.join(_OUT.value, tag), rows["fine"],
                                 rows["coarse"], _MARGIN.value)
  trained = write_runs(records, finished=True)
  restored = sum(r["status"] == "restored" for r in records)
  print(f"{experiment}: {trained} runs trained, {restored} restored from the "
        f"archive, {len(records) - trained - restored} skipped, "
        f"{time.time() - tic:.0f} s; tables and figures in "
        f"{_OUT.value} ({tag}_*)")


def _ci_limits(names, n: int) -> int:
  """--max_seeds (default 10), checked with --ci_target against the methods
  and the starting number of seeds `n`."""
  max_seeds = 10 if _MAX_SEEDS.value is None else _MAX_SEEDS.value
  if _CI_TARGET.value is None:
    if _MAX_SEEDS.value is not None:
      raise app.UsageError("--max_seeds: only with --ci_target.")
    return n
  if not _CI_TARGET.value > 0:
    raise app.UsageError(f"--ci_target={_CI_TARGET.value} must be > 0.")
  missing = [m for m in tables.CI_PAIR[:2] if m not in names]
  if missing:
    raise app.UsageError(f"--ci_target: narrows the CI of {tables.CI_PAIR[0]}"
                         f" - {tables.CI_PAIR[1]}; --methods lacks "
                         f"{', '.join(missing)}.")
  if max_seeds < max(n, 2):
    raise app.UsageError(f"--max_seeds={max_seeds}: give at least --seeds "
                         f"({n}) and 2.")
  try:
    methods.report_seeds(max_seeds)
  except ValueError as e:
    raise app.UsageError(f"--max_seeds: {e}") from None
  return max_seeds


def _budget_methods():
  """`methods.budget_methods` of --methods, its ValueError a usage error."""
  try:
    return methods.budget_methods(_METHODS.value)
  except ValueError as e:
    raise app.UsageError(f"--methods: {e}") from None


def _earlier_calls(runs_path: str) -> list:
  """The records of the calls before this one that wrote `runs_path`
  (oldest first), so a later call (one that only reads finished runs, say)
  does not erase how the runs were trained; [] if none or unreadable."""
  try:
    old = filesystem.read_json(runs_path)
  except (OSError, ValueError):
    return []
  if not isinstance(old, dict):
    return []
  earlier = old.pop("earlier_calls", [])
  return (earlier if isinstance(earlier, list) else []) + [old]


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
  # Flag -> the experiments it is for.
  only = [(_METHODS, ("main", "budget")), (_LAMBDAS, ("main", "budget")),
          (_KAPPAS, ("main", "budget")), (_SWEEP_SEEDS, ("main",)),
          (_WIDEN, ("main",)), (_OPTIONS, ("similarity",)),
          (_BUDGETS, ("budget",)), (_CI_TARGET, ("main",)),
          (_MAX_SEEDS, ("main",)),
          (_EPOCHS, ("main", "coarseness", "similarity")),
          (_COSINE, ("main", "coarseness", "similarity"))]
  wrong = {}  # The experiments -> the flags given that are only for them.
  for flag, allowed in only:
    if flag.value is not None and experiment not in allowed:
      wrong.setdefault(allowed, []).append(f"--{flag.name}")
  if wrong:
    raise app.UsageError("; ".join(
        f"{', '.join(names)}: only for --experiment={' or '.join(allowed)}"
        for allowed, names in wrong.items()) + " (the coarseness sweep's "
                         "lambda: --coarseness_lambda).")
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
