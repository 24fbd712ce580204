"""Intervals and tests for results over seeds: Student t intervals of a mean, Welch's
comparison of two means (unequal variances), and for the primary hypotheses a contrast
over seed groups with Holm's correction and a verdict, as a reviewer expects them."""

import math
from collections.abc import Mapping, Sequence

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


# Primary hypotheses: a contrast over seed groups, Holm's correction, and a verdict.


def contrast(parts: Sequence[Sequence[float]]) -> dict:
  """A contrast summed over independent seed groups, from per-seed values.

  `parts[g]` holds group g's per-seed values of its share of the contrast (a
  within-network contrast is one group; arm minus baseline is two, the baseline's values
  negated). The estimate is the sum of the groups' means; its standard error
  `sqrt(sum var_g / n_g)`, with Student t's `n - 1` degrees of freedom for one group (the
  paired, per-seed t test) and Welch-Satterthwaite's for several. Returns `estimate`,
  `se`, `df`, `p` (two-sided), `n` (seeds per group) and `method`:
  `"t"` or `"welch"`; `"exact"` when every group has two seeds or more and no spread
  (every seed gives the same value, so all agree in sign: no t test, `se` 0, `p` 0
  unless the estimate is 0, then 1); None with a group of fewer than two seeds (no
  interval, `p` None).
  """
  groups = [np.asarray(values, np.float64) for values in parts]
  n = [len(x) for x in groups]
  out = {"estimate": float(sum(x.mean() for x in groups)) if all(n) else None,
         "se": None, "df": None, "p": None, "n": n, "method": None}
  if not groups or min(n) < 2:
    return out
  variances = [x.var(ddof=1) / len(x) for x in groups]
  if all(np.all(x == x[0]) for x in groups):
    out.update(se=0.0, p=0.0 if out["estimate"] != 0 else 1.0, method="exact")
    return out
  se = math.sqrt(sum(variances))
  df = sum(variances) ** 2 / sum(v**2 / (k - 1) for v, k in zip(variances, n))
  t = out["estimate"] / se
  out.update(se=se, df=float(df), p=float(2 * stats.t.sf(abs(t), df)),
             method="t" if len(groups) == 1 else "welch")
  return out


def interval(estimate: float | None, se: float | None, df: float | None,
             confidence: float) -> tuple[float | None, float | None]:
  """The two-sided t interval `estimate -/+ t(df) * se` at `confidence`; the estimate
  itself for an exact result (`se` 0); `(None, None)` without a standard error."""
  if estimate is None or se is None:
    return None, None
  if se == 0:
    return estimate, estimate
  half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
  return estimate - half, estimate + half


def holm(p_values: Sequence[float | None]) -> list[float | None]:
  """Holm's step-down adjusted p-values, in the order given: sorted ascending, the
  i-th (1-based) of m is `max over j <= i of min(1, (m - j + 1) p_(j))`. A p-value of
  None (a hypothesis not yet testable) counts as 1 in m and in the order, and stays None."""
  m = len(p_values)
  order = sorted(range(m), key=lambda i: 1.0 if p_values[i] is None else p_values[i])
  adjusted, running = [None] * m, 0.0
  for rank, i in enumerate(order):
    p = 1.0 if p_values[i] is None else p_values[i]
    running = max(running, min(1.0, (m - rank) * p))
    adjusted[i] = None if p_values[i] is None else running
  return adjusted


def predicted_sign(predicted: str) -> int:
  """`"> 0"` (also `">"`, `"+"`) is 1; `"< 0"` (`"<"`, `"-"`) is -1."""
  text = str(predicted).replace(" ", "")
  if text in (">0", ">", "+"):
    return 1
  if text in ("<0", "<", "-"):
    return -1
  raise ValueError(f"A predicted sign is '> 0' or '< 0', got {predicted!r}.")


def judge(hypotheses: Sequence[Mapping], alpha: float = 0.05) -> list[dict]:
  """Holm's correction across every hypothesis given (of one sweep or of several), and
  each one's corrected interval and verdict.

  Each hypothesis is a mapping with `estimate`, `se`, `df`, `p` (`contrast`'s) and
  `predicted` (`"> 0"` or `"< 0"`). Returns copies with `p_holm` (`holm`), `confidence`,
  `low`, `high` and `verdict` added. Ranked by p (ascending, a missing p last), the
  hypothesis of rank i of m gets the interval at `confidence = 1 - alpha / (m - i + 1)`,
  the level at which Holm's procedure tests it. The verdict: "supported" where
  `p_holm <= alpha` and the estimate has the predicted sign, "contradicted" where
  `p_holm <= alpha` and it has the other sign, else "not resolved". Where the verdict is
  resolved, that interval excludes 0 (for a t interval, `p <= a` exactly when the `1 - a`
  interval excludes 0); an interval may exclude 0 while Holm stopped at a smaller p before
  it, and the verdict then stays "not resolved". An exact result's interval is its value.
  """
  p_values = [h.get("p") for h in hypotheses]
  adjusted = holm(p_values)
  m = len(hypotheses)
  order = sorted(range(m), key=lambda i: 1.0 if p_values[i] is None else p_values[i])
  out = [dict(h) for h in hypotheses]
  for rank, i in enumerate(order):
    h = out[i]
    confidence = 1 - alpha / (m - rank)
    low, high = interval(h.get("estimate"), h.get("se"), h.get("df"), confidence)
    verdict = "not resolved"
    if adjusted[i] is not None and adjusted[i] <= alpha and h["estimate"] != 0:
      agrees = (h["estimate"] > 0) == (predicted_sign(h["predicted"]) > 0)
      verdict = "supported" if agrees else "contradicted"
    h.update(p_holm=adjusted[i], confidence=confidence, low=low, high=high, verdict=verdict)
  return out
