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
from coarseseg_jax import metrics
from coarseseg_jax import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATS = [f"{m}_{s}" for m in ("accuracy", "boundary_recall", "boundary_f1",
                              "asa", "miou") for s in ("mean", "std")]


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
  with open(tmp_path / "out" / f"{experiment}_runs.json") as f:
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


@pytest.mark.slow
def test_quick_chain_end_to_end_then_skipped(tmp_path):
  quick = experiments.QUICK
  runs = _run(tmp_path, "main")
  out = tmp_path / "out"
  per_method = {"hcfcn_slic": len(quick.lambdas),
                "hcfcn_slicmap": len(quick.kappas)}
  expected = sum(per_method.get(m, 1) for m in experiments.MAIN_METHODS)
  assert runs["trained"] == len(runs["runs"]) == expected * quick.seeds
  assert {r["status"] for r in runs["runs"]} == {"trained"}

  header, rows = _csv(out / "synthetic_coarse.csv")
  assert header == ["method", "n_seeds"] + STATS + ["p_boundary_recall"]
  assert [r["method"] for r in rows] == [
      "fcn", "hcfcn", "hcfcn_slic", "unet", "hcfcn_fine",
      "hcfcn_slic_propagated", "hcfcn_slicmap", "hcfcn_slicmap_slic"]
  for row in rows:
    assert int(row["n_seeds"]) == quick.seeds
    _check_stats(row, superpixels=row["method"].startswith("hcfcn"))
  assert math.isnan(float(rows[1]["p_boundary_recall"]))  # hcfcn itself.

  # The sweeps: one row per candidate, one selected, reused downstream.
  _, sweep = _csv(out / "synthetic_coarse_sweep.csv")
  assert [(r["method"], r["param"]) for r in sweep] == (
      [("hcfcn_slic", f"lmbda{v:g}") for v in quick.lambdas]
      + [("hcfcn_slicmap", f"kappa{v:g}") for v in quick.kappas])
  chosen = {}
  for method in ("hcfcn_slic", "hcfcn_slicmap"):
    picked = [r for r in sweep
              if r["method"] == method and r["selected"] == "1"]
    assert len(picked) == 1
    chosen[method] = picked[0]["param"]
    scores = [float(r["validation_accuracy_mean"]) for r in sweep
              if r["method"] == method]
    assert float(picked[0]["validation_accuracy_mean"]) == max(scores)
  combined = f"{chosen['hcfcn_slicmap']}_{chosen['hcfcn_slic']}"
  for seed in range(quick.seeds):
    assert os.path.exists(tmp_path / "wd" / "main_quick" / "hcfcn_slicmap_slic"
                          / combined / f"seed{seed}" / "results.json")
  markdown = (out / "synthetic_coarse.md").read_text()
  assert "±" in markdown and combined in markdown
  assert "lambda from" in markdown and "kappa from" in markdown
  assert all(f"| {m} |" in markdown for m in experiments.MAIN_METHODS)
  _png(out / "synthetic_coarse_predictions.png")

  # The coarseness sweep (its hcfcn runs are its own: another workdir tree).
  runs = _run(tmp_path, "coarseness")
  assert runs["trained"] == 2 * len(quick.kernels) * quick.coarseness_seeds
  header, rows = _csv(out / "coarseness.csv")
  assert header == (["method", "kernel", "n_seeds"] + STATS
                    + ["p_boundary_recall"])
  assert [(r["method"], int(r["kernel"])) for r in rows] == [
      (m, k) for k in quick.kernels for m in ("hcfcn", "hcfcn_slic")]
  for row in rows:
    assert int(row["n_seeds"]) == quick.coarseness_seeds
    _check_stats(row, superpixels=True)
  _png(out / "coarseness.png")
  footer = (out / "coarseness.md").read_text()
  assert f"coarse kernels {list(quick.kernels)}" in footer, footer
  made = os.listdir(tmp_path / "data" / "coarseseg_synthetic")
  for kernel in quick.kernels:  # One prepared dataset per kernel.
    assert any(d.startswith(f"k{kernel}_") for d in made), (kernel, made)

  # Again: every run is skipped, nothing is retrained, same table.
  results = glob.glob(str(tmp_path / "wd" / "main_quick" / "**" /
                          "results.json"), recursive=True)
  assert len(results) == expected * quick.seeds
  mtimes = {p: os.stat(p).st_mtime_ns for p in results}
  table = (out / "synthetic_coarse.csv").read_text()
  runs = _run(tmp_path, "main")
  assert runs["trained"] == 0
  assert len(runs["runs"]) == expected * quick.seeds
  assert {r["status"] for r in runs["runs"]} == {"skipped"}
  assert {p: os.stat(p).st_mtime_ns for p in results} == mtimes
  assert (out / "synthetic_coarse.csv").read_text() == table


@pytest.mark.slow
def test_subset_of_methods_with_a_longer_schedule(tmp_path):
  epochs = experiments.QUICK.num_epochs + 1
  runs = _run(tmp_path, "main", "--methods=fcn", f"--num_epochs={epochs}",
              "--seeds=1")
  root = tmp_path / "wd" / f"main_quick_e{epochs}"
  assert runs["num_epochs"] == epochs and runs["trained"] == 2
  assert sorted(os.listdir(root)) == ["fcn", "hcfcn"]  # The reference too.
  with open(root / "fcn" / "ce" / "seed0" / "run_config.json") as f:
    assert json.load(f)["train"]["num_epochs"] == epochs
  with open(root / "hcfcn" / "ce" / "seed0" / "metrics.jsonl") as f:
    steps = [json.loads(line)["step"] for line in f]
  per_epoch = experiments.QUICK.num_train // experiments.experiment_config(
      experiments.QUICK).train.batch_size
  assert max(steps) == epochs * per_epoch
  _, rows = _csv(tmp_path / "out" / "synthetic_coarse.csv")
  assert [r["method"] for r in rows] == ["fcn", "hcfcn"]
  assert not os.path.exists(tmp_path / "out" / "synthetic_coarse_sweep.csv")
  note = (tmp_path / "out" / "synthetic_coarse.md").read_text()
  assert f"{epochs} epochs" in note and "lambda from" not in note, note
  _png(tmp_path / "out" / "synthetic_coarse_predictions.png")


def test_main_only_flags_are_refused_for_the_coarseness_sweep(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "coarseseg_jax.experiments", "--quick",
       "--experiment=coarseness", "--methods=fcn", "--lambdas=0.1",
       f"--out={tmp_path}/out", f"--workdir_root={tmp_path}/wd"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert "--methods, --lambdas: only for --experiment=main" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not os.path.exists(tmp_path / "wd")


def test_select_methods():
  assert experiments.select_methods(None) == experiments.MAIN_METHODS
  assert experiments.select_methods(["hcfcn_slic", "fcn"]) == (
      "fcn", "hcfcn", "hcfcn_slic")
  with pytest.raises(ValueError, match="Unknown methods.*'hcfnc'"):
    experiments.select_methods(["fcn", "hcfnc"])
  with pytest.raises(ValueError, match="needs hcfcn_slic and hcfcn_slicmap"):
    experiments.select_methods(["hcfcn_slicmap_slic", "hcfcn_slic"])


def test_run_configs_of_the_methods():
  base = experiments.experiment_config(experiments.QUICK, data_dir="/tmp/d")
  assert base.data.data_dir == "/tmp/d"
  expect = {"fcn": ("fcn", "coarse"), "unet": ("unet", "coarse"),
            "hcfcn": ("hcfcn", "coarse"), "hcfcn_fine": ("hcfcn", "fine"),
            "hcfcn_slic_propagated": ("hcfcn", "slic_propagated")}
  for method, (model, labels) in expect.items():
    config = experiments.run_config(base, method, {}, seed=3)
    assert (config.model.name, config.data.train_labels) == (model, labels)
    assert (config.train.lmbda, config.train.kappa, config.seed) == (0, 0, 3)
  config = experiments.run_config(
      base, "hcfcn_slicmap_slic", {"kappa": 0.05, "lmbda": 0.1, "kernel": 5}, 0)
  assert (config.train.kappa, config.train.lmbda) == (0.05, 0.1)
  assert config.data.coarse_kernel == 5 and base.data.coarse_kernel == 7
  assert experiments.param_name({"lmbda": 0.1, "kernel": 5}) == (
      "kernel5_lmbda0.1")
  assert experiments.param_name({}) == "ce"


def test_full_setup_is_valid_and_boundary_recall_can_be_nonzero():
  config = experiments.experiment_config(experiments.FULL)
  config_validation.validate(config)
  size = experiments.FULL.image_size
  assert config.data.crop_size == size == config.data.builder_kwargs.image_size
  # Below a 200 px diagonal the paper's tolerance is 0 and its recall 0.
  assert metrics.default_radius(size, size) >= 1
  assert set(experiments.FULL.kernels) == {1, 5, 10, 15, 20, 25}
  assert experiments.FULL.seeds >= 3 and len(experiments.FULL.lambdas) >= 3


def test_welch_p_and_summary_rows():
  a, b = [0.5, 0.6, 0.55], [0.3, 0.35, 0.4]
  assert report.welch_p(a, b) == pytest.approx(
      stats.ttest_ind(a, b, equal_var=False).pvalue)
  assert math.isnan(report.welch_p([0.5], b))
  results = [{"test": {"accuracy_mean": v, "boundary_recall_mean": v / 2}}
             for v in a]
  reference = [{"test": {"accuracy_mean": v, "boundary_recall_mean": v / 2}}
               for v in b]
  row = report.summary_row(results, reference, method="m")
  assert row["accuracy_mean"] == pytest.approx(np.mean(a))
  assert row["accuracy_std"] == pytest.approx(np.std(a, ddof=1))
  assert math.isnan(row["asa_mean"])  # No superpixels: absent, NaN.
  assert row["p_boundary_recall"] == pytest.approx(report.welch_p(
      np.array(a) / 2, np.array(b) / 2))
  assert math.isnan(report.summary_row(results, None)["p_accuracy"])


class FakeRunner:
  """Writes the validation record a real run would; no training."""

  def __init__(self, root, score):
    self.root, self.score, self.calls = root, score, []

  workdir = experiments.Runner.workdir

  def run(self, method, params, seed):
    name = experiments.param_name(params)
    self.calls.append((name, seed))
    workdir = self.workdir(method, params, seed)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
      for step, bonus in ((5, -0.5), (10, 0.0)):
        f.write(json.dumps({"step": step, "split": "validation",
                            "accuracy_mean": self.score(params, seed) + bonus})
                + "\n")
    return {"selected_step": 10, "test": {"accuracy_mean": 0.0},
            "name": name}


def test_sweep_selects_on_validation_at_the_selected_step(tmp_path):
  score = lambda p, s: {0.1: 0.5, 0.2: 0.7, 0.3: 0.7}[p["lmbda"]] + 0.01 * s
  runner = FakeRunner(str(tmp_path), score)
  params, results, rows = experiments.sweep(
      runner, "hcfcn_slic", [{"lmbda": v} for v in (0.1, 0.2, 0.3)],
      seeds=[0, 1, 2], sweep_seeds=1, metric="accuracy")
  assert params == {"lmbda": 0.2}  # Tie with 0.3: the earlier one.
  assert [r["selected"] for r in rows] == [0, 1, 0]
  assert rows[1]["validation_accuracy_mean"] == pytest.approx(0.7)
  assert runner.calls == [("lmbda0.1", 0), ("lmbda0.2", 0), ("lmbda0.3", 0),
                          ("lmbda0.2", 1), ("lmbda0.2", 2)]
  assert len(results) == 3 and {r["name"] for r in results} == {"lmbda0.2"}


def test_changed_config_in_an_existing_workdir_stops_the_runner(tmp_path):
  runner = experiments.Runner(experiments.experiment_config(experiments.QUICK),
                              str(tmp_path))
  workdir = runner.workdir("hcfcn", {}, 0)
  os.makedirs(workdir)
  with open(os.path.join(workdir, "run_config.json"), "w") as f:
    json.dump({"seed": 0}, f)
  with pytest.raises(RuntimeError, match="another config"):
    runner.run("hcfcn", {}, 0)


def test_runs_stamped_before_the_assignment_options_still_resume(tmp_path):
  base = experiments.experiment_config(experiments.QUICK)
  runner = experiments.Runner(base, str(tmp_path))
  workdir = runner.workdir("hcfcn", {}, 0)
  os.makedirs(workdir)
  old = experiments._comparable(experiments.run_config(base, "hcfcn", {}, 0))
  assert "assign_init" not in old["model"] and "parent_bias" not in old["model"]
  with open(os.path.join(workdir, "run_config.json"), "w") as f:
    json.dump(old, f)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump({"done": 1}, f)
  assert runner.run("hcfcn", {}, 0) == {"done": 1}
  assert runner.records[-1]["status"] == "skipped"
  base.model.parent_bias = 2.0  # Now a different model: refused.
  with pytest.raises(RuntimeError, match="another config"):
    runner.run("hcfcn", {}, 0)
