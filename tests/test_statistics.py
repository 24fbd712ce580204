"""Intervals and Welch comparisons against scipy on fixed numbers."""

import numpy as np
import pytest
from scipy import stats

from progressive import statistics

ARM = [0.91, 0.88, 0.93, 0.90, 0.86]
BASE = [0.80, 0.85, 0.78, 0.83, 0.79, 0.81]


def test_mean_interval_is_students_t():
  out = statistics.mean_interval(ARM)
  low, high = stats.t.interval(0.95, len(ARM) - 1, loc=np.mean(ARM), scale=stats.sem(ARM))
  assert out["n"] == 5 and out["mean"] == pytest.approx(np.mean(ARM))
  assert out["std"] == pytest.approx(np.std(ARM, ddof=1))
  assert (out["low"], out["high"]) == (pytest.approx(low), pytest.approx(high))
  assert statistics.mean_interval([0.5])["low"] is None


def test_welch_matches_scipy():
  out = statistics.welch(ARM, BASE)
  test = stats.ttest_ind(ARM, BASE, equal_var=False)
  assert out["p"] == pytest.approx(test.pvalue, rel=1e-10)
  interval = test.confidence_interval(0.95)
  assert (out["low"], out["high"]) == (pytest.approx(interval.low), pytest.approx(interval.high))
  assert out["difference"] == pytest.approx(np.mean(ARM) - np.mean(BASE))
  assert (out["n_arm"], out["n_baseline"]) == (5, 6)
  assert statistics.verdict(out["low"], out["high"]) == "arm higher"
  # Overlapping samples: the interval spans zero and the verdict says so.
  close = statistics.welch(ARM, [0.90, 0.87, 0.92, 0.89, 0.91])
  assert close["low"] < 0 < close["high"] and statistics.verdict(close["low"], close["high"]) == "not resolved"
  assert statistics.welch([0.5], BASE)["p"] is None
