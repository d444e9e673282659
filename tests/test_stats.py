"""The statistics of the tables against hand-computed values.

With 3 pairs (2 degrees of freedom) Student's t has closed forms:
P(T > t) = (1 - t / sqrt(t^2 + 2)) / 2, and the 0.975 quantile is
0.95 * sqrt(2 / (1 - 0.95^2)) = 4.302653. The example differences are
1, 2, 3: mean 2, sd 1, standard error 1 / sqrt(3).
"""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from coarseseg_jax.experiments import stats

A = [3.0, 5.0, 4.0]
B = [2.0, 3.0, 1.0]  # a - b = 1, 2, 3.
SE = 1 / math.sqrt(3)


def _upper_tail_df2(t):
  return (1 - t / math.sqrt(t * t + 2)) / 2


def test_paired_t_by_hand():
  result = stats.paired_t(A, B)
  t = 2 / SE  # 3.4641
  assert result.n == 3 and result.mean_diff == pytest.approx(2.0)
  assert result.p == pytest.approx(2 * _upper_tail_df2(t), abs=1e-9)
  assert result.p == pytest.approx(0.074180, abs=1e-6)
  q = 0.95 * math.sqrt(2 / (1 - 0.95 ** 2))
  assert q == pytest.approx(4.302653, abs=1e-6)
  assert (result.ci_low, result.ci_high) == pytest.approx(
      (2 - q * SE, 2 + q * SE), abs=1e-9)
  assert result.p == pytest.approx(scipy_stats.ttest_rel(A, B).pvalue)
  # The order of a and b flips the sign only.
  flipped = stats.paired_t(B, A)
  assert flipped.mean_diff == pytest.approx(-2.0)
  assert flipped.p == pytest.approx(result.p)
  assert flipped.ci_low == pytest.approx(-result.ci_high)


def test_paired_t_is_not_welch():
  """A shared per-seed effect: paired sees the consistent gain, Welch not."""
  base = np.array([0.50, 0.60, 0.70, 0.55, 0.65])
  gain = np.array([0.011, 0.009, 0.010, 0.012, 0.008])
  paired = stats.paired_t(base + gain, base)
  assert paired.p < 1e-3 and paired.ci_low > 0
  assert stats.welch_p(base + gain, base) > 0.8


def test_paired_t_edge_cases():
  few = stats.paired_t([0.5, math.nan], [0.4, 0.3])
  assert few.n == 1 and few.mean_diff == pytest.approx(0.1)
  assert math.isnan(few.p) and math.isnan(few.ci_low)
  same = stats.paired_t([0.5, 0.6], [0.4, 0.5])  # Differences both 0.1.
  assert same.p == 0.0 and same.ci_low == same.ci_high == pytest.approx(0.1)
  assert stats.paired_t([0.5, 0.6], [0.5, 0.6]).p == 1.0
  with pytest.raises(ValueError, match="one length, got shapes"):
    stats.paired_t([1.0, 2.0], [1.0])
  with pytest.raises(ValueError, match="level=1.5"):
    stats.paired_t(A, B, level=1.5)


def test_tost_by_hand():
  # Margin 3: t = (2 + 3) / SE and (2 - 3) / SE; p = the larger tail.
  p = stats.tost_paired(A, B, margin=3.0)
  assert p == pytest.approx(max(_upper_tail_df2(5 / SE),
                                _upper_tail_df2(1 / SE)), abs=1e-9)
  assert p == pytest.approx(0.112702, abs=1e-6)  # Not equivalent within 3.
  p = stats.tost_paired(A, B, margin=5.0)
  assert p == pytest.approx(_upper_tail_df2(3 / SE), abs=1e-9)
  assert p == pytest.approx(0.0175495, abs=1e-6)  # Equivalent within 5.
  # TOST rejects at alpha exactly when the (1 - 2 alpha) interval lies
  # inside the margin.
  ci90 = stats.paired_t(A, B, level=0.90)
  for margin in (4.0, 4.5, 5.0):
    inside = -margin < ci90.ci_low and ci90.ci_high < margin
    assert (stats.tost_paired(A, B, margin) < 0.05) == inside


def test_tost_edge_cases():
  assert math.isnan(stats.tost_paired([0.5], [0.4], 0.02))
  assert stats.tost_paired([0.5, 0.6], [0.5, 0.6], 0.02) == 0.0
  assert stats.tost_paired([0.5, 0.6], [0.4, 0.5], 0.02) == 1.0
  with pytest.raises(ValueError, match="margin must be > 0"):
    stats.tost_paired(A, B, 0.0)


def test_welch_by_hand():
  a, b = [1.0, 2.0, 3.0], [4.0, 6.0, 8.0]
  # Variances of the means 1/3 and 4/3; t = -4 / sqrt(5/3); Welch's df
  # (5/3)^2 / ((1/3)^2 / 2 + (4/3)^2 / 2) = 50 / 17.
  t = -4 / math.sqrt(5 / 3)
  df = 50 / 17
  assert stats.welch_p(a, b) == pytest.approx(
      2 * scipy_stats.t.sf(abs(t), df), abs=1e-12)
  assert stats.welch_p(a, b) == pytest.approx(
      scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)
  assert math.isnan(stats.welch_p([0.5], b))
  assert math.isnan(stats.welch_p([0.5, 0.5], [0.4, 0.4]))


def test_holm_by_hand():
  # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04,
  # then made monotone: 0.04 -> 0.06.
  assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx(
      [0.03, 0.06, 0.06, 0.02])
  assert stats.holm([0.5, 0.4]) == pytest.approx([0.8, 0.8])
  assert stats.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # Capped at 1.
  out = stats.holm([0.01, math.nan, 0.04])  # NaN: not in the family.
  assert out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.04)
  assert math.isnan(out[1])
  assert stats.holm([]) == []
  with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
    stats.holm([0.5, 1.5])


def test_align_pairs_by_seed():
  seeds, a, b = stats.align({2: 0.3, 0: 0.1, 1: 0.2}, {1: 0.5, 2: 0.6, 5: 1})
  assert (seeds, a, b) == ([1, 2], [0.2, 0.3], [0.5, 0.6])


def test_verdict_words():
  margin = stats.EQUIVALENCE_MARGIN
  assert stats.verdict(0.05, 0.03, 0.07, 0.001, 0.9, margin) == (
      "higher: +0.050, 95 % CI [+0.030, +0.070]")
  assert stats.verdict(-0.05, -0.07, -0.03, 0.001, 0.9, margin).startswith(
      "lower: -0.050")
  assert stats.verdict(0.004, 0.002, 0.006, 0.001, 0.001, margin) == (
      f"higher: +0.004, 95 % CI [+0.002, +0.006], within ±{margin:g} "
      "(TOST p=0.001)")
  assert stats.verdict(0.001, -0.004, 0.006, 0.6, 0.003, margin) == (
      f"equivalent within ±{margin:g} (TOST p=0.003)")
  # A large p-value alone is never "equivalent".
  assert stats.verdict(0.001, -0.05, 0.052, 0.9, 0.3, margin) == (
      "inconclusive: 95 % CI [-0.050, +0.052]")
  assert stats.verdict(0.1, math.nan, math.nan, math.nan, math.nan,
                       margin) == "too few pairs for a test"
