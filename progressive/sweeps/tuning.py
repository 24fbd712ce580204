"""Tuning: one value of a field chosen per arm on the validation slice (`spec.Tuning`).

Every arm (the points that differ only in `seed`) is first trained once per grid value
and tuning seed on a validation slice of the training split, into
`DIR/tuning/<arm>__<field>=<value>_seed<seed>/`; the value with the best validation
metric, averaged over the tuning seeds (at least two unless the spec is a pilot), is
then the arm's setting for all its seeds on the configured splits (the test split is
never used to choose). `DIR/tuning/choice.json` keeps the choice: `field`, `metric`,
`splits`, `seeds`, `pilot`, `values` `{arm key: value}` and the `grid` rows, one per
cell (arm, value, the mean metric, its `std` over seeds, `n_seeds`, `per_seed`). A sweep
may instead borrow another sweep's choice (`borrow`: a check at twice the budget runs at
the first budget's rates); its choice then names that sweep (`from`).
"""

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import ml_collections
from etils import epath

from progressive.sweeps import folder, measure, spec, tables

TUNING_DIR = "tuning"
CHOICE_FILE = "choice.json"


class TuningPoint(NamedTuple):
  """One tuning run: its arm's `spec.arm_key`, the grid `value`, and its point."""
  key: str
  value: Any
  name: str
  overrides: dict[str, Any]
  config: ml_collections.ConfigDict

  @property
  def arm(self) -> str:
    """The arm's name (its seed group's, `spec.arm_of` of its points)."""
    return self.name.rsplit("__", 1)[0]


def tuning_points(sweep: spec.Sweep) -> list[TuningPoint]:
  """Every tuning run: each arm of the sweep once per grid value and tuning seed, on the
  validation slice (none without tuning)."""
  if sweep.tuning is None:
    return []
  tuning = sweep.tuning
  arms = {}
  for name, overrides, _ in sweep.expand():
    arms.setdefault(spec.arm_key(overrides), (name, overrides))
  out = []
  for key, (name, overrides) in arms.items():
    arm = spec.arm_of(overrides)
    for value in tuning.grid_of(arm):
      for seed in tuning.seeds:
        tuned = {k: v for k, v in overrides.items() if k not in ("seed", "name")}
        tuned.update({tuning.field: value, "data.train_split": tuning.train_split,
                      "data.eval_split": tuning.eval_split, "seed": seed})
        tuned["name"] = f"{arm}__{spec.point_name({tuning.field: value})}_seed{seed}"
        out.append(TuningPoint(key, value, tuned["name"], tuned,
                               spec.apply_overrides(sweep.base, tuned)))
  return out


def arm_metric(metric: str, config) -> str:
  """The tuning metric's column for one arm: `"acc@{size}"` names the accuracy at the
  arm's own last stage size (`acc@24` for an arm trained at 24 px)."""
  return metric.format(size=int(config.stages[-1]["size"]))


def read_choice(workdir) -> dict[str, Any] | None:
  """`DIR/tuning/choice.json`, or None before the choice is made."""
  path = epath.Path(workdir) / TUNING_DIR / CHOICE_FILE
  return json.loads(path.read_text()) if path.exists() else None


def made_otherwise(choice: Mapping[str, Any] | None, sweep: spec.Sweep) -> bool:
  """Whether a stored `choice` was made on other tuning seeds than the sweep's (one made
  before tuning took several seeds per cell has none): its tuning runs are not the sweep's."""
  return (choice is not None and sweep.tuning is not None
          and choice.get("seeds") != list(sweep.tuning.seeds))


def seeds_text(choice: Mapping[str, Any]) -> str:
  """How many seeds each grid cell of `choice` was averaged over, as results.md says it."""
  seeds = choice.get("seeds") or []
  if len(seeds) > 1:
    return f"the mean over seeds {', '.join(map(str, seeds))} of each grid cell"
  what = "a pilot" if choice.get("pilot") else "made before tuning took two seeds per cell"
  return f"one seed per grid cell ({what}: a difference of a few points is within its noise)"


def choose(sweep: spec.Sweep, workdir) -> dict[str, Any]:
  """Picks each arm's value by the validation metric of its finished tuning runs,
  averaged over the tuning seeds of each grid cell, and writes `DIR/tuning/choice.json`.
  A finished run without a summary (run elsewhere) is summarised here. A run stopped by
  a non-finite loss (`measure.diverged`) makes its cell one that diverged: its metric is
  None, `diverged` counts its seeds that did, and it is never chosen. `ValueError` for a
  run that has not finished, and for an arm whose every cell diverged."""
  tuning_dir = epath.Path(workdir) / TUNING_DIR

  def metric(run: TuningPoint) -> float | None:
    if measure.diverged(tuning_dir / run.name):
      return None
    summary = measure.read_summary(tuning_dir / run.name)
    if summary is None and measure.finished(tuning_dir / run.name, run.config):  # Run elsewhere.
      summary = measure.summarize_point(tuning_dir / run.name, run.name, run.overrides,
                                        run.config, measure.Settings(tuning=True))
    if summary is None:
      raise ValueError(f"Tuning run {tuning_dir / run.name} has not finished; run the sweep first.")
    return run_metric(sweep, run, summary)

  choice = decide(sweep, [(run, metric(run)) for run in tuning_points(sweep)], tuning_dir)
  tuning_dir.mkdir(parents=True, exist_ok=True)
  folder.write_text(tuning_dir / CHOICE_FILE, json.dumps(choice, indent=1, default=str) + "\n")
  return choice


def run_metric(sweep: spec.Sweep, run: TuningPoint, summary: Mapping[str, Any]) -> float:
  """The tuning metric of one finished run, from its summary; `ValueError` if it has none."""
  column = arm_metric(sweep.tuning.metric, run.config)
  value = tables.point_row(summary).get(column)
  if value is None:
    raise ValueError(f"Tuning run {run.name} has no {column!r}; name a column of results.csv.")
  return value


def decide(sweep: spec.Sweep, runs: Sequence[tuple[TuningPoint, float | None]],
           where) -> dict[str, Any]:
  """The choice (`choice.json`'s fields) from every tuning run's metric (None: it
  diverged), without writing it; `ValueError` for an arm whose every cell diverged (its
  runs are in `where`)."""
  tuning = sweep.tuning
  cells = {}
  for run, metric in runs:
    cells.setdefault((run.key, json.dumps(run.value)), (run.arm, run.key, run.value, []))[3].append(metric)
  rows, best = [], {}
  for arm, key, value, metrics in cells.values():  # In grid order, arm by arm.
    failed = sum(m is None for m in metrics)
    mean = None if failed else sum(metrics) / len(metrics)
    std = (sum((m - mean) ** 2 for m in metrics) / (len(metrics) - 1)) ** 0.5 if (
        mean is not None and len(metrics) > 1) else None
    rows.append({"arm": arm, "key": key, "value": value, tuning.metric: mean, "std": std,
                 "n_seeds": len(metrics), "per_seed": metrics, "diverged": failed})
    if mean is not None and (key not in best or mean > best[key][1]):  # Ties: the first value.
      best[key] = (value, mean)
  lost = ", ".join(dict.fromkeys(r["arm"] for r in rows if r["key"] not in best))
  if lost:
    raise ValueError(f"Every {tuning.field} of the grid diverged for {lost} (a non-finite loss "
                     f"in a tuning seed of each cell, {where}): extend the grid below its "
                     "lowest value.")
  return {"field": tuning.field, "metric": tuning.metric,
          "splits": [tuning.train_split, tuning.eval_split], "seeds": list(tuning.seeds),
          "pilot": tuning.pilot, "values": {k: v for k, (v, _) in best.items()}, "grid": rows}


def at_edges(choice: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
  """`(arm, value, "lowest" or "highest")` for each arm whose chosen value is the lowest
  or highest of the numeric values it was tuned over (two or more): the best may lie
  beyond its grid."""
  values: dict[str, list] = {}
  arms = {}
  for row in choice["grid"]:
    values.setdefault(row["key"], []).append(row["value"])
    arms[row["key"]] = row["arm"]
  out = []
  for key, grid in values.items():
    value = choice["values"].get(key)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in grid)
    if value is None or not numeric or len(set(grid)) < 2:
      continue
    if value == min(grid) or value == max(grid):
      out.append((arms[key], value, "lowest" if value == min(grid) else "highest"))
  return out


def extend_at_edges(sweep: spec.Sweep, choice: Mapping[str, Any]) -> spec.Sweep:
  """`sweep` with one more value in the grid of each arm whose `choice` is at an edge
  (`at_edges`), beyond that edge by the grid's own step there (a ratio where every value
  is positive, else a difference); `sweep` itself where none is."""
  tuning = sweep.tuning
  grids = dict(tuning.arm_grids)
  for arm, _, side in at_edges(choice):
    grid = sorted(tuning.grid_of(arm))
    inner, edge = (grid[1], grid[0]) if side == "lowest" else (grid[-2], grid[-1])
    value = edge * (edge / inner) if all(v > 0 for v in grid) else edge + (edge - inner)
    value = round(value, 12)  # 0.1 / 2, not 0.05000000000000001.
    grids[arm] = tuple(sorted((*grid, value)))
  if grids == dict(tuning.arm_grids):
    return sweep
  return dataclasses.replace(sweep, tuning=dataclasses.replace(tuning, arm_grids=grids))


def edges_text(choice: Mapping[str, Any]) -> str:
  """`at_edges` as results.md and the sweep's log say it (empty if no arm is at an edge)."""
  return ", ".join(f"{arm} {value} (its {side})" for arm, value, side in at_edges(choice))


def borrow(sweep: spec.Sweep, workdir, source) -> dict[str, Any]:
  """The choice of the sweep in `source` given to this sweep's arms, matched by arm name
  (the check of convergence, the same arms at twice the budget, runs at the rates the
  first budget chose): written as `DIR/tuning/choice.json` with `from` naming `source`,
  its grid rows those of the arms this sweep has. `ValueError` where `source` holds no
  choice, tuned another field, lacks one of this sweep's arms, or `DIR` already holds
  another choice (its points may have trained under it)."""
  theirs = read_choice(source)
  if theirs is None:
    raise ValueError(f"{source} holds no tuning choice ({TUNING_DIR}/{CHOICE_FILE}): run that "
                     "sweep's tuning first, or drop --tuning_from to tune here.")
  if sweep.tuning is None or theirs["field"] != sweep.tuning.field:
    raise ValueError(f"{source} tuned {theirs['field']}; {sweep.flag} tunes "
                     f"{sweep.tuning.field if sweep.tuning else 'nothing'}.")
  rows = {r["arm"]: r for r in theirs["grid"]}
  ours = {t.arm: t.key for t in tuning_points(sweep)}
  missing = [arm for arm in ours if arm not in rows]
  if missing:
    raise ValueError(f"{source}'s tuning choice has no arm {', '.join(missing)} of {sweep.flag}.")
  choice = {**theirs, "from": str(source),
            "values": {key: theirs["values"][rows[arm]["key"]] for arm, key in ours.items()},
            "grid": [{**r, "key": ours[r["arm"]]} for r in theirs["grid"] if r["arm"] in ours]}
  stored = read_choice(workdir)
  if stored is not None and (stored["field"], stored["values"]) != (
      choice["field"], json.loads(json.dumps(choice["values"], default=str))):
    raise ValueError(f"{workdir} already holds another tuning choice"
                     + (f" (from {stored['from']})" if stored.get("from") else "")
                     + "; borrow into a fresh --workdir, so its points stay under their own.")
  tuning_dir = epath.Path(workdir) / TUNING_DIR
  tuning_dir.mkdir(parents=True, exist_ok=True)
  folder.write_text(tuning_dir / CHOICE_FILE, json.dumps(choice, indent=1, default=str) + "\n")
  return choice


def check_grid(workdir, grid: Sequence[Any] | None, tune_only: bool) -> None:
  """`ValueError` where another `grid` cannot be checked: without `tune_only` (a sweep's
  points are chosen on the config's own grid, which its results report), or in a workdir
  whose choice was made on another grid (that sweep's choice would be overwritten)."""
  if not grid:
    return
  if not tune_only:
    raise ValueError("--tuning_grid needs --tune_only: the sweep's points are chosen on the "
                     "config's own grid, which its results report; check other values in "
                     "another --workdir with --tune_only.")
  stored = read_choice(workdir)
  if stored and {r["value"] for r in stored["grid"]} != set(grid):
    raise ValueError(f"{workdir} already holds a tuning choice made on another grid; check "
                     "--tuning_grid in another --workdir, so that sweep's choice stays its own.")
