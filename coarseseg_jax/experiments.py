r"""The synthetic-data experiments: the main table and the coarseness sweep.

  python -m coarseseg_jax.experiments --experiment=main --out=results/ \
      --workdir_root=workdirs/experiments [--quick] [--seeds=3]
  python -m coarseseg_jax.experiments --experiment=coarseness --out=results/

Runs train on coarse labels (except `hcfcn_fine`) and are tested on the fine
test labels. `main` writes synthetic_coarse.{csv,md}, synthetic_coarse_sweep.csv
(the validation scores of the sweeps) and synthetic_coarse_predictions.png:
  fcn                    FCN-16 (bilinear upsampling), cross-entropy;
  hcfcn                  HCFCN-16, cross-entropy (lambda = 0);
  hcfcn_slic             HCFCN-16 + the paper's SLIC regularizer, lambda swept;
  unet                   U-Net, cross-entropy;
  hcfcn_fine             HCFCN-16 on fine labels (the upper bound);
  hcfcn_slic_propagated  HCFCN-16, cross-entropy on coarse labels propagated
                         through the SLIC maps (data.train_labels);
  hcfcn_slicmap          HCFCN-16 + slic_map_loss alone, kappa swept;
  hcfcn_slicmap_slic     HCFCN-16 + both, at the selected kappa and lambda.
Tables: mean and sample std (ddof 1) over seeds of each run's test mean over
images; p: Welch's t-test against `hcfcn` on those per-seed means. `coarseness`
writes coarseness.{csv,md,png}: `hcfcn` and `hcfcn_slic` (lambda =
--coarseness_lambda) on coarse labels of each erosion kernel (each kernel
prepares its own dataset).

Selection: lambda and kappa maximise the mean over seeds (the first
--sweep_seeds; the others are then trained at the chosen value only) of a
VALIDATION metric (--select_metric; default pixel accuracy on the fine
validation labels, as boundary recall alone rewards spurious boundaries) of
the checkpoint each run keeps (chosen by validation accuracy, as in the
paper). Test figures are never looked at.

Runs execute in this process one after another (`train.train_and_evaluate`),
with JAX's persistent compilation cache in <workdir_root>/jax_cache, so the
seeds of a configuration compile once and TF/JAX start once. A run's workdir is
<workdir_root>/<experiment>[_quick][_e<epochs>]/<method>/<param>/seed<k>
(`_e<epochs>` with --num_epochs other than the setup's); one holding
results.json is skipped, an interrupted one resumes from its checkpoint, and
one whose run_config.json differs from the current config stops the runner.
<out>/<experiment>_runs.json lists the runs of the last call and their status.

Smaller or longer variants of `main`: --methods (a subset; `hcfcn` is always
trained), --lambdas / --kappas (the sweep grids) and --num_epochs, e.g. the
schedule check in the README:
  python -m coarseseg_jax.experiments --experiment=main --num_epochs=100 \
      --methods=fcn,hcfcn_slic --lambdas=0.025 --seeds=1 --out=results/e100

The tables and figures are made by `coarseseg_jax.report`.
"""

import dataclasses
import json
import logging
import os

import time
from typing import List, Optional, Sequence, Tuple

from coarseseg_jax import xla_flags  # pylint: disable=unused-import

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import jax
import numpy as np

from coarseseg_jax import report
from coarseseg_jax import train
from coarseseg_jax import writers

from coarseseg_jax.configs import synthetic

log = logging.getLogger("coarseseg_jax.experiments")  # Not __main__.
METRICS = report.METRICS
MAIN_METHODS = ("fcn", "hcfcn", "hcfcn_slic", "unet", "hcfcn_fine",
                "hcfcn_slic_propagated", "hcfcn_slicmap", "hcfcn_slicmap_slic")
REFERENCE = "hcfcn"  # The t-tests compare every method with this one.
_FIXED = {"fcn": {"model": "fcn"}, "unet": {"model": "unet"},
          "hcfcn_fine": {"train_labels": "fine"},
          "hcfcn_slic_propagated": {"train_labels": "slic_propagated"}}
_STATS = [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]


@dataclasses.dataclass(frozen=True)
class Setup:
  """Sizes and grids of an experiment (FULL, or QUICK for the tests)."""
  image_size: int       # Synthetic images are image_size^2; whole-image crops.
  num_train: int
  num_validation: int
  num_test: int
  coarse_kernel: int    # Erosion kernel of the main table's coarse labels.
  width: int            # Encoder width (ResNet-34: 64); also the head's.
  stage_blocks: Tuple[int, ...]
  num_epochs: int
  eval_every_epochs: int  # Validation (checkpoint selection) every n epochs.
  seeds: int            # Main table.
  coarseness_seeds: int
  lambdas: Tuple[float, ...]
  kappas: Tuple[float, ...]
  kernels: Tuple[int, ...]
  coarseness_lambda: float
  figure_images: int    # Test images in the predictions figure.
  run_figures: int      # train.num_figures of each run.


# The real experiment, sized for a 2-core CPU (main table < 2 h, sweep < 1 h).
# Images of at least 144 px: below a 200 px diagonal the paper's boundary
# recall has tolerance 0 and is 0 for any prediction. 160 px with kernel 15
# leaves about as much labelled as the paper's 25 at 256 px; 200/40/100
# images; a half-width ResNet-34 encoder; 25 epochs (625 steps of 8).
FULL = Setup(image_size=160, num_train=200, num_validation=40, num_test=100,
             coarse_kernel=15, width=32, stage_blocks=(3, 4, 6), num_epochs=25,
             eval_every_epochs=5, seeds=3, coarseness_seeds=2,
             lambdas=(0.025, 0.05, 0.075, 0.1),
             kappas=(0.01, 0.025, 0.05, 0.1), kernels=(1, 5, 10, 15, 20, 25),
             coarseness_lambda=0.05, figure_images=3, run_figures=2)
# --quick: the whole chain in about 3 minutes (tests): tiny images and model,
# one value per sweep (each lambda / kappa value is one more XLA compilation).
QUICK = Setup(image_size=64, num_train=16, num_validation=4, num_test=4,
              coarse_kernel=7, width=8, stage_blocks=(1, 1, 1), num_epochs=1,
              eval_every_epochs=1, seeds=2, coarseness_seeds=2,
              lambdas=(0.05,), kappas=(0.05,), kernels=(3, 7),
              coarseness_lambda=0.05, figure_images=2, run_figures=0)


def experiment_config(setup: Setup, data_dir: Optional[str] = None):
  """configs/synthetic.py resized to `setup`; lambda = kappa = 0."""
  s = setup
  config = synthetic.get_config()
  d, m, t = config.data, config.model, config.train
  d.data_dir = data_dir or d.data_dir
  d.builder_kwargs.update(dict(num_train=s.num_train, image_size=s.image_size,
                               num_validation=s.num_validation,
                               num_test=s.num_test))
  d.crop_size, d.coarse_kernel = s.image_size, s.coarse_kernel
  d.slic_num_segments = max(64, 2 * (s.image_size // 16) ** 2)
  d.shuffle_buffer = s.num_train
  m.num_classes = d.builder_kwargs.num_classes
  m.width, m.stage_blocks = s.width, s.stage_blocks
  m.head_channels = s.width
  m.sim_features = min(m.sim_features, s.width)
  t.num_epochs, t.eval_every_epochs = s.num_epochs, s.eval_every_epochs
  t.lmbda, t.kappa = 0.0, 0.0
  t.log_every_steps, t.checkpoint_every_steps = 10, 50
  t.num_figures = s.run_figures
  return config


def param_name(params: dict) -> str:
  """Workdir name of a run's swept values, e.g. `kernel5_lmbda0.05` or `ce`."""
  parts = [f"{k}{params[k]:g}" for k in ("kernel", "kappa", "lmbda")
           if params.get(k)]
  return "_".join(parts) or "ce"


def run_config(base, method: str, params: dict, seed: int):
  """The config of one run: `base` + the method's settings + params + seed."""
  config = base.copy_and_resolve_references()
  fixed = dict(_FIXED.get(method, {}), **params)
  config.model.name = fixed.get("model", "hcfcn")
  config.data.train_labels = fixed.get("train_labels", "coarse")
  config.train.lmbda = float(fixed.get("lmbda", 0.0))
  config.train.kappa = float(fixed.get("kappa", 0.0))
  config.data.coarse_kernel = int(fixed.get("kernel",
                                            config.data.coarse_kernel))
  config.seed = seed
  return config


# config.model fields added after runs were stamped (issue 15) and the values
# that mean "as before": left out at those values, so older stamps still match.
_ADDED_MODEL_FIELDS = {"assign_init": "default", "parent_bias": None}


def _comparable(config) -> dict:
  """The config as JSON data, without where the data lives."""
  d = json.loads(json.dumps(config.to_dict(), default=str))
  d["data"].pop("data_dir", None)
  for key, value in _ADDED_MODEL_FIELDS.items():
    if d["model"].get(key, value) == value:
      d["model"].pop(key, None)
  return d


class Runner:
  """Runs (or skips) single runs under `root`; remembers what it did."""

  def __init__(self, base, root: str):
    self.base, self.root = base, root
    self.records: List[dict] = []

  def workdir(self, method: str, params: dict, seed: int) -> str:
    return os.path.join(self.root, method, param_name(params), f"seed{seed}")

  def run(self, method: str, params: dict, seed: int) -> dict:
    """results.json of the run, training it first unless it is finished."""
    config = run_config(self.base, method, params, seed)
    workdir, tic = self.workdir(method, params, seed), time.time()
    stamp = os.path.join(workdir, "run_config.json")
    if os.path.exists(stamp):
      with open(stamp) as f:
        if json.load(f) != _comparable(config):
          raise RuntimeError(f"{workdir} holds a run of another config; after "
                             "changing the setup use another --workdir_root.")
    if os.path.exists(os.path.join(workdir, "results.json")):
      status = "skipped"
      with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    else:
      status = "trained"
      log.info("training %s", workdir)
      os.makedirs(workdir, exist_ok=True)
      with open(stamp, "w") as f:
        json.dump(_comparable(config), f, indent=1)
      results = train.train_and_evaluate(config, workdir)
    log.info("%s %s (%.0f s)", status, workdir, time.time() - tic)
    self.records.append({"workdir": workdir, "status": status,
                         "seconds": round(time.time() - tic, 1)})
    return results


def validation_metric(workdir: str, results: dict, metric: str) -> float:
  """`metric`'s validation mean at the checkpoint the run selected."""
  for r in writers.read_metrics(workdir):
    if r["split"] == "validation" and r["step"] == results["selected_step"]:
      value = r.get(f"{metric}_mean")
      return float("nan") if value is None else float(value)
  raise ValueError(f"{workdir}: no validation record at the selected step "
                   f"{results['selected_step']}.")


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
    values = [validation_metric(runner.workdir(method, params, s), r, metric)
              for s, r in zip(first, done[-1])]
    scores.append(np.nan_to_num(np.nanmean(values), nan=-np.inf))
    rows.append({"method": method, "param": param_name(params),
                 "n_seeds": len(first),
                 f"validation_{metric}_mean": float(np.nanmean(values)),
                 f"validation_{metric}_std": report.sample_std(values)})
  best = int(np.argmax(scores))
  for i, row in enumerate(rows):
    row["selected"] = int(i == best)
  params = candidates[best]
  return params, done[best] + [runner.run(method, params, s)
                               for s in seeds[len(first):]], rows


def select_methods(names: Optional[Sequence[str]]) -> Tuple[str, ...]:
  """The main table's methods among `names` (None: all), in table order.

  `hcfcn`, the reference of the t-tests, is always included, and
  `hcfcn_slicmap_slic` needs the two methods whose choices it combines.
  """
  if not names:
    return MAIN_METHODS
  unknown = sorted(set(names) - set(MAIN_METHODS))
  if unknown:
    raise ValueError(f"Unknown methods {unknown}; choose from {MAIN_METHODS}.")
  if "hcfcn_slicmap_slic" in names and not {"hcfcn_slic",
                                            "hcfcn_slicmap"} <= set(names):
    raise ValueError("hcfcn_slicmap_slic needs hcfcn_slic and hcfcn_slicmap, "
                     "whose lambda and kappa it uses.")
  return tuple(m for m in MAIN_METHODS if m in names or m == REFERENCE)


def run_main(runner: Runner, setup: Setup, seeds: Sequence[int], out: str,
             sweep_seeds: int, metric: str,
             methods: Sequence[str] = MAIN_METHODS) -> List[dict]:
  """Trains (or reuses) every run of the main table; writes its files."""
  chosen, results, sweep_rows = {}, {}, []
  for method in methods:
    if method in ("hcfcn_slic", "hcfcn_slicmap"):
      key, grid = (("lmbda", setup.lambdas) if method == "hcfcn_slic" else
                   ("kappa", setup.kappas))
      chosen[method], results[method], rows = sweep(
          runner, method, [{key: v} for v in grid], seeds, sweep_seeds, metric)
      sweep_rows += rows
      continue
    chosen[method] = ({} if method != "hcfcn_slicmap_slic" else
                      dict(chosen["hcfcn_slicmap"], **chosen["hcfcn_slic"]))
    results[method] = [runner.run(method, chosen[method], s) for s in seeds]
  rows = [report.summary_row(results[m], None if m == REFERENCE else
                             results[REFERENCE], method=m,
                             param=param_name(chosen[m]))
          for m in methods]
  name = os.path.join(out, "synthetic_coarse")
  report.write_csv(name + ".csv", rows,
                   ["method", "n_seeds"] + _STATS + ["p_boundary_recall"])
  if sweep_rows:
    report.write_csv(name + "_sweep.csv", sweep_rows, list(sweep_rows[0]))
  with open(name + ".md", "w") as f:
    f.write(report.markdown_table(
        rows, [("method", "method"), ("param", "params")],
        report.setup_note(setup, runner.base, seeds, metric, sweep_seeds,
                          reference=REFERENCE, swept=[
                              w for w, m in (("lambda", "hcfcn_slic"),
                                             ("kappa", "hcfcn_slicmap"))
                              if m in methods])))
  columns = [(m, report.predictions(
      run_config(runner.base, m, chosen[m], seeds[0]),
      runner.workdir(m, chosen[m], seeds[0]), setup.figure_images))
             for m in methods]
  report.predictions_figure(name + "_predictions.png",
                            columns[methods.index(REFERENCE)][1], columns,
                            runner.base.model.num_classes)
  return rows


def run_coarseness(runner: Runner, setup: Setup, seeds: Sequence[int],
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
  name = os.path.join(out, "coarseness")
  report.write_csv(name + ".csv", rows, ["method", "kernel", "n_seeds"]
                   + _STATS + ["p_boundary_recall"])
  with open(name + ".md", "w") as f:
    f.write(report.markdown_table(
        rows, [("method", "method"), ("kernel", "kernel")],
        f"hcfcn_slic: lambda = {lmbda:g}; p: against hcfcn at the same "
        "kernel. " + report.setup_note(setup, runner.base, seeds, None, 0,
                                       setup.kernels)))
  report.coarseness_figure(name + ".png", rows, setup.kernels, len(seeds))
  return rows


_EXPERIMENT = flags.DEFINE_enum("experiment", "main", ["main", "coarseness"],
                                "Which experiment.")
_OUT = flags.DEFINE_string("out", "results", "Tables and figures go here.")
_WORKDIR_ROOT = flags.DEFINE_string("workdir_root", "workdirs/experiments",
                                    "One workdir per run under this.")
_QUICK = flags.DEFINE_bool("quick", False, "The tiny QUICK setup (tests).")
_SEEDS = flags.DEFINE_integer("seeds", None, "Seeds 0..n-1 (default: setup).")
_SWEEP_SEEDS = flags.DEFINE_integer(
    "sweep_seeds", 0, "Seeds of the lambda/kappa sweeps (0 = all).")
_SELECT = flags.DEFINE_enum("select_metric", "accuracy", list(METRICS),
                            "Validation metric choosing lambda and kappa.")
_LAMBDA = flags.DEFINE_float("coarseness_lambda", None,
                             "lambda of hcfcn_slic in the coarseness sweep.")
_METHODS = flags.DEFINE_list(
    "methods", None, "main: only these methods (default all; hcfcn always).")
_EPOCHS = flags.DEFINE_integer(
    "num_epochs", None, "Epochs of every run instead of the setup's; the "
    "runs go to <experiment>_e<n> workdirs.")
_LAMBDAS = flags.DEFINE_list("lambdas", None, "main: lambda grid to sweep.")
_KAPPAS = flags.DEFINE_list("kappas", None, "main: kappa grid to sweep.")
_DATA_DIR = flags.DEFINE_string("data_dir", "data", "TFDS data dir.")
_CACHE = flags.DEFINE_string(
    "jax_cache_dir", None, "Persistent compilation cache (default "
    "$JAX_COMPILATION_CACHE_DIR if set, else <workdir_root>/jax_cache; empty "
    "= off).")


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
  quick, experiment, out = _QUICK.value, _EXPERIMENT.value, _OUT.value
  main_only = [f"--{f.name}" for f in (_METHODS, _LAMBDAS, _KAPPAS)
               if f.value]
  if experiment != "main" and main_only:
    raise app.UsageError(f"{', '.join(main_only)}: only for --experiment=main"
                         " (the coarseness sweep: --coarseness_lambda).")
  try:
    methods = select_methods(_METHODS.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  setup = QUICK if quick else FULL
  root = experiment + ("_quick" if quick else "")
  if _EPOCHS.value and _EPOCHS.value != setup.num_epochs:
    setup = dataclasses.replace(setup, num_epochs=_EPOCHS.value)
    root += f"_e{setup.num_epochs}"
  for name, values in (("lambdas", _LAMBDAS.value), ("kappas", _KAPPAS.value)):
    if values:
      setup = dataclasses.replace(setup, **{name: tuple(map(float, values))})
  seeds = list(range(_SEEDS.value or (
      setup.seeds if experiment == "main" else setup.coarseness_seeds)))
  runner = Runner(experiment_config(setup, _DATA_DIR.value),
                  os.path.join(_WORKDIR_ROOT.value, root))
  os.makedirs(out, exist_ok=True)
  tic = time.time()
  if experiment == "main":
    run_main(runner, setup, seeds, out, _SWEEP_SEEDS.value, _SELECT.value,
             methods)
  else:
    run_coarseness(runner, setup, seeds, out, setup.coarseness_lambda
                   if _LAMBDA.value is None else _LAMBDA.value)
  trained = sum(r["status"] == "trained" for r in runner.records)
  with open(os.path.join(out, f"{experiment}_runs.json"), "w") as f:
    json.dump({"experiment": experiment, "quick": quick,
               "num_epochs": setup.num_epochs, "machine": report.machine(),
               "seconds": round(time.time() - tic, 1), "trained": trained,
               "runs": runner.records}, f, indent=1)
  print(f"{experiment}: {trained} runs trained, {len(runner.records) - trained}"
        f" skipped, {time.time() - tic:.0f} s; tables and figures in {out}")


if __name__ == "__main__":
  app.run(main)
