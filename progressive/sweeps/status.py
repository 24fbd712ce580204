"""Where a sweep stands, read from its folder alone (`progressive sweep --status`).

Every tuning run and point is finished, diverged (a non-finite loss: the sweep leaves it
out), partway (its last logged step, and the checkpoint a rerun resumes from where that
is earlier) or not started. A finished one trained under another config than the sweep
now gives it is named, since the sweep stops on it. Then the tuning: each arm's grid
with each cell's mean validation metric, the choice once every run is in (with the edge
extensions the sweep would add, as `run.run_sweep` adds them), and the arms chosen at an
edge. Last, the time: what the finished runs took to train (`measure.WALL_FILE`) and
the measured points to measure (`measure_seconds`), and at each arm's pace so far,
about what is left of both. It trains, summarises and writes nothing, and takes no
hold: it runs beside the sweep that holds the folder.
"""

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from etils import epath

from progressive.analysis import run as run_lib
from progressive.sweeps import folder, measure, spec, tuning
from progressive.training import workdir as workdir_lib
from progressive.training.metrics import read_rows

FINISHED, DIVERGED, PARTWAY, NOT_STARTED = "finished", "diverged", "partway", "not started"


class RunState(NamedTuple):
  """One tuning run or point on disk."""
  name: str
  arm: str  # Its seed group (`spec.arm_of`).
  seed: Any
  state: str  # FINISHED, DIVERGED, PARTWAY or NOT_STARTED.
  step: int  # The last step it logged (its last step once finished).
  checkpoint: int  # The step a rerun resumes from (0: none).
  total: int
  seconds: float | None  # The training wall time the sweep recorded for it.
  summary: dict | None
  stale: str  # A finished run trained under another config: the fields that differ.


def run_state(point_dir, overrides: Mapping[str, Any], config, *, arm: str | None = None,
              check_config: bool = True) -> RunState:
  """The state of the run in `point_dir`, of `arm` (default: `spec.arm_of(overrides)`);
  `check_config`: name the fields a finished one was trained with otherwise."""
  point_dir = epath.Path(point_dir)
  total = measure.total_steps(config)
  steps = run_lib.checkpoint_steps(point_dir)
  checkpoint = steps[-1] if steps else 0
  logged = [r["step"] for r in read_rows(point_dir / "metrics.jsonl") if r.get("event") == "train"]
  step = max([checkpoint, *logged])
  summary = measure.read_summary(point_dir)
  if measure.diverged(point_dir):
    state = DIVERGED
  elif checkpoint >= total or (summary or {}).get("step", 0) >= total:
    state, step = FINISHED, total
  else:
    state = PARTWAY if step else NOT_STARTED
  stale = measure.trained_otherwise_text(point_dir, config) if (
      state == FINISHED and check_config) else ""
  return RunState(point_dir.name, arm or spec.arm_of(overrides), overrides.get("seed"), state, step,
                  checkpoint, total, measure.trained_seconds(point_dir), summary, stale)


def report(sweep: spec.Sweep, workdir, *, tuning_from: str | None = None) -> str:
  """Where the sweep in `workdir` stands, as `progressive sweep --status` prints it."""
  workdir = epath.Path(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise ValueError(f"--workdir={workdir} is a file, not a sweep folder: give the folder the "
                     "sweep trains into.")
  lines = [f"{sweep.flag} in {workdir}: {_running(workdir)}"]
  runs, choice, extensions = [], None, 0
  if sweep.tuning is not None and not tuning_from:
    runs, choice, extensions, text = _tuning(sweep, workdir)
    lines += text
  elif sweep.tuning is not None:
    choice = tuning.read_choice(workdir)
    source = (choice or {}).get("from", tuning_from)
    lines.append(f"{sweep.tuning.field}: " + (f"borrowed from {source} (--tuning_from)." if choice
                                              else f"to be borrowed from {source} when the sweep starts."))
  known = sweep.tuning is None or choice is not None  # Else finished points can't be judged.
  points = [(p, run_state(workdir / p.name, p.overrides, p.config, check_config=known))
            for p in sweep.expand(choice)]
  lines += _points(sweep, points, choice)
  more_tuning = (sweep.tuning.extend_edges - extensions
                 if sweep.tuning is not None and not tuning_from and choice is None else 0)
  lines.append(_time([s for _, s in runs], [s for _, s in points], more_tuning))
  return "\n".join(lines)


def _running(workdir: epath.Path) -> str:
  if not workdir.exists():
    return "nothing has run here yet (no such folder)."
  holder = workdir_lib.live_holder(workdir, folder.HOLD_FILE)
  if holder is None:
    return "not running."
  return (f"running (process {holder.get('pid')} on {holder.get('host')}, since "
          f"{holder.get('started')}).")


def _tuning(sweep: spec.Sweep, workdir: epath.Path):
  """The tuning runs with their states as the sweep would have them (with the edge
  extensions its finished runs call for), their choice once every run is in (else None),
  the extensions made, and the lines that say so."""
  tuning_dir = workdir / tuning.TUNING_DIR
  tuned, extensions, error = sweep, 0, None

  def states(swept):
    return [(run, run_state(tuning_dir / run.name, run.overrides, run.config, arm=run.arm))
            for run in tuning.tuning_points(swept)]

  runs = states(tuned)
  choice = None
  while True:
    try:
      choice = _decided(tuned, runs, tuning_dir)
    except ValueError as e:  # Every cell of an arm diverged.
      error = str(e)
    if choice is None or extensions >= tuned.tuning.extend_edges:
      break
    wider = tuning.extend_at_edges(tuned, choice)
    if wider is tuned:
      break
    tuned, extensions = wider, extensions + 1
    runs, choice = states(tuned), None
  t = tuned.tuning
  counts = _counts([state for _, state in runs])
  metric = t.metric + (" (at each arm's own size)" if "{size}" in t.metric else "")
  lines = [(f"Tuning {t.field} by {metric} on {t.eval_split} (trained on {t.train_split}), "
            f"seeds {', '.join(map(str, t.seeds))} per value: {len(runs)} runs, {counts}.")]
  by_arm: dict[str, list] = {}
  for run, state in runs:
    by_arm.setdefault(state.arm, []).append((run, state))
  for arm, cells in by_arm.items():
    chosen = (choice or {}).get("values", {}).get(cells[0][0].key)
    texts = []
    for value in t.grid_of(arm):
      seeds = [s for r, s in cells if r.value == value]
      texts.append(_cell(tuned, value, seeds, [r for r, _ in cells if r.value == value])
                   + (" (chosen)" if choice and value == chosen else ""))
    lines.append(f"  {arm}: " + " | ".join(texts))
  if error:
    lines.append(f"  {error}")
  elif choice is None:
    left = sum(s.state not in (FINISHED, DIVERGED) for _, s in runs)
    more = (f", then up to {t.extend_edges - extensions} more value(s) per arm chosen at an "
            "edge" if t.extend_edges > extensions else "")
    lines.append(f"  Not chosen yet: {left} run(s) to go{more}." if left else
                 "  Not chosen yet: a finished run has no summary (the sweep writes it).")
  else:
    stored = tuning.read_choice(workdir)
    if stored is None or json.loads(json.dumps(stored["values"])) != json.loads(
        json.dumps(choice["values"], default=str)):
      lines.append(f"  {tuning.CHOICE_FILE} " + ("is not written yet" if stored is None else
                   "holds another choice (made before the grid changed)")
                   + ": the sweep writes this one when it runs next.")
    if edges := tuning.edges_text(choice):
      lines.append(f"  At an edge of its grid (the best value may lie beyond it): {edges}.")
  return runs, choice, extensions, lines


def _decided(swept: spec.Sweep, runs, tuning_dir) -> dict[str, Any] | None:
  """`tuning.decide` on the runs' summaries; None until every run is in and summarised."""
  metrics = []
  for run, state in runs:
    if state.state == DIVERGED:
      metrics.append((run, None))
    elif state.state == FINISHED and state.summary is not None:
      metrics.append((run, tuning.run_metric(swept, run, state.summary)))
    else:
      return None
  return tuning.decide(swept, metrics, tuning_dir)


def _cell(swept: spec.Sweep, value, states: Sequence[RunState], runs) -> str:
  """One grid cell: its mean metric once every seed is in, else how far it is."""
  if any(s.state == DIVERGED for s in states):
    return f"{value} diverged"
  done = [tuning.run_metric(swept, r, s.summary) for r, s in zip(runs, states)
          if s.state == FINISHED and s.summary is not None]
  mean = f" {sum(done) / len(done):.3f}" if done else ""
  if len(done) == len(states):
    return f"{value}{mean}"
  going = [f"seed {s.seed} at step {s.step} of {s.total}" for s in states if s.state == PARTWAY]
  return f"{value}{mean} ({len(done)} of {len(states)} seeds" + "".join(
      f"; {g}" for g in going) + ")"


def _points(sweep: spec.Sweep, points, choice) -> list[str]:
  states = [state for _, state in points]
  lines = [f"Points: {len(points)}, {_counts(states)}."]
  by_arm: dict[str, list] = {}
  for point, state in points:
    by_arm.setdefault(state.arm, []).append((point, state))
  for arm, members in by_arm.items():
    key = spec.arm_key(members[0][0].overrides)
    value = ""
    if sweep.tuning is not None:
      chosen = (choice or {}).get("values", {}).get(key)
      value = (f" ({sweep.tuning.field} {chosen})" if chosen is not None
               else f" ({sweep.tuning.field} not chosen yet)")
    groups: dict[str, list[str]] = {}
    for _, s in members:
      label = "" if len(members) == 1 else f" {s.name if s.seed is None else s.seed}"
      if s.state == PARTWAY:
        label += f" at step {s.step} of {s.total}" + (
            f", checkpointed at {s.checkpoint}" if s.checkpoint < s.step else "")
      groups.setdefault(s.state, []).append(label)
    seeds = " seeds" if len(members) > 1 and members[0][1].seed is not None else ""
    lines.append(f"  {arm}{value}:{seeds} " + "; ".join(
        f"{state}{','.join(labels)}" for state, labels in groups.items()))
    for _, s in members:
      if s.stale:
        lines.append(f"    {s.name} was trained under another config ({s.stale}): the sweep "
                     "stops on it; move its folder aside to rerun it.")
  return lines


def _counts(states: Sequence[RunState]) -> str:
  counts = {k: sum(s.state == k for s in states) for k in (FINISHED, DIVERGED, PARTWAY, NOT_STARTED)}
  return ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "none"


def _time(runs: Sequence[RunState], points: Sequence[RunState], more_tuning: int) -> str:
  """The time so far and, at each arm's pace so far, about what is left: the training of
  every run, and the measures of every point not yet measured (at the `measure_seconds`
  the measured points of its arm took)."""
  timed = [s for s in (*runs, *points) if s.state == FINISHED and s.seconds]
  if not timed:
    return "Time: no run has finished yet, so no estimate."
  spent = sum(s.seconds for s in timed)
  text = (f"Time: {len(timed)} finished run(s) trained in {_duration(spent)} "
          f"({_duration(spent / len(timed))} each)")
  measured = [s for s in points if (s.summary or {}).get("measure_seconds") is not None]
  if measured:
    took = sum(s.summary["measure_seconds"] for s in measured)
    text += (f"; {len(measured)} point(s) measured in {_duration(took)} "
             f"({_duration(took / len(measured))} each)")
  left = [s for s in (*runs, *points) if s.state in (PARTWAY, NOT_STARTED)]
  unmeasured = [s for s in points if s.state != DIVERGED and s.summary is None]
  if not left and not unmeasured:
    return text + "; nothing is left to do."
  seconds = _per_arm(timed, lambda s: s.seconds / s.total)
  left_seconds = sum((s.total - s.step) * seconds(s.arm) for s in left)
  if measured:
    left_seconds += sum(map(_per_arm(measured, lambda s: s.summary["measure_seconds"]),
                            (s.arm for s in unmeasured)))
  untimed = ("" if measured or not unmeasured else
             "; the points' measures come on top (none is timed yet)")
  more = (f", and any edge extension of the tuning (up to {more_tuning} value(s) per arm)"
          if more_tuning else "")
  return (f"{text}. Left: {len(left)} run(s) to train and {len(unmeasured)} point(s) to "
          f"measure, about {_duration(left_seconds)} at each arm's pace so far{untimed}{more}.")


def _per_arm(states: Sequence[RunState], value) -> Callable[[str], float]:
  """A function of an arm: the mean of `value` over its `states`, else over all of them."""
  by_arm: dict[str, list[float]] = {}
  for s in states:
    by_arm.setdefault(s.arm, []).append(value(s))
  everything = [v for values in by_arm.values() for v in values]

  def mean(arm: str) -> float:
    values = by_arm.get(arm, everything)
    return sum(values) / len(values)

  return mean


def _duration(seconds: float) -> str:
  minutes = round(seconds / 60)
  if minutes < 1:
    return f"{seconds:.0f} s"
  if minutes < 60:
    return f"{minutes} min"
  return f"{minutes // 60} h {minutes % 60:02d} min"
