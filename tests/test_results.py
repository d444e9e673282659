"""The committed tables in results/ recompute from their committed per-seed
rows, so every figure the README quotes from them can be re-derived."""

import pathlib

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
