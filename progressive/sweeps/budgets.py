"""Accuracy against training budget, over sweeps of the same arms at several budgets.

    from progressive.sweeps import budgets
    rows = budgets.curves({"7 epochs": "results/pr", "14 epochs": "results/pr_long"}, "acc@32")
    budgets.to_reach(rows)            # training GFLOPs each arm needs for one accuracy
    plots.save(budgets.figure(rows, "acc@32"), "accuracy_vs_flops.png")

Each sweep's `results.csv` holds one row per point (`name`, `seed`, `train_gflops`
counted from the architecture, the same on every backend (results written before that
count hold XLA's there), `images_seen`, `wall_seconds`, the metrics). An arm (a seed group, as the
sweep's own tables group them) is a curve: its
mean metric (with the 95% Student t interval over seeds) at each budget, against the
mean training GFLOPs it spent there. `to_reach` reads off, from those means, the
training FLOPs at which each arm first reaches an accuracy (claim 3's "FLOPs to reach a
fixed accuracy"), interpolating in log FLOPs between the budgets that bracket it.
`convergence` is RESEARCH.md's check that a sweep trained its networks to convergence:
each arm's accuracy at its own training size against the same arm at twice the budget.
"""

import csv
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from etils import epath
from matplotlib.figure import Figure

from progressive import statistics
from progressive.sweeps import spec

BUDGET_COLUMNS = ("train_gflops", "images_seen", "wall_seconds")


def arm_name(row: Mapping[str, str]) -> str:
  """A `results.csv` row's arm: its seed group's name, by the sweep's own rule
  (`spec.group_name`); a point without a seed is its own arm."""
  if row.get("seed") in (None, "", "-"):
    return row["name"]
  return spec.group_name(row["name"], int(row["seed"]))


def _results(path) -> list[dict[str, str]]:
  path = epath.Path(path)
  path = path / "results.csv" if path.is_dir() else path
  if not path.exists():
    raise FileNotFoundError(f"{path} is missing: run (or aggregate) that sweep first.")
  with path.open() as f:
    return list(csv.DictReader(f))


def curves(sweeps: Mapping[str, Any], metric: str) -> list[dict[str, Any]]:
  """One row per arm and budget: `arm`, `budget` (the label `sweeps` gives that sweep:
  `{label: results folder or results.csv}`), the mean of `BUDGET_COLUMNS`, and the
  metric's `mean`, `low`, `high` and `n` over the arm's seeds. Rows are ordered by arm
  (as they first appear) and then by training GFLOPs; arms without the metric are left
  out, and a `ValueError` names a metric no sweep has."""
  rows = []
  for label, path in sweeps.items():
    table = _results(path)
    if table and metric not in table[0]:
      raise ValueError(f"{path}'s results.csv has no column {metric!r}.")
    by_arm = {}
    for row in table:
      if row.get(metric) not in (None, ""):
        by_arm.setdefault(arm_name(row), []).append(row)
    for arm, points in by_arm.items():
      row = {"arm": arm, "budget": label}
      for column in BUDGET_COLUMNS:
        values = [float(p[column]) for p in points if p.get(column) not in (None, "")]
        row[column] = float(np.mean(values)) if values else math.nan
      interval = statistics.mean_interval([float(p[metric]) for p in points])
      rows.append({**row, **{k: interval[k] for k in ("mean", "low", "high", "n")}})
  if not rows:
    raise ValueError(f"No sweep in {list(sweeps)} measured {metric!r}.")
  order = list(dict.fromkeys(r["arm"] for r in rows))
  return sorted(rows, key=lambda r: (order.index(r["arm"]), r["train_gflops"]))


def common_target(rows: Sequence[Mapping[str, Any]]) -> float:
  """The highest mean every arm measured at every budget reaches at one of them (the
  lowest of those arms' best means), so that `to_reach` has an answer for each. Arms
  left out of some budget's sweep (a control run at one budget only) do not set it."""
  budgets = {r["budget"] for r in rows}
  best, seen = {}, {}
  for r in rows:
    best[r["arm"]] = max(best.get(r["arm"], -math.inf), r["mean"])
    seen.setdefault(r["arm"], set()).add(r["budget"])
  complete = [arm for arm in best if seen[arm] == budgets] or list(best)
  return min(best[arm] for arm in complete)


def to_reach(rows: Sequence[Mapping[str, Any]], target: float | None = None) -> dict[str, dict]:
  """Per arm, the training GFLOPs at which its mean first reaches `target` (default
  `common_target`): `{"gflops": G, "bound": "="}` interpolated in log FLOPs between the
  two budgets that bracket it, `"<="` where the smallest budget already reaches it (G is
  that budget's), `">"` where no budget does (G is the largest). From the means over
  seeds, so without an interval of its own."""
  target = common_target(rows) if target is None else target
  out = {}
  for arm in dict.fromkeys(r["arm"] for r in rows):
    points = [(r["train_gflops"], r["mean"]) for r in rows if r["arm"] == arm]
    if points[0][1] >= target:
      out[arm] = {"gflops": points[0][0], "bound": "<="}
      continue
    out[arm] = {"gflops": points[-1][0], "bound": ">"}
    for (g0, a0), (g1, a1) in itertools.pairwise(points):
      if a0 < target <= a1:
        t = (target - a0) / (a1 - a0)
        gflops = math.exp((1 - t) * math.log(g0) + t * math.log(g1))
        out[arm] = {"gflops": float(gflops), "bound": "="}
        break
  return out


OWN_SIZE = "acc@{size}"  # A metric at each point's own training size (its last stage's).
TOLERANCE = 0.01  # RESEARCH.md: within a point of a run with twice the budget.


def _own(metric: str, row: Mapping[str, str]) -> str:
  """`metric` with `{size}` the row's last training size (its `stages` cell, `16/6` or
  `16/3 24/2 32/2`: size/epochs per stage)."""
  if "{size}" not in metric:
    return metric
  if row.get("stages") in (None, "", "-"):
    raise ValueError(f"{row['name']} has no stages column to read its training size from; "
                     "name the metric's size (acc@64).")
  return metric.format(size=int(row["stages"].split()[-1].split("/")[0]))


def convergence(first, second, metric: str = OWN_SIZE,
                tolerance: float = TOLERANCE) -> list[dict[str, Any]]:
  """Whether the arms of sweep `first` were trained to convergence: each arm of `second`
  (the same arms at twice the budget; a results folder or results.csv each) with its
  `metric` (default: accuracy at its own training size) in both, the mean over seeds
  with its 95% interval (`first`, `second`: mean, low, high, n), the `gain` of the longer
  budget with its Welch interval (`statistics.welch`: difference, low, high) and
  `converged`: whether the gain's mean is within `tolerance` (RESEARCH.md's point; the
  means decide, as the intervals of a few seeds are wide). An arm of `second` that
  `first` lacks is a `ValueError`."""
  def values(table):
    by_arm = {}
    for row in table:
      column = _own(metric, row)
      if row.get(column) not in (None, ""):
        by_arm.setdefault(arm_name(row), {"metric": column, "values": []})["values"].append(
            float(row[column]))
    return by_arm

  short, long = values(_results(first)), values(_results(second))
  if not long:
    raise ValueError(f"{second}'s results.csv has no {metric!r} for any point.")
  rows = []
  for arm, measured in long.items():
    if arm not in short:
      raise ValueError(f"{arm} is in {second} but not in {first}: nothing to check it against.")
    a, b = short[arm]["values"], measured["values"]
    gain = statistics.welch(b, a)
    rows.append({
        "arm": arm, "metric": measured["metric"],
        "first": statistics.mean_interval(a), "second": statistics.mean_interval(b),
        "gain": {k: gain[k] for k in ("difference", "low", "high")},
        "converged": abs(gain["difference"]) <= tolerance})
  return rows


def figure(rows: Sequence[Mapping[str, Any]], metric: str, target: float | None = None) -> Figure:
  """The metric against training GFLOPs (log axis), a line per arm through its budgets,
  each point's 95% interval as an error bar, and `target` as a dotted line."""
  fig = Figure(figsize=(5.5, 3.8))
  ax = fig.subplots()
  for i, arm in enumerate(dict.fromkeys(r["arm"] for r in rows)):
    mine = [r for r in rows if r["arm"] == arm]
    x = [r["train_gflops"] for r in mine]
    y = np.array([r["mean"] for r in mine])
    low = np.array([r["mean"] if r["low"] is None else r["low"] for r in mine])
    high = np.array([r["mean"] if r["high"] is None else r["high"] for r in mine])
    ax.errorbar(x, y, yerr=[y - low, high - y], marker="o", capsize=3, color=f"C{i}", label=arm)
  if target is not None:
    ax.axhline(target, color="grey", linestyle=":", linewidth=1)
  ax.set(xscale="log", xlabel="training GFLOPs", ylabel=metric)
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=7)
  fig.tight_layout()
  return fig
