"""The experiment runner: the --quick chain end to end and resumed; helpers."""

import csv
import dataclasses
import glob
import json
import math
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
from skimage import io as skio

from coarseseg_jax import config_validation
from coarseseg_jax import errors
from coarseseg_jax import input_pipeline as ip
from coarseseg_jax import metrics
from coarseseg_jax import workdir as workdir_lib
from coarseseg_jax.configs import default
from coarseseg_jax.configs import synthetic
from coarseseg_jax.experiments import designs
from coarseseg_jax.experiments import methods
from coarseseg_jax.experiments import report
from coarseseg_jax.experiments import runner as runner_lib
from coarseseg_jax.experiments import stats
from coarseseg_jax.experiments import tables

import helpers  # pylint: disable=g-bad-import-order
import pipeline_fixtures as fixtures  # pylint: disable=g-bad-import-order

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATS = [f"{m}_{s}" for m in ("accuracy", "boundary_recall", "boundary_f1",
                              "asa", "miou") for s in ("mean", "std")]


@pytest.fixture(name="cli")
def _cli():
  """The experiments' command line, `helpers.cli_session`: one process for
  the test's commands, on ONE CPU device (compiles faster than 8)."""
  env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "").replace(
      "--xla_force_host_platform_device_count=8", ""))
  with helpers.cli_session("coarseseg_jax.experiments.__main__", timeout=1800,
                           env=env) as run:
    yield run


def _argv(tmp_path, experiment, *flags):
  """A --quick command line of the experiments, everything under tmp_path."""
  return ["--quick", f"--experiment={experiment}", f"--out={tmp_path}/out",
          f"--workdir_root={tmp_path}/wd", f"--data_dir={tmp_path}/data",
          f"--archive={tmp_path}/archive", *flags]


def _run(cli, tmp_path, experiment, *flags):
  """One command of the experiments (`cli`); what it wrote in *_runs.json."""
  proc = cli(_argv(tmp_path, experiment, *flags))
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


def _png(path):
  image = skio.imread(path)
  assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300


MAIN_SUBSET = ("fcn", "hcfcn", "hcfcn_slic", "hcfcn_slic_refined",
               "hcfcn_slicmap", "hcfcn_slicmap_slic")
# A lambda sweep of two values, no widening; kappa fixed (no sweep runs).
LAMBDAS = (0.05, 0.1)
MAIN_FLAGS = ("--methods=" + ",".join(MAIN_SUBSET),
              "--lambdas=" + ",".join(map(str, LAMBDAS)), "--widen_limit=0")


def _floats(row, *keys):
  return [float(row[k]) for k in keys]


def _check_comparisons(rows, margin=stats.EQUIVALENCE_MARGIN):
  """Holm never lowers a p-value; the reading follows the tests."""
  p = [float(r["p_paired"]) for r in rows]
  assert [float(r["p_paired_holm"]) for r in rows] == pytest.approx(
      stats.holm(p))
  for row in rows:
    raw, holm, tost = _floats(row, "p_paired", "p_paired_holm", "p_tost_holm")
    low, high = _floats(row, "ci_low", "ci_high")
    assert math.isnan(raw) or 0.0 <= raw <= holm <= 1.0
    assert math.isnan(low) or low <= float(row["mean_diff"]) <= high
    verdict = row["verdict"]
    if verdict.startswith("equivalent"):
      assert tost < 0.05 and f"±{margin:g}" in verdict
    elif verdict.startswith(("higher", "lower")):
      assert holm < 0.05
    else:
      assert verdict.startswith(("inconclusive: 95 % CI", "too few pairs"))


@pytest.mark.slow
def test_quick_chain_end_to_end_then_skipped(tmp_path, cli):
  """main (every kind of method: plain, swept, combined, taking another's
  choice): sweeps on selection seeds only, per-seed CSV from which the
  tables recompute, paired comparisons, figure, commands; run again,
  nothing retrains; with the workdirs gone, the archive restores every run
  and the tables are the same; then --cosine runs."""
  quick = methods.QUICK
  assert len(quick.kappas) == 1
  names = methods.select_methods(MAIN_SUBSET)
  assert names == ("fcn", "hcfcn", "hcfcn_slic", "hcfcn_slic_refined",
                   "hcfcn_slicmap", "hcfcn_slicmap_slic")
  reported = methods.report_seeds(quick.seeds)
  select = methods.selection_seeds(quick.sweep_seeds)
  assert not set(reported) & set(select)
  root = tmp_path / "wd" / "synthetic" / "main_quick"
  out = tmp_path / "out"

  # Stopped part-way (a live run holds hcfcn's first workdir): the runs
  # trained before the stop keep their records, written as they finished.
  held = root / "hcfcn" / "ce" / f"seed{reported[0]}"
  held.mkdir(parents=True)
  (held / workdir_lib.LOCK_FILE).write_text(json.dumps(
      {"host": socket.gethostname(), "pid": os.getpid(), "started": "now"}))
  proc = cli(_argv(tmp_path, "main", *MAIN_FLAGS))
  assert proc.returncode != 0 and "is in use by a run" in proc.stderr
  stopped = json.loads((out / "synthetic_main_runs.json").read_text())
  assert not stopped["finished"] and stopped.pop("earlier_calls") == []
  assert [(os.path.relpath(r["workdir"], root), r["status"])
          for r in stopped["runs"]] == [
              (f"fcn/ce/seed{s}", "trained") for s in reported]
  assert stopped["trained"] == len(reported)
  (held / workdir_lib.LOCK_FILE).unlink()

  runs = _run(cli, tmp_path, "main", *MAIN_FLAGS)
  assert runs["finished"] and runs["earlier_calls"] == [stopped]
  assert runs["seeds"] == list(reported)
  assert runs["selection_seeds"] == list(select)
  sweep_runs = len(LAMBDAS) * len(select)
  refines = [r for r in runs["runs"] if r["status"] == "refined"]
  assert [r["status"] for r in runs["runs"][:len(reported)]] == [
      "skipped"] * len(reported)  # fcn's, trained by the stopped call.
  assert runs["trained"] + stopped["trained"] == len(runs["runs"]) - len(
      refines) == len(names) * len(reported) + sweep_runs
  assert len(refines) == len(reported)  # One per seed of hcfcn_slic.
  assert {r["status"] for r in runs["runs"]} == {"skipped", "trained",
                                                  "refined"}
  # What each run cost, also where this call found it finished.
  assert all(r["train_seconds"] > 0 for r in runs["runs"]
             if r["status"] != "refined")
  header, rows = _csv(out / "synthetic_coarse.csv")
  assert header == tables.MAIN_COLUMNS == ["method", "param", "n_seeds"] + STATS
  assert [r["method"] for r in rows] == list(names)
  for row in rows:
    assert int(row["n_seeds"]) == quick.seeds
    _check_stats(row, superpixels=row["method"].startswith("hcfcn"))

  # Paired comparisons: each method against hcfcn and fcn, each pair once.
  header, tests = _csv(out / "synthetic_coarse_tests.csv")
  assert header == ["method", "reference"] + tables.COMPARISON_COLUMNS
  pairs = {(r["method"], r["reference"]) for r in tests}
  assert ("fcn", "hcfcn") in pairs and ("hcfcn", "fcn") not in pairs
  assert ("hcfcn_slic_refined", "hcfcn_slic") in pairs  # 2nd round vs 1st.
  assert len(tests) == len(tables.TESTED) * (2 * len(names) - 3 + 1)
  assert {int(r["n_pairs"]) for r in tests} == {quick.seeds}
  _check_comparisons(tests)

  # Per-seed data: reported seeds only; the tables recompute from it.
  seed_rows = tables.read_seeds(out / "synthetic_main_seeds.csv")
  assert {r["seed"] for r in seed_rows} == set(reported)
  assert len(seed_rows) == len(names) * len(reported)
  assert {r["validation_labels"] for r in seed_rows} == {"fine"}
  for metric in tables.TEST_METRICS:
    assert f"test_{metric}" in seed_rows[0]
  summary, comparisons = tables.main_tables(seed_rows)
  assert tables.csv_text(summary, tables.MAIN_COLUMNS) == (
      out / "synthetic_coarse.csv").read_text()
  assert tables.csv_text(comparisons, ["method", "reference"]
                         + tables.COMPARISON_COLUMNS) == (
                             out / "synthetic_coarse_tests.csv").read_text()
  by_method = {r["method"]: r for r in rows}
  hcfcn = [r["test_accuracy"] for r in seed_rows if r["method"] == "hcfcn"]
  assert float(by_method["hcfcn"]["accuracy_mean"]) == pytest.approx(
      np.mean(hcfcn), abs=1e-5)

  # The sweep: one row per value and selection seed, one value selected;
  # kappa's one value is taken without selection runs.
  header, sweep = _csv(out / "synthetic_coarse_sweep.csv")
  assert "seed" in header and {int(r["seed"]) for r in sweep} == set(select)
  assert [(r["method"], r["param"]) for r in sweep] == [
      ("hcfcn_slic", f"lmbda{v:g}") for v in LAMBDAS for _ in select]
  chosen = {float(r["value"]) for r in sweep if r["selected"] == "1"}
  assert len(chosen) == 1
  lam = f"lmbda{chosen.pop():g}"
  assert by_method["hcfcn_slic"]["param"] == lam
  assert by_method["hcfcn_slicmap_slic"]["param"] == (
      f"kappa{quick.kappas[0]:g}_{lam}")
  markdown = (out / "synthetic_coarse.md").read_text()
  assert "±" in markdown and "selection seeds [100]" in markdown
  assert "still at the grid's" in markdown  # Two values: always an edge.
  assert f"kappa of hcfcn_slicmap fixed at {quick.kappas[0]:g}" in markdown
  assert "| a | b | metric |" in markdown and "Holm" in markdown
  _png(out / "synthetic_coarse_predictions.png")

  # Each run is one coarseseg_jax.main command, recorded; its config.json
  # holds the method's delta. The sweep ran on selection seeds, the table's
  # hcfcn_slic on the reported ones.
  combined = f"kappa{quick.kappas[0]:g}_{lam}"
  record = [r for r in runs["runs"]
            if "hcfcn_slicmap_slic" in r["workdir"]][0]
  assert record["command"].startswith(
      "python -m coarseseg_jax.main --config=")
  assert f"--config.train.kappa={quick.kappas[0]:g}" in record["command"]
  assert f"--workdir={record['workdir']}" in record["command"]
  with open(root / "hcfcn_slicmap_slic" / combined / "seed1" /
            "config.json") as f:
    config = json.load(f)
  assert config["train"]["kappa"] == quick.kappas[0] and config["seed"] == 1
  assert f"lmbda{config['train']['lmbda']:g}" == lam
  assert config["data"]["validation_labels"] == "fine"
  seeds_run = {int(p.name[4:]) for p in (root / "hcfcn_slic" / lam).iterdir()}
  assert seeds_run == set(select) | set(reported)
  # The second round trained on the labels its seed's first round refined.
  with open(root / "hcfcn_slic_refined" / lam / "seed1" / "config.json") as f:
    data = json.load(f)["data"]
  source = str(root / "hcfcn_slic" / lam / "seed1")
  assert data["train_labels"] == "refined"
  assert data["refined_dir"] == os.path.join(source, methods.REFINED_SUBDIR)
  assert data["refined_from"].startswith(f"{source} step ")
  assert os.path.exists(os.path.join(data["refined_dir"],
                                     "refine_train.json"))
  assert f"--mode=refine --split=train --output_dir={data['refined_dir']}" in (
      refines[1]["command"])
  kappa = root / "hcfcn_slicmap" / f"kappa{quick.kappas[0]:g}"
  assert {p.name for p in kappa.iterdir()} == {f"seed{s}" for s in reported}

  # Again: every run is skipped, nothing is retrained, same tables.
  results = glob.glob(str(root / "**" / "results.json"), recursive=True)
  assert len(results) == runs["trained"] + stopped["trained"]
  mtimes = {p: os.stat(p).st_mtime_ns for p in results}
  written = {name: (out / name).read_text() for name in (
      "synthetic_coarse.csv", "synthetic_coarse_tests.csv",
      "synthetic_main_seeds.csv", "synthetic_coarse_sweep.csv")}
  first = {k: v for k, v in runs.items() if k != "earlier_calls"}
  assert first["ci_target"] is None
  # With --ci_target at --max_seeds already: one pass, its width recorded.
  runs = _run(cli, tmp_path, "main", *MAIN_FLAGS, "--ci_target=1e-9",
              f"--max_seeds={quick.seeds}")
  assert runs["trained"] == 0 and runs["seeds"] == list(reported)
  assert {r["status"] for r in runs["runs"]} == {"skipped"}
  assert runs["ci_target"] == {
      "pair": "hcfcn_slic - fcn", "metric": "test_accuracy", "target": 1e-9,
      "max_seeds": quick.seeds, "half_widths": [{
          "validation_labels": "fine", "seeds": quick.seeds,
          "half_width": pytest.approx(tables.ci_half_width(seed_rows))}]}
  # How they were trained stays.
  assert runs["earlier_calls"] == [stopped, first]
  assert {p: os.stat(p).st_mtime_ns for p in results} == mtimes
  assert {name: (out / name).read_text() for name in written} == written

  # Another machine: no workdirs, only the archive (config.json and
  # results.json of each run, the refine reports): nothing trains or
  # refines, the tables are the same.
  archive = tmp_path / "archive" / "synthetic" / "main_quick"
  kept = {os.path.relpath(p, archive) for p in glob.glob(
      str(archive / "**" / "*"), recursive=True) if os.path.isfile(p)}
  assert kept == {os.path.relpath(p, root) for p in results} | {
      os.path.relpath(p.replace("results.json", "config.json"), root)
      for p in results} | {
          os.path.join(os.path.relpath(r["workdir"], root), "refine_train.json")
          for r in refines}
  shutil.rmtree(tmp_path / "wd")
  runs = _run(cli, tmp_path, "main", *MAIN_FLAGS)
  assert runs["trained"] == 0
  assert {r["status"] for r in runs["runs"]} == {"restored"}
  assert {name: (out / name).read_text() for name in written} == written
  # A refined run not in the archive: its source, restored without a
  # checkpoint, is trained again to refine with. Its archived figures are
  # made to differ (as another machine's would): the tables keep them, the
  # retrained ones are kept beside them and the record names the change.
  refined = os.path.relpath(refines[1]["workdir"], root)
  os.remove(archive / refined / "refine_train.json")
  shutil.rmtree(archive / "hcfcn_slic_refined" / lam / "seed1")
  source = archive / "hcfcn_slic" / lam / "seed1"
  other = json.loads((source / "results.json").read_text())
  other["test"]["accuracy_mean"] = 0.123
  (source / "results.json").write_text(json.dumps(other))
  shutil.rmtree(tmp_path / "wd")
  runs = _run(cli, tmp_path, "main", *MAIN_FLAGS)
  done = {os.path.relpath(r["workdir"], root): r["status"]
          for r in runs["runs"] if r["status"] != "restored"}
  assert done == {f"hcfcn_slic/{lam}/seed1": "trained", refined: "refined",
                  f"hcfcn_slic_refined/{lam}/seed1": "trained"}
  assert (archive / "hcfcn_slic_refined" / lam / "seed1" /
          "results.json").exists()
  differs = [r["differs"] for r in runs["runs"] if "differs" in r]
  assert len(differs) == 1 and set(differs[0]) == {"accuracy"}
  kept, retrained = differs[0]["accuracy"]
  assert kept == 0.123 and retrained != 0.123
  for where in (source, root / "hcfcn_slic" / lam / "seed1"):
    assert json.loads((where / "results.json").read_text()) == other
    assert json.loads((where / runner_lib.RETRAINED).read_text())[
        "test"]["accuracy_mean"] == retrained

  # --cosine (same process and data): the budget experiment's schedule in
  # the main table's runs (what a chosen budget was chosen with), in
  # workdirs of their own.
  runs = _run(cli, tmp_path, "main", "--methods=hcfcn", "--seeds=1",
              "--num_epochs=2", "--cosine")
  record, = runs["runs"]
  cosine = tmp_path / "wd" / "synthetic" / "main_quick_e2_cosine"
  assert os.path.relpath(record["workdir"], cosine) == os.path.join(
      "hcfcn", "ce", "seed0")
  assert "--config.train.lr_schedule=warmup_cosine" in record["command"]
  with open(os.path.join(record["workdir"], "config.json")) as f:
    train = json.load(f)["train"]
  assert (train["num_epochs"], train["lr_schedule"], train["warmup_steps"]) == (
      2, "warmup_cosine", 0)
  note = (out / "synthetic_coarse.md").read_text()
  assert "2 epochs, learning rate cosine to 0 at the last step" in note


def test_coarse_targets_are_the_coarse_labels(tmp_path):
  """What coarse validation evaluates against: the stored coarse labels in
  `label_fine` (and `label`), whatever the training labels."""
  builder = fixtures.prepare(str(tmp_path / "tfds"))
  config = default.get_config().data
  config.train_labels = "fine"
  sizes = dict(enumerate(fixtures.TinySegmentation.BUILDER_CONFIGS[0]
                         .test_sizes))
  seen = 0
  for targets in ("coarse", "fine"):
    for batch in ip.create_eval_iterator(builder, config, "test", 4,
                                         process_index=0, process_count=1,
                                         targets=targets):
      for i in np.flatnonzero(batch["mask"]):
        k = int(batch["id"][i].decode().split("_")[1])
        h, w = sizes[k]
        want = fixtures.make_example(h, w, seed=1000 + k)[f"label_{targets}"]
        for key in ("label_fine", "label"):
          got = batch[key][i]
          if targets == "fine" and key == "label":
            continue
          np.testing.assert_array_equal(got[:h, :w], want[..., 0])
          assert (got[h:] == 255).all() and (got[:, w:] == 255).all()
        seen += 1
  assert seen == 2 * len(sizes)
  with pytest.raises(ValueError, match="targets='both' must be"):
    ip.create_eval_iterator(builder, config, "test", 4, targets="both")


@pytest.mark.slow  # The command line in a subprocess: ~10 s of imports.
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


# Flags the experiments refuse, with what the one line says. Checked in one
# process (`helpers.cli_runs`); the test above runs one as a user would.
BAD_FLAGS = [
    (("--validation_labels=coarse", "--select_metric=boundary_recall"),
     "--select_metric=boundary_recall needs fine validation labels"),
    (("--seeds=101",), "101 reported seeds: use 1 to 100"),
    (("--margin=0",), "--margin=0.0 must be > 0"),
    (("--experiment=budget", "--budgets=0,25"),
     "--budgets=0,25: give whole numbers of epochs >= 1"),
    (("--experiment=budget", "--lambdas=0.05,0.1"),
     "--lambdas=0.05,0.1: the budget experiment takes one value"),
    (("--experiment=budget", "--methods=hcfcn_slic,hcfcn_slic_refined"),
     "hcfcn_slic_refined learns from refined labels"),
    (("--experiment=budget", "--num_epochs=50", "--cosine"),
     "--num_epochs, --cosine: only for --experiment=main or coarseness or "
     "similarity"),
    (("--experiment=main", "--budgets=25"),
     "--budgets: only for --experiment=budget"),
    (("--dataset=texture_mosaic", "--config=configs/folder.py"),
     "--dataset=texture_mosaic: --config gives the dataset"),
    (("--ci_target=0",), "--ci_target=0.0 must be > 0"),
    (("--ci_target=0.02", "--methods=hcfcn,hcfcn_slic"),
     "--ci_target: narrows the CI of hcfcn_slic - fcn; --methods lacks fcn"),
    (("--ci_target=0.02", "--seeds=5", "--max_seeds=3"),
     "--max_seeds=3: give at least --seeds (5) and 2"),
    (("--max_seeds=5",), "--max_seeds: only with --ci_target"),
    (("--ci_target=0.02", "--max_seeds=101"),
     "--max_seeds: 101 reported seeds: use 1 to 100"),
    (("--experiment=budget", "--ci_target=0.02"),
     "--ci_target: only for --experiment=main"),
]


@pytest.mark.slow  # One command-line process: ~10 s of imports.
def test_bad_selection_and_budget_flags_are_one_line(tmp_path):
  argvs = [["--quick", *flags, f"--out={tmp_path}/out",
            f"--workdir_root={tmp_path}/wd"] for flags, _ in BAD_FLAGS]
  results = helpers.cli_runs("coarseseg_jax.experiments.__main__", argvs)
  for result, (flags, message) in zip(results, BAD_FLAGS):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, (flags, result.stderr)
    assert lines[0].startswith("error: ") and message in lines[0], flags
  assert not os.path.exists(tmp_path / "wd")


def test_budget_methods_are_the_ones_asked_for():
  """The budget table has no t-tests: --methods=hcfcn_slic runs only it (a
  second lane beside a chain that runs the others), no reference added."""
  assert methods.budget_methods(None) == methods.BUDGET_METHODS
  assert methods.budget_methods(["hcfcn_slic"]) == ("hcfcn_slic",)
  assert methods.budget_methods(["hcfcn_slic", "fcn"]) == ("fcn",
                                                           "hcfcn_slic")
  with pytest.raises(ValueError, match="hcfcn_slic_refined learns from"):
    methods.budget_methods(["hcfcn_slic", "hcfcn_slic_refined"])
  with pytest.raises(ValueError, match="Unknown methods"):
    methods.budget_methods(["hcfnc"])


def test_select_methods():
  assert methods.select_methods(None) == methods.MAIN_METHODS
  # The order given, hcfcn (the reference, always added) last unless named,
  # each method after those it needs.
  assert methods.select_methods(["hcfcn_slic", "fcn"]) == (
      "hcfcn_slic", "fcn", "hcfcn")
  assert methods.select_methods(["fcn", "hcfcn", "hcfcn_slic"]) == (
      "fcn", "hcfcn", "hcfcn_slic")
  assert methods.select_methods(
      ["hcfcn_slicmap_slic", "fcn", "hcfcn_slicmap", "hcfcn_slic"]) == (
          "hcfcn_slic", "hcfcn_slicmap", "hcfcn_slicmap_slic", "fcn", "hcfcn")
  with pytest.raises(ValueError, match="Unknown methods.*'hcfnc'"):
    methods.select_methods(["fcn", "hcfnc"])
  with pytest.raises(ValueError, match="needs hcfcn_slic and hcfcn_slicmap"):
    methods.select_methods(["hcfcn_slicmap_slic", "hcfcn_slic"])
  with pytest.raises(ValueError, match="hcfcn_dot_slic needs hcfcn_slic"):
    methods.select_methods(["hcfcn_dot_slic"])
  with pytest.raises(ValueError, match="hcfcn_slic_refined needs hcfcn_slic"):
    methods.select_methods(["hcfcn_slic_refined"])


def test_methods_are_config_deltas():
  base = methods.apply(synthetic.get_config(), methods.QUICK_SYNTHETIC)
  expect = {"fcn": ("fcn", "coarse"), "unet": ("unet", "coarse"),
            "hcfcn": ("hcfcn", "coarse"), "hcfcn_fine": ("hcfcn", "fine"),
            "hcfcn_slic_propagated": ("hcfcn", "slic_propagated"),
            "hcfcn_slic_refined": ("hcfcn", "refined"),
            "hcfcn_slic_refined_free": ("hcfcn", "refined")}
  for method, (model, labels) in expect.items():
    config = methods.apply(base, methods.run_delta(method, {}, seed=3))
    assert (config.model.name, config.data.train_labels) == (model, labels)
    assert (config.train.lmbda, config.train.kappa, config.seed) == (0, 0, 3)
    assert config.data.refined_fill == (
        "best_free" if method.endswith("_free") else "")
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


def test_authors_code_rows_say_their_size():
  """`hcfcn_dot*`: the authors' code at the experiment's (half) size, whose
  model departs only in its size (width, head, 32 similarity features);
  `hcfcn_authors*`: at the authors' size (full-width encoder, 48 features),
  no departure of the model at all. (Both keep the experiment's data,
  schedule and protocol, shared by every row: those depart too.)"""
  base = methods.apply(synthetic.get_config(), methods.FULL_SYNTHETIC)

  def model_departures(config):
    return sorted(k for k in default.departures(config)
                  if k in default.AUTHORS_CODE or k.startswith("model."))

  for method in ("hcfcn_dot", "hcfcn_dot_slic"):
    config = methods.apply(base, methods.run_delta(method, {"lmbda": 0.05}, 0))
    assert model_departures(config) == [
        "model.head_channels", "model.sim_features", "model.width"]
    assert (config.model.width, config.model.sim_features) == (32, 32)
  full = default.get_config()
  for method in ("hcfcn_authors", "hcfcn_authors_slic"):
    config = methods.apply(base, methods.run_delta(method, {"lmbda": 0.05}, 0))
    config = config_validation.resolve(config).config
    assert model_departures(config) == []
    assert (config.model.width, config.model.head_channels,
            tuple(config.model.stage_blocks), config.model.sim_features) == (
                full.model.width, full.model.head_channels,
                tuple(full.model.stage_blocks), 48)
    assert (config.model.name, config.data.train_labels) == ("hcfcn", "coarse")
  assert config.train.lmbda == 0.05
  assert methods.METHODS["hcfcn_authors_slic"].needs() == ("hcfcn_slic",)
  # The quick setup keeps them at the authors' size too.
  quick = methods.apply(synthetic.get_config(), methods.QUICK_SYNTHETIC)
  assert methods.apply(quick, methods.run_delta("hcfcn_authors", {}, 0)
                       ).model.width == 64


def test_full_setup_is_valid_and_boundary_recall_can_be_nonzero():
  config = methods.apply(synthetic.get_config(), methods.FULL_SYNTHETIC)
  config = config_validation.resolve(config).config
  size = config.data.builder_kwargs.image_size
  assert config.data.crop_size == size == 160
  # Below a 200 px diagonal the paper's tolerance is 0 and its recall 0.
  assert metrics.default_radius(size, size) >= 1
  assert set(methods.FULL.kernels) == {1, 5, 10, 15, 20, 25}
  assert methods.FULL.seeds == methods.FULL.coarseness_seeds == 5
  assert len(methods.FULL.lambdas) >= 3 and methods.FULL.widen_limit >= 1


def test_selection_and_reported_seeds_are_apart():
  assert methods.report_seeds(5) == (0, 1, 2, 3, 4)
  assert methods.selection_seeds(2) == (methods.SELECTION_SEED,
                                        methods.SELECTION_SEED + 1)
  assert max(methods.report_seeds(methods.SELECTION_SEED)) < min(
      methods.selection_seeds(1))
  with pytest.raises(ValueError, match="reported seeds: use 1 to"):
    methods.report_seeds(methods.SELECTION_SEED + 1)
  with pytest.raises(ValueError, match="selection seeds: use at least 1"):
    methods.selection_seeds(0)


def test_widen_steps_beyond_the_edge():
  grid = (0.025, 0.05, 0.075, 0.1)
  assert methods.widen(grid, "low") == 0.0125       # x 0.025 / 0.05
  assert methods.widen(grid, "high") == 0.133       # x 0.1 / 0.075, 3 digits
  assert methods.widen((0.01, 0.025, 0.05, 0.1), "high") == 0.2
  assert methods.widen((0.0, 0.05), "high") == 0.1  # Arithmetic from 0.
  assert methods.widen((0.0, 0.05), "low") is None  # Nothing below 0.
  assert methods.widen((0.05,), "high") is None     # No ratio to use.
  with pytest.raises(ValueError, match="side='up' must be"):
    methods.widen(grid, "up")


def test_config_validation_labels_key():
  base = methods.apply(synthetic.get_config(), methods.QUICK_SYNTHETIC)
  assert base.data.validation_labels == "fine"
  coarse = methods.apply(base, {"data.validation_labels": "coarse"})
  config_validation.resolve(coarse)
  with pytest.raises(errors.ConfigError, match="validation_labels='none'"):
    config_validation.resolve(methods.apply(
        base, {"data.validation_labels": "none"}))
  with pytest.raises(errors.ConfigError, match="needs fine validation"):
    config_validation.resolve(methods.apply(
        coarse, {"train.select_metric": "boundary_recall"}))
  # A config.json written before the key existed reads as fine.
  old = workdir_lib.config_as_json(base)
  del old["data"]["validation_labels"]
  assert workdir_lib.differences(old, workdir_lib.config_as_json(base)) == []
  assert [k for k, _, _ in workdir_lib.differences(
      old, workdir_lib.config_as_json(coarse))] == ["data.validation_labels"]


def _seed_rows(values_by_method, metric="accuracy"):
  rows = []
  for method, values in values_by_method.items():
    for seed, v in enumerate(values):
      results = {"test": {f"{m}_mean": v / (1 + (m != metric))
                          for m in tables.METRICS},
                 "validation": {"accuracy_mean": v}}
      rows.append(tables.seed_row(method, {}, seed, results))
  return rows


def test_seed_rows_keep_the_machine_that_trained_each_run(tmp_path):
  a, b = "EPYC (family 23), 2 CPU cores", "EPYC (family 25), 2 CPU cores"
  rows = [tables.seed_row("fcn", {}, s, {"test": {}, "machine": m})
          for s, m in enumerate((a, b, b))]
  rows.append(tables.seed_row("fcn", {}, 3, {"test": {}}))  # Older run.
  assert [r["machine"] for r in rows] == [a, b, b, ""]
  assert list(rows[0])[-3:] == ["train_accuracy", "train_seconds", "machine"]
  budget = tables.budget_seed_row("fcn", {"epochs": 5}, 100, {"machine": a})
  assert list(budget)[-4:] == ["selected_step", "train_accuracy",
                               "train_seconds", "machine"]
  tables.write_csv(tmp_path / "s.csv", rows, list(rows[0]), exact=True)
  assert [r["machine"] for r in tables.read_seeds(tmp_path / "s.csv")] == [
      a, b, b, ""]
  # The tables' machine line names every machine, and the runs none records.
  assert report.machine_note(rows[1:3]) == f"Machine: {b}."
  assert report.machine_note(rows) == (
      f"Machines: {b} (2 runs); {a} (1 run); not recorded for 1 run "
      "(trained before runs recorded their machine, 2026-12-06; the runs "
      "file names each call's).")
  assert report.machine_note(rows[3:]).startswith("Machine: not recorded (")


def test_seed_rows_keep_what_each_run_cost(tmp_path):
  results = lambda s: {"test": {}, "train_seconds": s,
                       "train_accuracy": s / 1e4}
  rows = [tables.seed_row("fcn", {}, 0, results(500.0)),
          tables.seed_row("fcn", {}, 1, results(1234.5)),
          tables.seed_row("hcfcn_slic", {"lmbda": 0.05}, 0, results(900.0)),
          tables.seed_row("hcfcn", {}, 0, {"test": {}})]  # Not counted.
  tables.write_csv(tmp_path / "s.csv", rows, list(rows[0]), exact=True)
  back = tables.read_seeds(tmp_path / "s.csv")
  assert [r["train_seconds"] for r in back[:3]] == [500.0, 1234.5, 900.0]
  assert math.isnan(back[3]["train_seconds"])
  # And how well each fits its training labels (NaN: not kept then).
  assert [r["train_accuracy"] for r in back[:3]] == [0.05, 0.12345, 0.09]
  assert math.isnan(back[3]["train_accuracy"])
  assert report.fit_note(back) == (
      "Training accuracy over a run's last epoch (the labelled pixels of its "
      "training labels): `fcn` 0.050-0.123 (2 runs); `hcfcn_slic` 0.090 (1 "
      "run); not kept for 1 run (trained before runs kept it, 2026-12-07).")
  assert report.fit_note(back[3:]) == ""  # Older tables keep their note.
  assert report.cost_note(back) == (
      "Training time a run (all its parts, on the machines above): `fcn` "
      "500-1,234 s (2 runs); `hcfcn_slic` 900 s (1 run); not counted for 1 "
      "run (trained before 2026-12-07 or resumed from an older checkpoint; "
      "the runs file has each call's time).")
  assert report.cost_note(back[3:]).endswith(": not counted (trained "
                                             "before 2026-12-07 or resumed "
                                             "from an older checkpoint; the "
                                             "runs file has each call's "
                                             "time).")


def test_tables_from_seed_rows_pair_by_seed_and_round_trip(tmp_path):
  hcfcn = [0.50, 0.60, 0.70]
  rows = _seed_rows({"fcn": [0.40, 0.52, 0.61], "hcfcn": hcfcn,
                     "unet": [v + 0.001 for v in hcfcn]})
  assert rows[0]["test_miou_dataset"] != rows[0]["test_miou_dataset"]  # NaN.
  summary, comparisons = tables.main_tables(rows)
  assert [r["method"] for r in summary] == ["fcn", "hcfcn", "unet"]
  assert summary[1]["accuracy_mean"] == pytest.approx(np.mean(hcfcn))
  assert summary[1]["accuracy_std"] == pytest.approx(np.std(hcfcn, ddof=1))
  assert [(r["method"], r["reference"]) for r in comparisons][::2] == [
      ("fcn", "hcfcn"), ("unet", "hcfcn"), ("unet", "fcn")]
  by = {(r["method"], r["reference"], r["metric"]): r for r in comparisons}
  unet = by[("unet", "hcfcn", "accuracy")]
  # +0.001 at every seed: paired sees it, Welch does not.
  assert unet["mean_diff"] == pytest.approx(0.001)
  assert unet["p_paired"] < 1e-6 and unet["p_welch"] > 0.9
  assert unet["verdict"].startswith("higher: +0.001")
  fcn = by[("fcn", "hcfcn", "accuracy")]
  paired = stats.paired_t([0.40, 0.52, 0.61], hcfcn)
  assert (fcn["mean_diff"], fcn["ci_low"], fcn["p_paired"]) == pytest.approx(
      (paired.mean_diff, paired.ci_low, paired.p))
  assert [r["p_paired_holm"] for r in comparisons] == pytest.approx(
      stats.holm([r["p_paired"] for r in comparisons]))
  # Exact CSV: the tables recompute bit for bit from the file.
  tables.write_csv(tmp_path / "s.csv", rows, list(rows[0]), exact=True)
  back = tables.read_seeds(tmp_path / "s.csv")
  assert back[0]["seed"] == 0 and back[0]["lmbda"] == ""
  again = tables.main_tables(back)
  columns = ["method", "reference"] + tables.COMPARISON_COLUMNS
  assert tables.csv_text(again[1], columns) == tables.csv_text(
      comparisons, columns)
  assert tables.csv_text(again[0], tables.MAIN_COLUMNS) == tables.csv_text(
      summary, tables.MAIN_COLUMNS)


def test_self_training_rows_are_compared_with_their_first_round_and_each_other():
  rows = _seed_rows({"fcn": [0.40, 0.52], "hcfcn": [0.50, 0.60],
                     "hcfcn_slic": [0.55, 0.65],
                     "hcfcn_slic_refined": [0.56, 0.66],
                     "hcfcn_slic_refined_free": [0.57, 0.68]})
  pairs = {(r["method"], r["reference"])
           for r in tables.main_tables(rows)[1]}
  assert {("hcfcn_slic_refined", "hcfcn_slic"),
          ("hcfcn_slic_refined_free", "hcfcn_slic"),
          ("hcfcn_slic_refined_free", "hcfcn_slic_refined")} <= pairs
  # Without the model's fill's row, the free one is still compared with
  # its first round.
  without = [r for r in rows if r["method"] != "hcfcn_slic_refined"]
  pairs = {(r["method"], r["reference"])
           for r in tables.main_tables(without)[1]}
  assert ("hcfcn_slic_refined_free", "hcfcn_slic") in pairs
  assert methods.select_methods(["hcfcn_slic_refined_free", "hcfcn_slic"]) == (
      "hcfcn_slic", "hcfcn_slic_refined_free", "hcfcn")
  with pytest.raises(ValueError, match="_free needs hcfcn_slic"):
    methods.select_methods(["hcfcn_slic_refined_free"])


def test_validation_cost_compares_the_same_seeds():
  fine = _seed_rows({"fcn": [0.40, 0.50], "hcfcn": [0.60, 0.70]})
  coarse = _seed_rows({"fcn": [0.38, 0.49], "hcfcn": [0.60, 0.70]})
  rows = tables.validation_cost(fine, coarse)
  by = {(r["method"], r["metric"]): r for r in rows}
  assert by[("fcn", "accuracy")]["mean_diff"] == pytest.approx(-0.015)
  assert by[("hcfcn", "accuracy")]["verdict"].startswith("equivalent")
  assert by[("fcn", "accuracy")]["n_pairs"] == 2


class FakeRunner:
  """Returns what a finished run's results.json holds; no training."""

  def __init__(self, score):
    self.score, self.calls = score, []

  def run(self, method, params, seed):
    name = methods.param_name(params)
    self.calls.append((name, seed))
    return {"validation": {"accuracy_mean": self.score(params, seed)},
            "test": {"accuracy_mean": 0.0}, "name": name}

  def run_many(self, specs):
    return [self.run(*spec) for spec in specs]


def _ci_rows(differences, base=0.7):
  """Seed rows of fcn and hcfcn_slic whose test accuracy differs by
  `differences` (one a seed, seeds 0..)."""
  return [{"method": m, "seed": s, "test_accuracy": base + d * (m != "fcn")}
          for s, d in enumerate(differences) for m in ("fcn", "hcfcn_slic")]


def test_ci_half_width_is_the_paired_interval_of_the_seeds_both_have():
  differences = [0.03, 0.01, 0.05, 0.02]
  paired = stats.paired_t([0.7 + d for d in differences], [0.7] * 4)
  assert tables.ci_half_width(_ci_rows(differences)) == pytest.approx(
      (paired.ci_high - paired.ci_low) / 2)
  # Seeds one method lacks are not pairs; one pair has no interval.
  rows = _ci_rows(differences) + [
      {"method": "hcfcn_slic", "seed": 9, "test_accuracy": 0.0}]
  assert tables.ci_half_width(rows) == tables.ci_half_width(
      _ci_rows(differences))
  assert tables.ci_half_width(_ci_rows([0.03])) == math.inf


def test_main_until_adds_a_seed_while_the_interval_is_wider_than_the_target(
    monkeypatch):
  # Half-widths from 3 seeds on: 0.149, 0.078, 0.053, 0.040, 0.032, 0.027.
  differences = [0.10, -0.02] + [0.04] * 8
  passes = []

  def run_main(runner, setup, seeds, *args):
    passes.append(tuple(seeds))
    return _ci_rows(differences[:len(seeds)])

  monkeypatch.setattr(designs, "run_main", run_main)
  runner = runner_lib.Runner(default.get_config(), "unused")
  width = lambda n: tables.ci_half_width(_ci_rows(differences[:n]))
  for target, max_seeds, stop in ((0.03, 10, 8), (0.001, 5, 5),
                                  (None, 10, 3)):
    passes.clear()
    widths, announced = [], []
    rows, seeds = designs.run_main_until(
        runner, methods.QUICK, methods.report_seeds(3), (100,), "out",
        "accuracy", ("fcn", "hcfcn", "hcfcn_slic"), 0.05, target, max_seeds,
        widths, lambda s: announced.append(tuple(s)))
    # Each pass's seeds are announced before it runs (the runs file's).
    assert announced == passes
    if target is None:
      assert passes == [(0, 1, 2)] and widths == []
      continue
    # The first n >= 3 whose interval is within the target, or max_seeds.
    assert stop == next((n for n in range(3, max_seeds) if width(n) <= target),
                        max_seeds)
    assert passes == [tuple(range(n)) for n in range(3, stop + 1)]
    assert seeds == tuple(range(stop)) and len(rows) == 2 * stop
    assert [w["seeds"] for w in widths] == list(range(3, stop + 1))
    assert [w["half_width"] for w in widths] == [
        pytest.approx(width(n)) for n in range(3, stop + 1)]
    assert all(w["half_width"] > target for w in widths[:-1])


@pytest.mark.parametrize("dataset", sorted(methods.GENERATED))
def test_a_budget_run_is_the_main_sweeps_run_at_its_budget(dataset):
  """What results/convergence/commands.sh's reuse step relies on: the
  budget grid's hcfcn_slic run at B epochs is, key for key, the main
  experiment's sweep run with --num_epochs=B --cosine, and not another's."""
  resolved = lambda base, delta: workdir_lib.config_as_json(
      config_validation.resolve(methods.apply(base, delta)).config)
  params = methods.budget_params("hcfcn_slic", methods.FULL)
  grid = config_validation.resolve(methods.generated_base(dataset)[0]).config
  budget_run = resolved(grid, {**methods.run_delta(
      "hcfcn_slic", {**params, "epochs": 50}, 100), **methods.BUDGET_DELTA})
  main, overrides = methods.generated_base(dataset, num_epochs=50,
                                           cosine=True)
  main = config_validation.resolve(main).config  # As the CLI does.
  assert overrides["train.num_epochs"] == 50
  assert budget_run == resolved(main, methods.run_delta(
      "hcfcn_slic", params, 100))
  for other in (methods.run_delta("hcfcn_slic", params, 101),
                methods.run_delta("hcfcn_slic", {"lmbda": 0.1}, 100)):
    assert budget_run != resolved(main, other)
  step = methods.generated_base(dataset, num_epochs=50)[0]
  assert budget_run != resolved(step, methods.run_delta(
      "hcfcn_slic", params, 100))


def test_a_second_pass_does_not_record_a_run_twice(tmp_path):
  runner = runner_lib.Runner(default.get_config(), str(tmp_path))
  assert runner.record(workdir="a", status="trained")
  assert not runner.record(workdir="a", status="skipped")  # Seen: trained.
  assert runner.record(workdir="b", status="skipped")  # First sight.
  assert not runner.record(workdir="b", status="skipped")
  assert [(r["workdir"], r["status"]) for r in runner.records] == [
      ("a", "trained"), ("b", "skipped")]


def test_sweep_selects_on_selection_seeds_then_runs_the_reported_ones():
  score = lambda p, s: {0.1: 0.5, 0.2: 0.7, 0.3: 0.7}[p["lmbda"]] + 0.01 * s
  runner = FakeRunner(score)
  params, results, rows, info = designs.sweep(
      runner, "hcfcn_slic", "lmbda", (0.3, 0.1, 0.2), select_seeds=[100],
      seeds=[0, 1, 2], metric="accuracy", widen_limit=2)
  assert params == {"lmbda": 0.2}  # Tie with 0.3: the smaller value.
  assert info["edge"] is None and info["added"] == []
  assert [(r["value"], r["seed"], r["selected"]) for r in rows] == [
      (0.1, 100, 0), (0.2, 100, 1), (0.3, 100, 0)]
  assert rows[1]["validation_accuracy"] == pytest.approx(0.7 + 1.0)
  assert runner.calls == [("lmbda0.1", 100), ("lmbda0.2", 100),
                          ("lmbda0.3", 100), ("lmbda0.2", 0),
                          ("lmbda0.2", 1), ("lmbda0.2", 2)]
  assert len(results) == 3 and {r["name"] for r in results} == {"lmbda0.2"}


def test_sweep_widens_a_grid_whose_winner_is_at_its_edge():
  # Validation accuracy peaks at lambda 0.05: below the grid (0.1, 0.2).
  score = lambda p, s: 1.0 - abs(math.log(p["lmbda"] / 0.05))
  runner = FakeRunner(score)
  params, _, rows, info = designs.sweep(
      runner, "hcfcn_slic", "lmbda", (0.1, 0.2), [100, 101], [0], "accuracy",
      widen_limit=3)
  assert params == {"lmbda": 0.05} and info["added"] == [0.05, 0.025]
  assert info["grid"] == [0.025, 0.05, 0.1, 0.2] and info["edge"] is None
  assert {r["value"]: r["added"] for r in rows} == {
      0.025: 1, 0.05: 1, 0.1: 0, 0.2: 0}
  assert len(rows) == 4 * 2  # Every value on both selection seeds.
  # A limit: the winner stays at the edge, and the note says why.
  _, _, _, info = designs.sweep(
      FakeRunner(lambda p, s: -p["lmbda"]), "hcfcn_slic", "lmbda",
      (0.1, 0.2), [100], [0], "accuracy", widen_limit=1)
  assert info["added"] == [0.05] and info["edge"] == "low"
  assert "limit of 1" in info["edge_note"]
  note = report.sweep_note([info], "accuracy", [100])
  assert "still at the grid's low edge" in note and "widened by [0.05]" in note


def test_sweep_of_one_value_runs_no_selection():
  runner = FakeRunner(lambda p, s: 0.5)
  params, results, rows, info = designs.sweep(
      runner, "hcfcn_slicmap", "kappa", (0.05,), [100, 101], [0, 1],
      "accuracy", widen_limit=2)
  assert params == {"kappa": 0.05} and rows == [] and info["edge"] is None
  assert runner.calls == [("kappa0.05", 0), ("kappa0.05", 1)]
  assert len(results) == 2
  assert methods.num_runs("main", dataclasses.replace(
      methods.QUICK, lambdas=(0.05, 0.1)), ("hcfcn", "hcfcn_slic",
                                            "hcfcn_slicmap"), 2, 0) == (
                                                3 * 2 + 2 * 1)


def test_retraining_for_a_checkpoint_keeps_the_archive_and_resumes(
    tmp_path, monkeypatch):
  """A finished run trained again for its checkpoint (refine's source),
  killed part-way and taken up again: the archive never holds the
  retrained figures as the reported ones; the retraining resumes."""
  from coarseseg_jax import filesystem  # pylint: disable=g-import-not-at-top
  from coarseseg_jax import train  # pylint: disable=g-import-not-at-top
  base = methods.apply(synthetic.get_config(), methods.QUICK_SYNTHETIC)
  runner = runner_lib.Runner(base, str(tmp_path / "wd"),
                             archive=str(tmp_path / "archive"))
  params = {"lmbda": 0.05}
  workdir = tmp_path / "wd" / "hcfcn_slic" / "lmbda0.05" / "seed0"
  where = tmp_path / "archive" / "hcfcn_slic" / "lmbda0.05" / "seed0"
  workdir_lib.record_config(where, config_validation.resolve(methods.apply(
      base, methods.run_delta("hcfcn_slic", params, 0))).config)
  reported = {"test": {"accuracy_mean": 0.7}}
  filesystem.write_json(where / "results.json", reported)
  calls = []

  def fake_train(resolved, wd):
    calls.append(wd)
    (filesystem.path(wd) / "checkpoints").mkdir(parents=True, exist_ok=True)
    workdir_lib.record_config(wd, resolved.config)
    if len(calls) == 1:
      raise KeyboardInterrupt  # Killed part-way, a checkpoint on disk.
    results = {"test": {"accuracy_mean": 0.6}}
    filesystem.write_json(filesystem.path(wd) / "results.json", results)
    return results

  monkeypatch.setattr(train, "train_and_evaluate", fake_train)
  archived = lambda: json.loads((where / "results.json").read_text())
  assert runner.run("hcfcn_slic", params, 0) == reported  # Restored.
  with pytest.raises(KeyboardInterrupt):
    runner.ensure_checkpoint("hcfcn_slic", params, 0)
  assert archived() == reported and not (where / runner_lib.RETRAINED).exists()
  # Taken up as the main table does: the run (restored), then its checkpoint
  # (the one on disk is no finished run's: the retraining resumes).
  assert runner.run("hcfcn_slic", params, 0) == reported
  runner.ensure_checkpoint("hcfcn_slic", params, 0)
  assert len(calls) == 2 and archived() == reported
  assert json.loads((workdir / "results.json").read_text()) == reported
  for d in (workdir, where):
    assert json.loads((d / runner_lib.RETRAINED).read_text()) == {
        "test": {"accuracy_mean": 0.6}}
  assert runner.records[-1]["differs"] == {"accuracy": [0.7, 0.6]}
  assert not (workdir / runner_lib.RETRAINING).exists()
  runner.ensure_checkpoint("hcfcn_slic", params, 0)  # Has one: no training.
  assert len(calls) == 2


def test_each_learner_has_its_refine_folder_a_report_alone_is_refined_again(
    tmp_path, monkeypatch):
  """Each learner's refine output has its own folder; a report restored
  without its labels serves a finished learner, not one that must train."""
  from coarseseg_jax.refine import driver as refine_driver  # pylint: disable=g-import-not-at-top
  base = methods.apply(synthetic.get_config(), methods.QUICK_SYNTHETIC)
  runner = runner_lib.Runner(base, str(tmp_path / "wd"),
                             archive=str(tmp_path / "archive"))
  params = {"lmbda": 0.05}
  source = tmp_path / "wd" / "hcfcn_slic" / "lmbda0.05" / "seed0"
  (source / "checkpoints").mkdir(parents=True)  # Its model is there.
  refined = []

  def fake_refine(resolved, workdir, out, split):
    del resolved, workdir
    refined.append(out)
    os.makedirs(out, exist_ok=True)
    for name in (f"refine_{split}.json", f"refine_{split}.csv"):
      with open(os.path.join(out, name), "w") as f:
        f.write("{}")
    return {"line": "refined"}

  monkeypatch.setattr(refine_driver, "run", fake_refine)
  monkeypatch.setattr(config_validation, "resolve", lambda c, use: c)
  free = methods.METHODS["hcfcn_slic_refined_free"].refined_subdir
  assert free != methods.REFINED_SUBDIR
  out = runner_lib.refined_labels(runner, "hcfcn_slic", params, 0,
                                  subdir=free)
  assert out == str(source / free) and refined == [out]
  assert runner_lib.refined_labels(runner, "hcfcn_slic", params, 0,
                                   subdir=free) == out
  assert len(refined) == 1  # There: not refined again.
  # Only the report (as the archive keeps it): enough for a finished
  # learner; one that trains on the labels has them refined again.
  os.remove(os.path.join(out, "refine_train.csv"))
  runner_lib.refined_labels(runner, "hcfcn_slic", params, 0,
                            labels_needed=False, subdir=free)
  assert len(refined) == 1
  runner_lib.refined_labels(runner, "hcfcn_slic", params, 0, subdir=free)
  assert len(refined) == 2
  # The calls that found it there are not recorded twice (`Runner.record`).
  assert [r["status"] for r in runner.records] == ["refined", "refined"]


def test_read_seeds_refuses_other_files_in_one_line(tmp_path):
  (tmp_path / "a.csv").write_text("x,y\n1,2\n")
  with pytest.raises(ValueError, match="a.csv is no _seeds.csv"):
    tables.read_seeds(tmp_path / "a.csv")
  (tmp_path / "b.csv").write_text("method,seed,test_accuracy\nfcn,0,high\n")
  with pytest.raises(ValueError, match=r"line 2: test_accuracy='high' is not"):
    tables.read_seeds(tmp_path / "b.csv")


def test_chosen_budget_is_the_smallest_that_no_later_one_beats():
  rule = tables.chosen_budget
  assert tables.BUDGET_TOLERANCE == 0.01
  # 50 -> 100 and 50 -> 200 gain 0.005 and 0.008: 50 is enough.
  assert rule({25: 0.60, 50: 0.68, 100: 0.685, 200: 0.688}) == 50
  # A dip does not stop the search: 100 gains 0.015 over 50 later on.
  assert rule({25: 0.60, 50: 0.68, 100: 0.67, 200: 0.695}) == 200
  assert rule({25: 0.60, 50: 0.68, 100: 0.66, 200: 0.675}) == 50
  # Still gaining at the last budget: the last (the report calls it an edge).
  assert rule({25: 0.60, 50: 0.65, 100: 0.70, 200: 0.75}) == 200
  assert rule({25: 0.60, 50: 0.65}, tolerance=0.06) == 25
  assert rule({25: math.nan, 50: 0.70, 100: 0.705}) == 50  # NaN: left out.
  with pytest.raises(ValueError, match="no budget has a finite"):
    rule({25: math.nan})


def _budget_rows(curves):
  """Seed rows of scripted runs: method -> epochs -> per-seed accuracy."""
  rows = []
  for method, by_epochs in curves.items():
    for epochs, values in by_epochs.items():
      for seed, v in zip(methods.selection_seeds(len(values)), values):
        results = {"validation": {f"{m}_mean": v / 2 for m in tables.METRICS
                                  if m != "accuracy"} | {"accuracy_mean": v},
                   "selected_step": 10 * epochs - seed % 2}
        rows.append(tables.budget_seed_row(
            method, {"epochs": epochs, "lmbda": 0.05}, seed, results))
  return rows


def test_budget_tables_from_seed_rows(tmp_path):
  rows = _budget_rows({
      "fcn": {25: [0.60, 0.62], 50: [0.70, 0.70], 100: [0.70, 0.715]},
      "hcfcn_slic": {50: [0.66, 0.66], 25: [0.50, 0.52],
                     100: [0.70, 0.72]}})
  assert rows[0]["epochs"] == 25 and "test_accuracy" not in rows[0]
  assert list(rows[0])[:3] == ["method", "param", "epochs"]
  summary, chosen, overall = tables.budget_tables(rows)
  assert chosen == {"fcn": 50, "hcfcn_slic": 100} and overall == 100
  assert [(r["method"], r["epochs"]) for r in summary] == [
      (m, e) for m in ("fcn", "hcfcn_slic") for e in (25, 50, 100)]
  fcn = summary[:3]
  assert [r["chosen"] for r in fcn] == [0, 1, 0]
  assert fcn[1]["gain"] == pytest.approx(0.70 - 0.61)
  assert math.isnan(fcn[0]["gain"]) and math.isnan(fcn[2]["later_gain"])
  assert fcn[1]["later_gain"] == pytest.approx(0.0075)
  assert fcn[0]["later_gain"] == pytest.approx(0.7075 - 0.61)
  assert fcn[2]["accuracy_std"] == pytest.approx(np.std([0.70, 0.715],
                                                        ddof=1))
  assert fcn[1]["boundary_recall_mean"] == pytest.approx(0.35)
  assert fcn[0]["selected_step_mean"] == pytest.approx(249.5)
  assert list(summary[0]) == tables.BUDGET_COLUMNS
  # Through the exact CSV: the same table.
  tables.write_csv(tmp_path / "s.csv", rows, list(rows[0]), exact=True)
  back = tables.read_seeds(tmp_path / "s.csv")
  assert back[0]["epochs"] == 25 and isinstance(back[0]["epochs"], int)
  again = tables.budget_tables(back)
  assert tables.csv_text(again[0], tables.BUDGET_COLUMNS) == tables.csv_text(
      summary, tables.BUDGET_COLUMNS)
  assert again[1:] == (chosen, overall)


def test_budget_report_names_each_methods_budget_and_fixed_values(tmp_path):
  """The budget's note, table and figure from seed rows (the command's own
  end-to-end test, archive included, is test_readme's budget command)."""
  rows = _budget_rows({"hcfcn": {1: [0.50], 2: [0.60]},
                       "hcfcn_slic": {1: [0.55], 2: [0.555]}})
  out = str(tmp_path / "synthetic")
  chosen = report.write_budget(out, synthetic.get_config(), methods.QUICK,
                               rows, methods.selection_seeds(1), "accuracy")
  assert chosen == 2  # hcfcn gains 0.1 from 1 to 2 epochs; hcfcn_slic not.
  markdown = (tmp_path / "synthetic_budget.md").read_text()
  assert "Per method: hcfcn 2, hcfcn_slic 1." in markdown
  assert "**Chosen budget: 2 epochs.**" in markdown
  assert "largest budget run" in markdown  # 2 is the last budget: an edge.
  # Only a choice that a larger budget backs is called converged.
  assert "| hcfcn_slic (converged) | 1 |" in markdown
  assert "| hcfcn (chosen, convergence not shown) | 2 |" in markdown
  assert markdown.count("(converged)") == 1
  assert "Fixed: hcfcn_slic lambda 0.05." in markdown
  assert "VALIDATION" in markdown and " epochs, batch" not in markdown
  header, table = _csv(tmp_path / "synthetic_budget.csv")
  assert header == tables.BUDGET_COLUMNS and len(table) == 4
  _png(tmp_path / "synthetic_budget.png")
  # One budget alone shows no convergence either, and says so.
  report.write_budget(out, synthetic.get_config(), methods.QUICK,
                      [r for r in rows if r["epochs"] == 2],
                      methods.selection_seeds(1), "accuracy")
  markdown = (tmp_path / "synthetic_budget.md").read_text()
  assert "**Chosen budget: 2 epochs.** 2 epochs is the largest budget run" in (
      markdown) and "convergence is not shown" in markdown


def test_the_main_note_names_each_rows_departure_from_its_setup():
  """A row whose method changes the setup the note describes says so (the
  authors' rows run their constant learning rate, not the budget's
  cosine); rows that keep it, and keys equal to the base's, say nothing."""
  base = config_validation.resolve(methods.generated_base(
      "texture_mosaic", num_epochs=50, cosine=True)[0]).config
  assert report.departure_note(base, ["fcn", "hcfcn", "hcfcn_slic",
                                      "hcfcn_slic_refined_free"]) == ""
  note = report.departure_note(base, ["hcfcn", "hcfcn_authors_slic"])
  assert note.startswith(" Rows run with another config than that")
  assert "hcfcn_authors_slic: " in note and "hcfcn, " not in note
  for part in ("train.lr_schedule constant", "model.width 64",
               "model.similarity dot", "model.tau 0.07",
               "train.validation_mode train"):
    assert part in note
  assert "stage_blocks" not in note  # (3, 4, 6) is the base's too.
  both = report.departure_note(base, ["hcfcn_dot", "hcfcn_dot_slic"])
  assert "hcfcn_dot, hcfcn_dot_slic: " in both and "width" not in both
