"""The statistics of the experiment tables, as pure functions of floats.

Runs of two methods with the same seed share their data order (and, within
one architecture, their initialisation), so the tables compare methods by
the differences of runs paired by seed (`align`, `paired_t`): the mean
difference, its confidence interval and a paired t-test; Welch's t-test on
the unpaired values (`welch_p`) stays as a second opinion. The p-values of
one table are adjusted together (`holm`). A large p-value is no evidence of
equality: "equivalent" needs a TOST (two one-sided tests, `tost_paired`)
against a margin fixed before the results were seen (`EQUIVALENCE_MARGIN`);
`verdict` words each comparison accordingly.

The tests take plain sequences (lists, NumPy arrays) and return floats or
strings; NaN marks what cannot be computed (fewer than 2 pairs). Over the
per-seed rows of a table (dicts, `report.seed_row`): `summary_rows` (mean
and sample std per group) and `comparison_rows` (all of the above for a
table's pairs of groups, Holm-adjusted together).
"""

import dataclasses
import math
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
from scipy import stats as scipy_stats

ALPHA = 0.05  # Significance level of every test and claim in the tables.
LEVEL = 0.95  # Confidence level of the intervals.
# Two methods are called equivalent in a metric only when a TOST shows
# their mean paired difference within +-EQUIVALENCE_MARGIN (absolute, the
# metrics lie in [0, 1]). Fixed before any result was seen: about
# the smallest difference in accuracy or boundary recall worth a sentence.
EQUIVALENCE_MARGIN = 0.02


@dataclasses.dataclass(frozen=True)
class Paired:
  """A paired comparison of a against b (differences a - b)."""
  n: int             # Pairs with both values finite.
  mean_diff: float   # Mean of a - b (NaN without pairs).
  ci_low: float      # The `LEVEL` t-interval of the mean difference
  ci_high: float     # (NaN with fewer than 2 pairs).
  p: float           # Two-sided paired t-test of mean difference 0.


def align(a: Mapping[int, float], b: Mapping[int, float]
          ) -> Tuple[list, list, list]:
  """(seeds, a values, b values) over the seeds both map, in seed order."""
  seeds = sorted(set(a) & set(b))
  return seeds, [a[s] for s in seeds], [b[s] for s in seeds]


def _differences(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
  """a - b over the pairs with both values finite."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.ndim != 1 or a.shape != b.shape:
    raise ValueError(f"paired values must be two 1-D sequences of one "
                     f"length, got shapes {a.shape} and {b.shape}.")
  keep = np.isfinite(a) & np.isfinite(b)
  return a[keep] - b[keep]


def paired_t(a: Sequence[float], b: Sequence[float], level: float = LEVEL
             ) -> Paired:
  """Paired t-test and t-interval of the mean difference a - b.

  `a[i]` and `b[i]` are one pair (e.g. two methods at one seed); pairs with
  a non-finite value are dropped. With n pairs the statistic is
  mean / (sd / sqrt(n)) on n - 1 degrees of freedom (sd: ddof 1), the
  interval mean +- t_{(1 + level) / 2, n - 1} * sd / sqrt(n). Differences
  that are all equal give p = 1 if they are 0, else 0, and a zero-width
  interval.
  """
  if not 0 < level < 1:
    raise ValueError(f"level={level} must lie in (0, 1).")
  d = _differences(a, b)
  n = int(d.size)
  mean = float(d.mean()) if n else math.nan
  if n < 2:
    return Paired(n, mean, math.nan, math.nan, math.nan)
  se = float(d.std(ddof=1)) / math.sqrt(n)
  if se == 0:
    return Paired(n, mean, mean, mean, 1.0 if mean == 0 else 0.0)
  half = float(scipy_stats.t.ppf((1 + level) / 2, n - 1)) * se
  p = 2 * float(scipy_stats.t.sf(abs(mean) / se, n - 1))
  return Paired(n, mean, mean - half, mean + half, min(p, 1.0))


def tost_paired(a: Sequence[float], b: Sequence[float], margin: float
                ) -> float:
  """p-value of two one-sided paired t-tests of |mean(a - b)| < margin.

  The null hypotheses mean <= -margin and mean >= margin are each tested
  one-sided; the TOST p-value is the larger of the two, so p < alpha
  exactly when the (1 - 2 alpha) t-interval of the mean difference lies
  inside (-margin, margin). NaN with fewer than 2 finite pairs; all-equal
  differences give 0 inside the margin and 1 outside.
  """
  if not margin > 0:
    raise ValueError(f"the equivalence margin must be > 0, got {margin}.")
  d = _differences(a, b)
  n = int(d.size)
  if n < 2:
    return math.nan
  mean = float(d.mean())
  se = float(d.std(ddof=1)) / math.sqrt(n)
  if se == 0:
    return 0.0 if abs(mean) < margin else 1.0
  p_low = float(scipy_stats.t.sf((mean + margin) / se, n - 1))
  p_high = float(scipy_stats.t.cdf((mean - margin) / se, n - 1))
  return max(p_low, p_high)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
  """Welch's (unpaired, unequal variances) t-test p-value of mean a = mean b.

  Non-finite values are dropped; NaN with fewer than 2 values a side or
  zero variance on both.
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  a, b = a[np.isfinite(a)], b[np.isfinite(b)]
  if a.size < 2 or b.size < 2:
    return math.nan
  va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
  if va + vb == 0:
    return math.nan
  t = (a.mean() - b.mean()) / math.sqrt(va + vb)
  df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
  return min(2 * float(scipy_stats.t.sf(abs(t), df)), 1.0)


def holm(pvalues: Sequence[float]) -> list:
  """Holm's step-down adjustment of a family of p-values, in input order.

  The i-th smallest of the m finite p-values becomes
  max_{j <= i} min(1, (m - j + 1) p_(j)); NaN entries stay NaN and do not
  count in m. Rejecting where the adjusted p < alpha controls the chance of
  any false rejection in the family at alpha.
  """
  p = np.asarray(pvalues, np.float64).reshape(-1)
  finite = np.isfinite(p)
  if ((p[finite] < 0) | (p[finite] > 1)).any():
    raise ValueError(f"p-values must lie in [0, 1], got {p[finite].tolist()}.")
  out = np.full(p.shape, np.nan)
  index = np.flatnonzero(finite)
  order = index[np.argsort(p[index], kind="stable")]
  m, running = index.size, 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (m - rank) * p[i]))
    out[i] = running
  return out.tolist()


def verdict(mean_diff: float, ci_low: float, ci_high: float, p_holm: float,
            p_tost: float, margin: float, alpha: float = ALPHA) -> str:
  """The table's words for one paired comparison (difference a - b).

  "higher: +d, 95 % CI [lo, hi]" (or "lower") when the Holm-adjusted paired
  p < alpha (", within ±margin (TOST p=...)" added when the TOST rejects
  too: a real but small difference); else "equivalent within ±margin (TOST p=...)" when the
  (adjusted) TOST p < alpha; else "inconclusive: 95 % CI [lo, hi]". Never
  "equivalent" from a large p-value alone.
  """
  level = f"{LEVEL:.0%}".replace("%", " %")
  ci = f"{level} CI [{ci_low:+.3f}, {ci_high:+.3f}]"
  if not (math.isfinite(ci_low) and math.isfinite(ci_high)):
    return "too few pairs for a test"
  equivalent = f"within ±{margin:g} (TOST p={p_tost:.2g})"
  if p_holm < alpha:
    return (f"{'higher' if mean_diff > 0 else 'lower'}: {mean_diff:+.3f}, "
            f"{ci}" + (f", {equivalent}" if p_tost < alpha else ""))
  if p_tost < alpha:
    return f"equivalent {equivalent}"
  return f"inconclusive: {ci}"


def describe(rows: Sequence[dict], margin: float) -> str:
  """The note under a table of `comparison_rows`: what the columns mean."""
  return (f"Differences a - b of runs paired by seed (a seed fixes the data "
          "order and, within one architecture, the initialisation): mean, "
          "paired t-test, its p Holm-adjusted over the table's "
          f"{len(rows)} comparisons; Welch's unpaired t-test beside it. "
          f"'equivalent' only where a TOST shows the difference within "
          f"±{margin:g} (margin fixed in advance; Holm-adjusted p < "
          f"{ALPHA}), never from a large p-value; otherwise "
          "'inconclusive' with the 95 % CI.")


# ---- Over per-seed rows: dicts with a `seed` and `<split>_<metric>` floats
# (`report.seed_row`), grouped and paired by seed.


def sample_std(values: Sequence[float]) -> float:
  """Standard deviation with ddof 1 (NaN for fewer than 2 values)."""
  values = np.asarray(values, np.float64)
  return float(np.std(values, ddof=1)) if values.size > 1 else math.nan


def groups(rows: Sequence[dict], by: Sequence[str]) -> Dict[tuple, list]:
  """The rows by the values of the columns `by`, in order of appearance."""
  out: Dict[tuple, list] = {}
  for row in rows:
    out.setdefault(tuple(row[k] for k in by), []).append(row)
  return out


def summary_rows(rows: Sequence[dict], by: Sequence[str],
                 metrics: Sequence[str], split: str = "test") -> List[dict]:
  """One row per value of the columns `by` (in order of appearance): those
  columns, n_seeds, `<metric>_mean` and `_std` (sample std) over the
  group's finite `<split>_<metric>` values."""
  out = []
  for key, group in groups(rows, by).items():
    row = dict(zip(by, key), n_seeds=len(group))
    for m in metrics:
      finite = [r[f"{split}_{m}"] for r in group
                if math.isfinite(r[f"{split}_{m}"])]
      row[f"{m}_mean"] = float(np.mean(finite)) if finite else math.nan
      row[f"{m}_std"] = sample_std(finite)
    out.append(row)
  return out


def _mean(values) -> float:
  finite = [v for v in values if math.isfinite(v)]
  return float(np.mean(finite)) if finite else math.nan


def comparison_rows(pairs: Sequence[Tuple[dict, Sequence[dict],
                                          Sequence[dict]]],
                    metrics: Sequence[str],
                    margin: float = EQUIVALENCE_MARGIN,
                    split: str = "test") -> List[dict]:
  """The paired comparisons of one table, Holm-adjusted together.

  `pairs`: (columns, rows of a, rows of b); a and b are paired by seed. Per
  pair and metric: `columns`, metric, n_pairs, mean (a's, over all its
  seeds) and reference_mean (b's), mean_diff a - b with its `LEVEL` CI,
  p_paired (`paired_t`) and p_paired_holm (`holm` over the table), p_welch
  (unpaired), margin, p_tost (`tost_paired`) and p_tost_holm, verdict.
  """
  out = []
  for columns, a, b in pairs:
    for m in metrics:
      va = {r["seed"]: r[f"{split}_{m}"] for r in a}
      vb = {r["seed"]: r[f"{split}_{m}"] for r in b}
      _, x, y = align(va, vb)
      paired = paired_t(x, y)
      out.append(dict(
          columns, metric=m, n_pairs=paired.n, mean=_mean(va.values()),
          reference_mean=_mean(vb.values()), mean_diff=paired.mean_diff,
          ci_low=paired.ci_low, ci_high=paired.ci_high, p_paired=paired.p,
          p_welch=welch_p(list(va.values()), list(vb.values())),
          margin=float(margin), p_tost=tost_paired(x, y, margin)))
  for key in ("p_paired", "p_tost"):
    for row, p in zip(out, holm([r[key] for r in out])):
      row[f"{key}_holm"] = p
  for r in out:
    r["verdict"] = verdict(r["mean_diff"], r["ci_low"], r["ci_high"],
                           r["p_paired_holm"], r["p_tost_holm"], margin)
  return out
