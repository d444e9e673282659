"""The experiment runner: the --quick chain end to end and resumed; helpers."""

import csv
import glob
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats
from skimage import io as skio

from coarseseg_jax import config_validation
from coarseseg_jax import experiments
from coarseseg_jax import methods
from coarseseg_jax import metrics
from coarseseg_jax import report
from coarseseg_jax.configs import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATS = [f"{m}_{s}" for m in ("accuracy", "boundary_recall", "boundary_f1",
                              "asa", "miou") for s in ("mean", "std")]
P_COLUMNS = ["p_boundary_recall", "p_accuracy", "p2_boundary_recall",
             "p2_accuracy"]


def _run(tmp_path, experiment, *flags):
  """The CLI in a subprocess on ONE CPU device (compiles faster than 8)."""
  env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "").replace(
      "--xla_force_host_platform_device_count=8", ""))
  proc = subprocess.run(
      [sys.executable, "-m", "coarseseg_jax.experiments", "--quick",
       f"--experiment={experiment}", f"--out={tmp_path}/out",
       f"--workdir_root={tmp_path}/wd", f"--data_dir={tmp_path}/data",
       *flags],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-5000:]
  tag = "synthetic"
  for flag in flags:
    if flag.startswith("--config.data.manual_dir="):
      tag = "folder-" + os.path.basename(flag.split("=", 1)[1])
  with open(tmp_path / "out" / f"{tag}_{experiment}_runs.json") as f:
    return json.load(f)


def _csv(path):
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  return rows[0], [dict(zip(rows[0], r)) for r in rows[1:]]


def _check_stats(row, superpixels):
  for key in STATS:
    value = float(row[key])
    if key.startswith("asa") and not superpixels:
      assert math.isnan(value), (row["method"], key)
    else:
      assert math.isfinite(value) and 0.0 <= value <= 1.0, (row, key)
  p = float(row["p_boundary_recall"])
  assert math.isnan(p) or 0.0 <= p <= 1.0


def _png(path):
  image = skio.imread(path)
  assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300


MAIN_SUBSET = ("fcn", "hcfcn_slic", "hcfcn_slicmap", "hcfcn_slicmap_slic",
               "hcfcn_dot_slic")


@pytest.mark.slow
def test_quick_chain_end_to_end_then_skipped(tmp_path):
  """main (every kind of method: plain, swept, combined, taking another's
  choice), its tables, figure and commands; run again, nothing retrains."""
  quick = methods.QUICK
  runs = _run(tmp_path, "main", "--methods=" + ",".join(MAIN_SUBSET))
  names = methods.select_methods(MAIN_SUBSET)
  assert names == ("fcn", "hcfcn", "hcfcn_slic", "hcfcn_slicmap",
                   "hcfcn_slicmap_slic", "hcfcn_dot_slic")
  assert runs["trained"] == len(runs["runs"]) == len(names) * quick.seeds
  assert {r["status"] for r in runs["runs"]} == {"trained"}
  out = tmp_path / "out"
  header, rows = _csv(out / "synthetic_coarse.csv")
  assert header == ["method", "param", "n_seeds"] + STATS + P_COLUMNS
  assert [r["method"] for r in rows] == list(names)
  for row in rows:
    assert int(row["n_seeds"]) == quick.seeds
    _check_stats(row, superpixels=row["method"].startswith("hcfcn"))
  by_method = {r["method"]: r for r in rows}
  assert math.isnan(float(by_method["hcfcn"]["p_boundary_recall"]))
  assert math.isnan(float(by_method["fcn"]["p2_accuracy"]))
  assert math.isfinite(float(by_method["hcfcn"]["p2_accuracy"]))

  # The sweeps: one row per candidate, one selected, reused downstream.
  _, sweep = _csv(out / "synthetic_coarse_sweep.csv")
  assert [(r["method"], r["param"]) for r in sweep] == (
      [("hcfcn_slic", f"lmbda{v:g}") for v in quick.lambdas]
      + [("hcfcn_slicmap", f"kappa{v:g}") for v in quick.kappas])
  lam = f"lmbda{quick.lambdas[0]:g}"
  assert by_method["hcfcn_dot_slic"]["param"] == lam
  assert by_method["hcfcn_slicmap_slic"]["param"] == (
      f"kappa{quick.kappas[0]:g}_{lam}")
  markdown = (out / "synthetic_coarse.md").read_text()
  assert "±" in markdown and "lambda from" in markdown
  assert "p (BR) vs fcn" in markdown
  _png(out / "synthetic_coarse_predictions.png")

  # Each run is one coarseseg_jax.main command, recorded; its config.json
  # holds the method's delta.
  root = tmp_path / "wd" / "synthetic" / "main_quick"
  record = [r for r in runs["runs"] if "hcfcn_dot_slic" in r["workdir"]][0]
  assert record["command"].startswith(
      "python -m coarseseg_jax.main --config=")
  assert "--config.model.similarity=dot" in record["command"]
  assert f"--workdir={record['workdir']}" in record["command"]
  with open(root / "hcfcn_dot_slic" / lam / "seed1" / "config.json") as f:
    config = json.load(f)
  assert config["model"]["similarity"] == "dot" and config["seed"] == 1
  assert config["train"]["lmbda"] == quick.lambdas[0]

  # Again: every run is skipped, nothing is retrained, same table.
  results = glob.glob(str(root / "**" / "results.json"), recursive=True)
  assert len(results) == len(names) * quick.seeds
  mtimes = {p: os.stat(p).st_mtime_ns for p in results}
  table = (out / "synthetic_coarse.csv").read_text()
  runs = _run(tmp_path, "main", "--methods=" + ",".join(MAIN_SUBSET))
  assert runs["trained"] == 0
  assert {r["status"] for r in runs["runs"]} == {"skipped"}
  assert {p: os.stat(p).st_mtime_ns for p in results} == mtimes
  assert (out / "synthetic_coarse.csv").read_text() == table


def test_main_only_flags_are_refused_for_the_coarseness_sweep(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "coarseseg_jax.experiments", "--quick",
       "--experiment=coarseness", "--methods=fcn", "--lambdas=0.1",
       f"--out={tmp_path}/out", f"--workdir_root={tmp_path}/wd"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert "--methods, --lambdas: only for --experiment=main" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not os.path.exists(tmp_path / "wd")


def test_select_methods():
  assert methods.select_methods(None) == methods.MAIN_METHODS
  assert methods.select_methods(["hcfcn_slic", "fcn"]) == (
      "fcn", "hcfcn", "hcfcn_slic")
  with pytest.raises(ValueError, match="Unknown methods.*'hcfnc'"):
    methods.select_methods(["fcn", "hcfnc"])
  with pytest.raises(ValueError, match="needs hcfcn_slic and hcfcn_slicmap"):
    methods.select_methods(["hcfcn_slicmap_slic", "hcfcn_slic"])
  with pytest.raises(ValueError, match="hcfcn_dot_slic needs hcfcn_slic"):
    methods.select_methods(["hcfcn_dot_slic"])


def test_methods_are_config_deltas():
  base = methods.apply(synthetic.get_config(), methods.QUICK_SYNTHETIC)
  expect = {"fcn": ("fcn", "coarse"), "unet": ("unet", "coarse"),
            "hcfcn": ("hcfcn", "coarse"), "hcfcn_fine": ("hcfcn", "fine"),
            "hcfcn_slic_propagated": ("hcfcn", "slic_propagated")}
  for method, (model, labels) in expect.items():
    config = methods.apply(base, methods.run_delta(method, {}, seed=3))
    assert (config.model.name, config.data.train_labels) == (model, labels)
    assert (config.train.lmbda, config.train.kappa, config.seed) == (0, 0, 3)
  delta = methods.run_delta("hcfcn_slicmap_slic",
                            {"kappa": 0.05, "lmbda": 0.1, "kernel": 5}, 0)
  config = methods.apply(base, delta)
  assert (config.train.kappa, config.train.lmbda) == (0.05, 0.1)
  assert config.data.coarse_kernel == 5 and base.data.coarse_kernel == 7
  dot = methods.apply(base, methods.run_delta("hcfcn_dot", {}, 0))
  assert (dot.model.similarity, dot.model.tau) == ("dot", 0.07)
  option = methods.apply(base, methods.run_delta(
      "hcfcn_slic", {"option": "dot_zero_pb2", "lmbda": 0.025}, 0))
  assert (option.model.assign_init, option.model.parent_bias) == ("zero", 2.0)
  assert methods.param_name({"lmbda": 0.1, "kernel": 5}) == "kernel5_lmbda0.1"
  assert methods.param_name({"option": "cosine", "lmbda": 0.025}) == (
      "cosine_lmbda0.025")
  assert methods.param_name({}) == "ce"
  command = methods.command_line("configs/synthetic.py",
                                 {"model.stage_blocks": (1, 1, 1)}, delta,
                                 "w/x")
  assert "--config.model.stage_blocks='(1,1,1)'" in command
  assert command.endswith("--config.seed=0 --workdir=w/x")


def test_full_setup_is_valid_and_boundary_recall_can_be_nonzero():
  config = methods.apply(synthetic.get_config(), methods.FULL_SYNTHETIC)
  config_validation.validate(config)
  size = config.data.builder_kwargs.image_size
  assert config.data.crop_size == size == 160
  # Below a 200 px diagonal the paper's tolerance is 0 and its recall 0.
  assert metrics.default_radius(size, size) >= 1
  assert set(methods.FULL.kernels) == {1, 5, 10, 15, 20, 25}
  assert methods.FULL.seeds >= 3 and len(methods.FULL.lambdas) >= 3


def test_welch_p_and_summary_rows():
  a, b = [0.5, 0.6, 0.55], [0.3, 0.35, 0.4]
  assert report.welch_p(a, b) == pytest.approx(
      stats.ttest_ind(a, b, equal_var=False).pvalue)
  assert math.isnan(report.welch_p([0.5], b))
  results = [{"test": {"accuracy_mean": v, "boundary_recall_mean": v / 2}}
             for v in a]
  reference = [{"test": {"accuracy_mean": v, "boundary_recall_mean": v / 2}}
               for v in b]
  row = report.summary_row(results, reference, results, method="m")
  assert row["accuracy_mean"] == pytest.approx(np.mean(a))
  assert row["accuracy_std"] == pytest.approx(np.std(a, ddof=1))
  assert math.isnan(row["asa_mean"])  # No superpixels: absent, NaN.
  assert row["p_boundary_recall"] == pytest.approx(report.welch_p(
      np.array(a) / 2, np.array(b) / 2))
  assert row["p2_accuracy"] == pytest.approx(1.0)  # Against itself.
  assert math.isnan(report.summary_row(results, None)["p_accuracy"])


class FakeRunner:
  """Returns what a finished run's results.json holds; no training."""

  def __init__(self, score):
    self.score, self.calls = score, []

  def run(self, method, params, seed):
    name = methods.param_name(params)
    self.calls.append((name, seed))
    return {"validation": {"accuracy_mean": self.score(params, seed)},
            "test": {"accuracy_mean": 0.0}, "name": name}


def test_sweep_selects_on_validation_of_the_selected_checkpoint():
  score = lambda p, s: {0.1: 0.5, 0.2: 0.7, 0.3: 0.7}[p["lmbda"]] + 0.01 * s
  runner = FakeRunner(score)
  params, results, rows = experiments.sweep(
      runner, "hcfcn_slic", [{"lmbda": v} for v in (0.1, 0.2, 0.3)],
      seeds=[0, 1, 2], sweep_seeds=1, metric="accuracy")
  assert params == {"lmbda": 0.2}  # Tie with 0.3: the earlier one.
  assert [r["selected"] for r in rows] == [0, 1, 0]
  assert rows[1]["validation_accuracy_mean"] == pytest.approx(0.7)
  assert runner.calls == [("lmbda0.1", 0), ("lmbda0.2", 0), ("lmbda0.3", 0),
                          ("lmbda0.2", 1), ("lmbda0.2", 2)]
  assert len(results) == 3 and {r["name"] for r in results} == {"lmbda0.2"}
