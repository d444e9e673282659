"""The committed tables in results/ recompute from their committed per-seed
rows, so every figure the README quotes from them can be re-derived."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

from coarseseg_jax.experiments import tables

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"
TESTS = tables.COMPARISON_COLUMNS
CASES = [  # (per-seed rows, table, its first columns, comparisons' first).
    ("synthetic_main_seeds.csv", "synthetic_coarse", ["method", "param"],
     ["method", "reference"]),
    ("synthetic_coarseval_main_seeds.csv", "synthetic_coarseval_coarse",
     ["method", "param"], ["method", "reference"]),
    ("synthetic_coarseness_seeds.csv", "synthetic_coarseness",
     ["method", "kernel"], ["kernel", "method", "reference"]),
    ("selftraining/synthetic_main_seeds.csv", "selftraining/synthetic_coarse",
     ["method", "param"], ["method", "reference"]),
    ("selftraining_free/synthetic_main_seeds.csv",
     "selftraining_free/synthetic_coarse", ["method", "param"],
     ["method", "reference"]),
    ("convergence/texture_mosaic_main_seeds.csv",
     "convergence/texture_mosaic_coarse", ["method", "param"],
     ["method", "reference"]),
]


@pytest.mark.parametrize("seeds,table,first,comp_first", CASES)
def test_committed_tables_recompute_from_their_seed_rows(
    seeds, table, first, comp_first):
  rows = tables.read_seeds(RESULTS / seeds)
  make = (tables.coarseness_tables if "kernel" in first
          else tables.main_tables)
  summary, comparisons = make(rows)
  assert len({r["seed"] for r in rows}) == 5
  assert tables.csv_text(summary, first + ["n_seeds"] + tables.STATS) == (
      RESULTS / f"{table}.csv").read_text()
  assert tables.csv_text(comparisons, comp_first + TESTS) == (
      RESULTS / f"{table}_tests.csv").read_text()


def test_committed_validation_label_costs_recompute():
  fine = tables.read_seeds(RESULTS / "synthetic_main_seeds.csv")
  coarse = tables.read_seeds(RESULTS / "synthetic_coarseval_main_seeds.csv")
  assert {r["validation_labels"] for r in fine} == {"fine"}
  assert {r["validation_labels"] for r in coarse} == {"coarse"}
  comparisons = tables.validation_cost(fine, coarse)
  assert tables.csv_text(
      comparisons, ["method", "param_coarse", "param_fine"] + TESTS) == (
          RESULTS / "synthetic_validation_labels.csv").read_text()


def _refine_seeds():
  """benchmarks/refine_seeds.py, imported by path (benchmarks/ is no
  package)."""
  path = RESULTS.parent / "benchmarks" / "refine_seeds.py"
  spec = importlib.util.spec_from_file_location("refine_seeds", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_refine_over_seeds_recomputes_from_its_rows():
  """results/README.md's refine-over-seeds tables are what the script
  prints from the committed rows."""
  lib = _refine_seeds()
  rows = lib.read(RESULTS / "refine_seeds.csv")
  assert {r["split"] for r in rows} == {"validation"}
  readme = (RESULTS / "README.md").read_text()
  lines = [l for l in lib.summarize(rows) if l.startswith("| ")]
  assert len(lines) > 10
  for line in lines:
    assert line in readme, line


def test_refine_over_seeds_collects_a_report(tmp_path):
  """One refine folder: a row per fill, `auto`'s marked, the coarse-only
  figures beside the fine ones; the summary pairs `auto` with the best free
  fill (here itself: a zero difference)."""
  lib = _refine_seeds()
  figures = lambda v: {"filled_share": 1.0, "band_correct": v,
                       "band_accuracy": v, "boundary_recall_mean": v / 2,
                       "boundary_f1_mean": v / 3}
  report = {"name": "validation", "chosen": {"method": "nearest_labelled"},
            "methods": {"nearest_labelled": figures(0.9),
                        "slic_then_nearest": figures(0.8),
                        "constrained": figures(0.7)},
            "coarse_only": {"methods": {
                "nearest_labelled": figures(0.98),
                "slic_then_nearest": figures(0.97),
                "constrained": figures(0.99)}}}
  for seed in (0, 1):
    folder = tmp_path / f"synthetic_erosion_s{seed}" / "refined_validation"
    folder.mkdir(parents=True)
    (folder / "refine_validation.json").write_text(json.dumps(report))
  rows = lib.collect([str(p) for p in tmp_path.glob("*/refined_validation")])
  assert [(r["seed"], r["fill"], r["chosen"]) for r in rows] == [
      (s, f, int(f == "nearest_labelled")) for s in (0, 1)
      for f in ("nearest_labelled", "slic_then_nearest", "constrained")]
  lib.write(rows, tmp_path / "rows.csv")
  assert lib.read(tmp_path / "rows.csv") == rows
  table = lib.summarize(rows)
  assert ("| synthetic_erosion | 2 | `nearest_labelled` x2 | 0.900 / "
          "`nearest_labelled` 0.900 / `constrained` 0.700 | +0.000 [+0.000, "
          "+0.000]; +0.000 [+0.000, +0.000] | -0.200 [-0.200, -0.200]; "
          "-0.067 [-0.067, -0.067] |") in table
  # Tolerance 0: the best coarse-only score (constrained) is chosen.
  assert "| band_correct 0 | `constrained` -0.200 / -0.067 |" in table
  # The command line, as its docstring gives it: the same rows and tables.
  proc = subprocess.run(
      [sys.executable, str(RESULTS.parent / "benchmarks" / "refine_seeds.py"),
       f"--reports={tmp_path}/*_s*/refined_validation",
       f"--csv={tmp_path}/cli.csv"], capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip().splitlines() == table
  assert lib.read(tmp_path / "cli.csv") == rows


@pytest.mark.parametrize("seeds", sorted(
    p.name for p in (RESULTS / "convergence").glob("*_budget_seeds.csv")))
def test_committed_budget_curves_recompute_from_their_seed_rows(seeds):
  """Each committed budget curve (issue 41's grid) is its seed rows' table,
  and its note names the budget the rule picks from them."""
  stem = RESULTS / "convergence" / seeds.replace("_seeds.csv", "")
  rows = tables.read_seeds(RESULTS / "convergence" / seeds)
  assert {r["seed"] for r in rows} == {100, 101}  # Selection seeds only.
  assert not any(k.startswith("test_") for k in rows[0])
  summary, _, chosen = tables.budget_tables(rows)
  assert tables.csv_text(summary, tables.BUDGET_COLUMNS) == (
      stem.with_suffix(".csv").read_text())
  assert f"**Chosen budget: {chosen} epochs.**" in (
      stem.with_suffix(".md").read_text())
