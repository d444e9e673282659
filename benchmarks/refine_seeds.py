r"""Refine's fills over seeds: does `auto` match the best free fill?

  python benchmarks/refine_seeds.py --reports='runs/*_s*/refined_validation' \
      --csv=results/refine_seeds.csv        # collect, write the rows, print
  python benchmarks/refine_seeds.py --csv=results/refine_seeds.csv  # print

`--reports`: a glob of `--mode=refine` output folders, one per trained run,
named `.../<condition>_s<seed>/<folder>` (e.g. `texture_mosaic_annotator_s3`:
a dataset and coarse style, the model's seed). Each folder's
`refine_<split>.json` gives one CSV row per fill: its band figures against
the fine labels, its coarse-only score (the held-out ring) and whether
`auto` chose it.

Printed, per condition (Markdown): what `auto` chose at each seed; the band
accuracy (`band_correct`: the band's pixels filled right, unfilled ones
count as wrong) and boundary F1 of `auto`'s fill, of the best free fill (the
free fill of the highest mean band accuracy) and of the best model fill;
paired differences over seeds with 95 % t-intervals
(`experiments.stats.paired_t`). Then what `auto` would have chosen at other
tolerances and scores (`refine.scores.choose` on the stored coarse-only
figures), as the mean band accuracy / boundary F1 of its choice minus the
best free fill's. The free fills do not depend on the model: their figures
are the same at every seed of a condition.
"""

import argparse
import collections
import csv
import glob
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE)]

import numpy as np  # pylint: disable=g-import-not-at-top

from coarseseg_jax import refine  # pylint: disable=g-import-not-at-top
from coarseseg_jax.experiments import stats  # pylint: disable=g-import-not-at-top
from coarseseg_jax.refine import scores  # pylint: disable=g-import-not-at-top

COLUMNS = ["condition", "seed", "split", "fill", "chosen", "filled_share",
           "band_correct", "band_accuracy", "boundary_recall_mean",
           "boundary_f1_mean", "coarse_band_correct", "coarse_boundary_f1_mean"]
TOLERANCES = (0.0, 0.002, 0.005, 0.01, 0.02)


def collect(folders):
  """CSV rows (dicts of `COLUMNS`) of every fill of every refine folder."""
  rows = []
  for folder in sorted(folders):
    name = os.path.basename(os.path.dirname(os.path.normpath(folder)))
    match = re.fullmatch(r"(.+)_s(\d+)", name)
    reports = glob.glob(os.path.join(folder, "refine_*.json"))
    if not match or len(reports) != 1:
      raise SystemExit(f"error: {folder}: want <condition>_s<seed>/<folder> "
                       "holding one refine_<split>.json")
    with open(reports[0]) as f:
      report = json.load(f)
    held = report["coarse_only"]["methods"]
    for fill, m in report["methods"].items():
      rows.append({
          "condition": match.group(1), "seed": int(match.group(2)),
          "split": report["name"], "fill": fill,
          "chosen": int(fill == report["chosen"]["method"]),
          "filled_share": m["filled_share"],
          **{k: m[k] for k in COLUMNS[6:10]},
          "coarse_band_correct": held[fill]["band_correct"],
          "coarse_boundary_f1_mean": held[fill]["boundary_f1_mean"]})
  return rows


def read(path):
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  for r in rows:
    r["seed"], r["chosen"] = int(r["seed"]), int(r["chosen"])
    for k in COLUMNS[5:]:
      r[k] = float(r[k])
  return rows


def write(rows, path):
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)


def _interval(paired: stats.Paired) -> str:
  if paired.n < 2:
    return f"{paired.mean_diff:+.3f} (one seed)"
  return (f"{paired.mean_diff:+.3f} [{paired.ci_low:+.3f}, "
          f"{paired.ci_high:+.3f}]")


def _column(seeds, picks, key):
  """[row[key] of each seed's picked fill], seeds in order; `seeds`:
  {seed: {fill: row}}, `picks`: one fill per seed (or one for all)."""
  order = sorted(seeds)
  picks = [picks] * len(order) if isinstance(picks, str) else picks
  return [seeds[s][f][key] for s, f in zip(order, picks)]


def summarize(rows):
  """Markdown lines: the table per condition, then the tolerance sweep."""
  by = collections.defaultdict(lambda: collections.defaultdict(dict))
  for r in rows:
    by[r["condition"]][r["seed"]][r["fill"]] = r
  lines = ["| data, coarse style | seeds | `auto` chose | band accuracy: "
           "`auto` / best free / best model fill | `auto` - best free: band "
           "accuracy; boundary F1 | best model - best free: band accuracy; "
           "boundary F1 |", "|---|---:|---|---|---|---|"]
  best_free = {}
  for cond, seeds in sorted(by.items()):
    order = sorted(seeds)
    mean = lambda picks: float(np.mean(_column(seeds, picks, "band_correct")))
    fills = list(seeds[order[0]])
    free = max((f for f in fills if f in refine.FREE_FILLS), key=mean)
    model = max((f for f in fills if f not in refine.FREE_FILLS), key=mean)
    best_free[cond] = free
    chosen = [next(f for f, r in seeds[s].items() if r["chosen"])
              for s in order]
    picks = ", ".join(f"`{f}` x{n}" for f, n in
                      collections.Counter(chosen).most_common())
    vs = lambda picks: "; ".join(_interval(stats.paired_t(
        _column(seeds, picks, key), _column(seeds, free, key)))
                                 for key in ("band_correct", "boundary_f1_mean"))
    lines.append(
        f"| {cond} | {len(order)} | {picks} | {mean(chosen):.3f} / "
        f"`{free}` {mean(free):.3f} / `{model}` {mean(model):.3f} | "
        f"{vs(chosen)} | {vs(model)} |")
  lines += ["", "| coarse-only score, tolerance | " + " | ".join(
      sorted(by)) + " |", "|---|" + "---|" * len(by)]
  for score in ("band_correct", "boundary_f1_mean"):
    for tol in TOLERANCES:
      cells = []
      for cond, seeds in sorted(by.items()):
        picks = [scores.choose({f: {score: r[f"coarse_{score}"]}
                                for f, r in seeds[s].items()},
                               score=score, tolerance=tol)[0]
                 for s in sorted(seeds)]
        gain = [np.mean(np.subtract(_column(seeds, picks, key),
                                    _column(seeds, best_free[cond], key)))
                for key in ("band_correct", "boundary_f1_mean")]
        top = collections.Counter(picks).most_common(1)[0][0]
        cells.append(f"`{top}` {gain[0]:+.3f} / {gain[1]:+.3f}")
      lines.append(f"| {score} {tol:g} | " + " | ".join(cells) + " |")
  return lines


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--reports", help="glob of refine output folders")
  parser.add_argument("--csv", required=True,
                      help="the rows: written with --reports, else read")
  args = parser.parse_args()
  if args.reports:
    rows = collect(glob.glob(args.reports))
    if not rows:
      raise SystemExit(f"error: --reports={args.reports}: no folder matches")
    write(rows, args.csv)
  elif not os.path.exists(args.csv):
    raise SystemExit(f"error: --csv={args.csv}: no such file (give "
                     "--reports to collect it)")
  print("\n".join(summarize(read(args.csv))))


if __name__ == "__main__":
  main()
