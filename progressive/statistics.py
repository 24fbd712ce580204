"""Intervals and tests for results over seeds: Student t intervals of a mean, and
Welch's comparison of two means (unequal variances), as a reviewer expects them."""

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> dict:
  """`mean`, `std` (n - 1), `n` and the Student t interval `low`, `high` of the mean of
  `values`; the interval is None for fewer than two values."""
  x = np.asarray(values, np.float64)
  n = len(x)
  mean = float(x.mean()) if n else math.nan
  std = float(x.std(ddof=1)) if n > 1 else 0.0
  if n < 2:
    return {"mean": mean, "std": std, "n": n, "low": None, "high": None}
  half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
  return {"mean": mean, "std": std, "n": n, "low": mean - half, "high": mean + half}


def welch(arm: Sequence[float], baseline: Sequence[float], confidence: float = 0.95) -> dict:
  """The difference of means `arm - baseline` with its Welch-Satterthwaite interval and
  two-sided p-value (`scipy.stats.ttest_ind(arm, baseline, equal_var=False)`), and the
  `n` of each side; interval and p are None unless both sides have two values or more."""
  a, b = np.asarray(arm, np.float64), np.asarray(baseline, np.float64)
  out = {"difference": float(a.mean() - b.mean()), "n_arm": len(a), "n_baseline": len(b),
         "low": None, "high": None, "p": None}
  if len(a) < 2 or len(b) < 2:
    return out
  va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
  se = math.sqrt(va + vb)
  if se == 0:  # Identical constants on both sides: no spread to test against.
    out.update(low=out["difference"], high=out["difference"], p=1.0 if out["difference"] == 0 else 0.0)
    return out
  df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
  half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
  t = out["difference"] / se
  out.update(low=out["difference"] - half, high=out["difference"] + half,
             p=float(2 * stats.t.sf(abs(t), df)), df=float(df))
  return out


def verdict(low: float | None, high: float | None) -> str:
  """"arm higher", "arm lower" or "not resolved" by whether the interval excludes zero."""
  if low is None or high is None:
    return "not resolved"
  if low > 0:
    return "arm higher"
  if high < 0:
    return "arm lower"
  return "not resolved"
