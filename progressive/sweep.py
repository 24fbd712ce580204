r"""Sweeps: expand a config's `get_sweep(arg)` into runs, run or print them, aggregate.

  progressive sweep --config=configs/antialias.py:smoke --workdir=/tmp/antialias
  progressive sweep --config=configs/antialias.py --workdir=DIR --print_commands
  progressive sweep --config=configs/antialias.py --workdir=DIR --aggregate_only
  progressive sweep --config=configs/antialias.py --workdir=DIR --set=data.data_dir=/data

A config file that sweeps defines `get_sweep(arg)` beside `get_config(arg)`: a list of
override dicts, one per point, whose keys are dotted config fields
(`{"model.downsample": "blur", "model.blur_size": 3}`) and an optional `"name"`. Every
point runs into `DIR/<name>/`; a finished point is skipped and a partial one resumes
(`progressive.training.train` resumes from its checkpoints). A finished point whose `config.json`
differs from what the sweep now gives it in a field that changes training (the sweep
file was edited, or an extended tuning grid moved the choice) stops the sweep before
anything trains, naming every such point and field: move those folders aside to rerun
them. Aggregation reads whatever has finished, so points run elsewhere
(`--print_commands` for a cluster) count too, and writes `DIR/results.csv`,
`DIR/results.md` and `DIR/results.png` (`progressive.sweep_report`). `--workers=N`
trains N points at a time, each in its own process: on a GPU host, where one small
model leaves the accelerator and most cores idle.

`with_seeds(points, seeds)` repeats every point per seed; aggregation then adds the mean
and standard deviation over the seeds of points whose overrides differ only in `seed`.
A config file may also define `get_ensemble_sizes(arg)`: each point then reports the
multi-size test-time ensemble over those sizes (overridden by `--ensemble_sizes`).

A config file may define `get_tuning(arg)`, e.g. `{"field": "opt.lr_max", "grid": [0.1,
0.2, 0.4], "metric": "acc@64"}`: every arm (the points that differ only in `seed`) is
first trained once per grid value on a validation slice of the training split
(`train_split`/`eval_split`, default `train[:90%]`/`train[90%:]`, into
`DIR/tuning/<arm>__<field>=<value>/`); the value with the best validation `metric` is
then the arm's setting for all its seeds on the configured splits (the test split is
never used to choose). `DIR/tuning/choice.json` keeps the choice; aggregation reports
the grid.
"""

import ast
import concurrent.futures
import importlib.util
import itertools
import json
import multiprocessing
import os
import re
import shlex
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
from absl import flags
from etils import epath

from progressive import cli, schedules, sweep_report
from progressive.training import train
from progressive import config as config_lib
from progressive.training import workdir as workdir_lib
from progressive.analysis import run as run_lib
from progressive.data import pipeline
from progressive.sweep_report import aggregate, read_summary, summarize_point


def product(**axes: Sequence[Any]) -> list[dict[str, Any]]:
  """Every combination of the axes: `product(a=[1, 2], b=[3])` -> `[{a: 1, b: 3}, {a: 2, b: 3}]`."""
  keys = list(axes)
  return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


def zip_axes(**axes: Sequence[Any]) -> list[dict[str, Any]]:
  """Axes walked together: `zip_axes(a=[1, 2], b=[3, 4])` -> `[{a: 1, b: 3}, {a: 2, b: 4}]`."""
  lengths = {len(v) for v in axes.values()}
  if len(lengths) != 1:
    raise ValueError(f"zip_axes needs axes of one length, got { {k: len(v) for k, v in axes.items()} }.")
  return [dict(zip(axes, values)) for values in zip(*axes.values())]


def with_seeds(points: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> list[dict[str, Any]]:
  """Every point once per seed: `seed` set and `_seed<N>` added to its name. Aggregation
  then also reports the mean and standard deviation over the seeds of each point (the
  points whose overrides differ only in `seed`)."""
  out = []
  for point in points:
    for seed in seeds:
      named = {"name": f"{point['name']}_seed{seed}"} if "name" in point else {}
      out.append({**point, "seed": seed, **named})
  return out


def load_module(path: str):
  """Imports a config file by path (`cli.config_root` on `sys.path`, as every command)."""
  path = epath.Path(path).resolve()
  cli.add_config_root(str(path))
  spec = importlib.util.spec_from_file_location(f"_sweep_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def split_config_arg(config_flag: str) -> tuple[str, str | None]:
  """`"configs/x.py:smoke"` -> `("configs/x.py", "smoke")`."""
  path, _, arg = config_flag.partition(":")
  return path, arg or None


def point_name(overrides: Mapping[str, Any]) -> str:
  """The point's folder name: its `"name"`, else `field=value` pairs made path-safe."""
  if "name" in overrides:
    return str(overrides["name"])
  parts = []
  for key, value in overrides.items():
    text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) and not any(
        isinstance(v, Mapping) for v in value) else str(value)
    parts.append(f"{key.split('.')[-1]}={text}")
  return re.sub(r"[^A-Za-z0-9_.,=+-]+", "_", "_".join(parts))


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]):
  """A copy of `config` with dotted-key overrides applied (unknown keys are an error)."""
  config = config.copy_and_resolve_references()
  for key, value in overrides.items():
    if key == "name":
      continue
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    if leaf not in node:
      raise KeyError(f"Sweep override {key!r} names no config field.")
    node[leaf] = tuple(value) if isinstance(value, list) else value
  return config


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
  """`["data.data_dir=/x", "seed=1"]` -> `{"data.data_dir": "/x", "seed": 1}` (literals parsed)."""
  overrides = {}
  for pair in pairs:
    key, sep, text = pair.partition("=")
    if not sep:
      raise ValueError(f"--set takes field=value, got {pair!r}.")
    try:
      overrides[key] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      overrides[key] = text
  return overrides


def expand(
    config_flag: str, common: Mapping[str, Any] | None = None, *, choice: Mapping | None = None,
) -> tuple[ml_collections.ConfigDict, list[tuple[str, dict, Any]]]:
  """The base config and `(name, overrides, config)` for every point of the sweep;
  `common` overrides (e.g. `data.data_dir`) apply to every point first, and a tuning
  `choice` (`choose`) sets its field per arm (a point that sets the field keeps its own)."""
  path, arg = split_config_arg(config_flag)
  module = load_module(path)
  if not hasattr(module, "get_sweep"):
    raise ValueError(f"{path} defines no get_sweep(arg); it is a single run, use progressive.commands.train.")
  base = apply_overrides(module.get_config(arg), common or {})
  points = []
  for overrides in module.get_sweep(arg):
    name = point_name(overrides)
    if any(name == p[0] for p in points):
      raise ValueError(f"Two sweep points share the name {name!r}; give them a 'name'.")
    config = apply_overrides(base, overrides)
    chosen = (choice or {}).get("values", {}).get(arm_key(overrides))
    if chosen is not None and choice["field"] not in overrides:
      config = apply_overrides(config, {choice["field"]: chosen})
    points.append((name, dict(overrides), config))
  return base, points


def _flag_value(value) -> str:
  if isinstance(value, (list, tuple)):
    return repr(tuple(value))
  return str(value)


def commands(config_flag: str, workdir: str, common: Mapping[str, Any] | None = None) -> list[str]:
  """One `progressive train ...` command per point, runnable from any directory. With tuning, until
  `DIR/tuning/choice.json` exists (run `--aggregate_only` after the tuning runs to make
  it) only the tuning runs' commands; then the points' with their chosen values."""
  common = dict(common or {})
  workdir = epath.Path(workdir)
  choice = read_choice(workdir)
  if tuning_spec(config_flag) is not None and choice is None:
    runs = [(workdir / TUNING_DIR / name, overrides) for _, _, name, overrides, _ in
            tuning_points(config_flag, common)]
  else:
    _, points = expand(config_flag, common, choice=choice)
    runs = []
    for name, overrides, config in points:
      chosen = {} if choice is None or choice["field"] in overrides else {
          choice["field"]: choice["values"][arm_key(overrides)]}
      runs.append((workdir / name, {**overrides, **chosen}))
  path, arg = split_config_arg(config_flag)
  config_flag = str(epath.Path(path).resolve()) + (f":{arg}" if arg else "")
  lines = []
  for point_dir, overrides in runs:
    args = ["progressive", "train", f"--config={config_flag}", f"--workdir={point_dir.resolve()}"]
    merged = {**common, **overrides}
    args += [f"--config.{k}={_flag_value(v)}" for k, v in merged.items() if k != "name"]
    lines.append(shlex.join(args))
  return lines


def total_steps(config) -> int:
  info = pipeline.dataset_info(config.data)
  return schedules.stage_plan(config.stages, config.batch_size, info.num_train)[-1].end


def finished(workdir: epath.Path, config) -> bool:
  """Whether `workdir` holds a checkpoint at the run's last step."""
  steps = run_lib.checkpoint_steps(workdir)
  return bool(steps) and max(steps) >= total_steps(config)


def summarized(workdir: epath.Path, config, options: Mapping[str, Any]) -> bool:
  """Whether `workdir` holds a summary of the run to its last step made with `options`
  (`summarize_point`'s): a point copied from another machine without its checkpoints."""
  summary = read_summary(workdir)
  return (summary is not None and summary.get("step", 0) >= total_steps(config)
          and summary.get("options") == sweep_report.summary_options(config, **options))


def trained_otherwise(workdir: epath.Path, config) -> dict[str, tuple[Any, Any]]:
  """The fields that change what training computes (neither run control nor resumable,
  `config_lib.FIELDS`) whose value in `workdir/config.json` differs from
  `config`'s: `{field: (stored, now)}`; empty where they agree or nothing is stored."""
  path = epath.Path(workdir) / "config.json"
  if not path.exists():
    return {}
  return workdir_lib.config_differences(json.loads(path.read_text()), json.loads(config.to_json()),
                                        ignore=config_lib.RESUMABLE_FIELDS)


TUNING_DIR = "tuning"
CHOICE_FILE = "choice.json"
VALIDATION_SPLITS = {"data.train_split": "train[:90%]", "data.eval_split": "train[90%:]"}


def tuning_spec(config_flag: str, grid: Sequence[Any] | None = None) -> dict[str, Any] | None:
  """The config file's `get_tuning(arg)` with its defaults (`grid`, if given, replacing
  its values), or None (no `get_tuning`, or it returns None for this variant);
  `ValueError` for a spec that cannot work."""
  path, arg = split_config_arg(config_flag)
  module = load_module(path)
  spec = module.get_tuning(arg) if hasattr(module, "get_tuning") else None
  if spec is None:
    return None
  spec = dict(spec, **({"grid": tuple(grid)} if grid else {}))
  missing = {"field", "grid", "metric"} - set(spec)
  if missing or not spec.get("grid"):
    raise ValueError(f"get_tuning must give 'field', a non-empty 'grid' and 'metric'; missing {sorted(missing)}.")
  spec.setdefault("train_split", VALIDATION_SPLITS["data.train_split"])
  spec.setdefault("eval_split", VALIDATION_SPLITS["data.eval_split"])
  if spec["eval_split"].split("[")[0] != spec["train_split"].split("[")[0]:
    raise ValueError(
        f"get_tuning's eval_split {spec['eval_split']!r} must be a slice of the training split "
        f"{spec['train_split']!r} (the test split is never used to choose)."
    )
  return spec


def arm_key(overrides: Mapping[str, Any]) -> str:
  """What a point is without its seed: its other overrides (the arm tuning chooses for)."""
  return json.dumps({k: v for k, v in overrides.items() if k not in ("seed", "name")},
                    sort_keys=True, default=str)


def tuning_points(config_flag: str, common: Mapping[str, Any] | None = None,
                  grid: Sequence[Any] | None = None):
  """`(arm key, value, name, overrides, config)` of every tuning run: each arm of the
  sweep once per grid value (`grid`, if given, instead of the config's), on the
  validation slice, at the base config's seed."""
  spec = tuning_spec(config_flag, grid)
  if spec is None:
    return []
  base, points = expand(config_flag, common, choice={})
  arms = {}
  for name, overrides, _ in points:
    arms.setdefault(arm_key(overrides), (name, overrides))
  out = []
  for key, (name, overrides) in arms.items():
    arm = sweep_report.group_name({"name": name, "overrides": overrides}) if "seed" in overrides else name
    for value in spec["grid"]:
      tuned = {k: v for k, v in overrides.items() if k not in ("seed", "name")}
      tuned.update({spec["field"]: value, "data.train_split": spec["train_split"],
                    "data.eval_split": spec["eval_split"]})
      tuned["name"] = f"{arm}__{point_name({spec['field']: value})}"
      out.append((key, value, tuned["name"], tuned, apply_overrides(base, tuned)))
  return out


def arm_metric(metric: str, config) -> str:
  """The tuning metric's column for one arm: `"acc@{size}"` names the accuracy at the
  arm's own last stage size (`acc@24` for an arm trained at 24 px)."""
  return metric.format(size=int(config.stages[-1]["size"]))


def read_choice(workdir) -> dict[str, Any] | None:
  path = epath.Path(workdir) / TUNING_DIR / CHOICE_FILE
  return json.loads(path.read_text()) if path.exists() else None


def choose(config_flag: str, workdir, common: Mapping[str, Any] | None = None,
           grid: Sequence[Any] | None = None) -> dict[str, Any]:
  """Picks each arm's value by the validation metric of its finished tuning runs (over
  `grid`, if given, instead of the config's) and writes `DIR/tuning/choice.json`:
  `field`, `metric`, `values` `{arm key: value}` and the `grid` rows (arm, value, metric)."""
  spec = tuning_spec(config_flag, grid)
  tuning_dir = epath.Path(workdir) / TUNING_DIR
  rows, best = [], {}
  for key, value, name, overrides, config in tuning_points(config_flag, common, grid):
    summary = read_summary(tuning_dir / name)
    if summary is None and finished(tuning_dir / name, config):  # Run elsewhere.
      summary = summarize_point(tuning_dir / name, name, overrides, config, measures=False)
    if summary is None:
      raise ValueError(f"Tuning run {tuning_dir / name} has not finished; run the sweep first.")
    column = arm_metric(spec["metric"], config)
    metric = sweep_report.point_row(summary).get(column)
    if metric is None:
      raise ValueError(f"Tuning run {name} has no {column!r}; name a column of results.csv.")
    rows.append({"arm": name.rsplit("__", 1)[0], "key": key, "value": value, spec["metric"]: metric})
    if key not in best or metric > best[key][1]:  # Ties: the first value of the grid.
      best[key] = (value, metric)
  choice = {"field": spec["field"], "metric": spec["metric"], "splits": [spec["train_split"], spec["eval_split"]],
            "values": {k: v for k, (v, _) in best.items()}, "grid": rows}
  tuning_dir.mkdir(parents=True, exist_ok=True)
  (tuning_dir / CHOICE_FILE).write_text(json.dumps(choice, indent=1, default=str) + "\n")
  return choice


def config_ensemble_sizes(config_flag: str):
  """The sizes of the multi-size ensemble a sweep reports: its config file's
  `get_ensemble_sizes(arg)` (a tuple for every point, or a mapping from a point's last
  stage size to its own), or none."""
  path, arg = split_config_arg(config_flag)
  module = load_module(path)
  sizes = module.get_ensemble_sizes(arg) if hasattr(module, "get_ensemble_sizes") else ()
  if isinstance(sizes, Mapping):
    return {int(k): tuple(int(s) for s in v) for k, v in sizes.items()}
  return tuple(int(s) for s in sizes or ())


def config_finetune(config_flag: str) -> dict[str, Any] | None:
  """FixRes's fine-tune a sweep reports: its config file's `get_finetune(arg)` (`sizes`,
  a tuple or a mapping by training size; `epochs`; `lr`), or None; `ValueError` for a
  spec that cannot work."""
  path, arg = split_config_arg(config_flag)
  module = load_module(path)
  spec = module.get_finetune(arg) if hasattr(module, "get_finetune") else None
  if spec is None:
    return None
  missing = {"sizes", "epochs", "lr"} - set(spec)
  if missing:
    raise ValueError(f"get_finetune must give 'sizes', 'epochs' and 'lr'; missing {sorted(missing)}.")
  if not float(spec["epochs"]) > 0 or not float(spec["lr"]) > 0:
    raise ValueError(f"get_finetune's epochs and lr must be positive, got {spec['epochs']} and {spec['lr']}.")
  return dict(spec)


def run_sweep(config_flag: str, workdir: str, *, common: Mapping[str, Any] | None = None,
              workers: int = 1, tune_only: bool = False, tuning_grid: Sequence[Any] | None = None,
              **options):
  """Runs every unfinished point, `workers` at a time in their own processes (1: one
  after another in this one), then aggregates. Returns the aggregated rows. With
  `tune_only`, only the tuning grid (`tuning_grid`, if given, instead of the config's:
  to check other values in another workdir): it writes the choice and `DIR/tuning.csv`
  and returns no rows.

  `options` go to `summarize_point`: `num_shift_images`, `max_shift`, `ensemble_sizes`
  (default: the config file's `get_ensemble_sizes(arg)`), `bn_images` (the scale
  controls' batch-norm recalibration; 0: no control columns), `finetune` (default: the
  config file's `get_finetune(arg)`). Tuning runs are summarised only for their metric."""
  workdir = epath.Path(workdir)
  options.setdefault("ensemble_sizes", config_ensemble_sizes(config_flag))
  options.setdefault("finetune", config_finetune(config_flag))
  _check_tuning_grid(workdir, tuning_grid, tune_only)
  tuning = tuning_points(config_flag, common, tuning_grid)
  if tuning:
    print(f"Tuning {tuning_spec(config_flag)['field']} on the validation slice: {len(tuning)} runs.")
    _run_points([(n, o, c) for _, _, n, o, c in tuning], workdir / TUNING_DIR,
                {**options, "measures": False}, workers)
    choice = choose(config_flag, workdir, common, tuning_grid)
    print(f"Chosen by validation {choice['metric']}: " + ", ".join(
        f"{r['arm']}: {choice['values'][r['key']]}" for r in {r["key"]: r for r in choice["grid"]}.values()))
    if tune_only:
      sweep_report.write_tuning(workdir, choice)
      return []
  elif tune_only:
    raise _nothing_to_tune(config_flag)
  _, points = expand(config_flag, common, choice=read_choice(workdir) if tuning else None)
  _run_points(points, workdir, options, workers)
  return aggregate(config_flag, str(workdir), common=common, **options)


def _nothing_to_tune(config_flag: str) -> ValueError:
  return ValueError(f"{config_flag} defines no tuning (get_tuning); --tune_only has nothing to run.")


def _check_tuning_grid(workdir, tuning_grid, tune_only: bool) -> None:
  """`ValueError` where another grid cannot be checked: without `tune_only` (a sweep's
  points are chosen on the config's own grid, which its results report), or in a workdir
  whose choice was made on another grid (that sweep's choice would be overwritten)."""
  if not tuning_grid:
    return
  if not tune_only:
    raise ValueError("--tuning_grid needs --tune_only: the sweep's points are chosen on the "
                     "config's own grid, which its results report; check other values in "
                     "another --workdir with --tune_only.")
  stored = read_choice(workdir)
  if stored and {r["value"] for r in stored["grid"]} != set(tuning_grid):
    raise ValueError(f"{workdir} already holds a tuning choice made on another grid; check "
                     "--tuning_grid in another --workdir, so that sweep's choice stays its own.")


class Stopped(Exception):
  """A signal stopped the sweep: the point(s) it stopped were checkpointed (rerun to resume)."""

  def __init__(self, signal_name: str, names: Sequence[str]):
    where = f"{', '.join(names)} checkpointed" if names else "before its next point"
    super().__init__(f"Sweep stopped by {signal_name} ({where}); run the same command again to "
                     "resume.")
    self.signal_name = signal_name


def _run_points(points, workdir: epath.Path, options, workers: int = 1) -> None:
  """Trains and summarises every unfinished point into `workdir/<name>`, `workers` points
  at a time (`_run_parallel`). A point summarised to its last step with these `options`
  is finished too, without its checkpoints (copied from where it ran). A finished point
  trained under another config (the sweep file or the tuning choice changed since) stops
  the sweep before anything trains: its results would be reported as the new config's.
  SIGTERM or SIGINT checkpoints the running points and raises `Stopped`: no other point
  starts."""
  done = {name for name, _, config in points
          if finished(workdir / name, config) or summarized(workdir / name, config, options)}
  stale = {}
  for name, _, config in points:
    differences = trained_otherwise(workdir / name, config) if name in done else {}
    if differences:
      stale[name] = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in differences.items())
  if stale:
    listed = ", ".join(f"{name} ({details})" for name, details in stale.items())
    raise cli.Error(
        f"{len(stale)} finished point(s) in {workdir} were trained under another config than the "
        f"sweep now gives them: {listed}; the sweep file or the tuning choice changed since. "
        "Move those folders aside to rerun them, or restore the sweep file.")
  for name in done:
    print(f"[{name}] finished already; skipped.")
  todo = [(name, overrides, config) for name, overrides, config in points if name not in done]
  if workers > 1 and len(todo) > 1:
    _run_parallel(todo, workdir, options, workers)
    return
  for name, overrides, config in todo:
    stopped_by = _run_point(name, overrides, config, str(workdir / name), options)
    if stopped_by:
      raise Stopped(stopped_by, [name])


_STOPPING = None  # In a worker process: the sweep's "stop" event.
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _run_point(name: str, overrides, config, point_dir: str, options) -> str | None:
  """Trains one point (resuming it) and writes its summary with the training wall time,
  over every attempt that a signal stopped (`sweep_report.WALL_FILE`; a killed attempt's
  time is lost); the signal's name, and no summary, if a signal stopped it, training or
  measuring (`_summarize`). In a worker of a sweep that is stopping, nothing (the point
  is left as it is)."""
  if _STOPPING is not None and _STOPPING.is_set():
    return None
  point_dir = epath.Path(point_dir)
  resuming = bool(run_lib.checkpoint_steps(point_dir))
  print(f"[{name}] {'resuming' if resuming else 'starting'}.", flush=True)
  earlier = (sweep_report.trained_seconds(point_dir) if resuming else None) or 0.0
  start = time.perf_counter()
  try:
    result = train.train_and_evaluate(config, str(point_dir))
  except train.NonFiniteLossError as e:
    print(f"[{name}] stopped: {e} It is left out of the results; set skip_nonfinite=True to keep it.")
    return None
  wall = earlier + time.perf_counter() - start
  point_dir.mkdir(parents=True, exist_ok=True)
  (point_dir / sweep_report.WALL_FILE).write_text(json.dumps({"wall_seconds": wall}) + "\n")
  if result.interrupted:
    return result.interrupted
  return _summarize(name, overrides, config, point_dir, wall, options)


class _SignalWhileMeasuring(Exception):
  pass


def _summarize(name: str, overrides, config, point_dir: epath.Path, wall: float,
               options) -> str | None:
  """`summarize_point` for a point trained to its end; SIGTERM or SIGINT stops the
  measures at once (a worker ignores signals outside training, and would measure on)
  and returns the signal's name: the point stays finished, unmeasured, and the sweep's
  aggregation measures it when the same command runs again. Off the main thread (where
  no handler can be set) it measures to the end."""

  def stop(signum, frame):
    del frame
    raise _SignalWhileMeasuring(signal.Signals(signum).name)

  main_thread = threading.current_thread() is threading.main_thread()
  previous = {s: signal.signal(s, stop) for s in _SIGNALS} if main_thread else {}
  try:
    summarize_point(point_dir, name, overrides, config, wall_seconds=wall, **options)
  except _SignalWhileMeasuring as e:
    print(f"[{name}] {e} while measuring: trained to its end; measured when the sweep runs again.",
          flush=True)
    return str(e)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  return None


def _worker_init(stopping) -> None:
  """A worker process parses no command line: absl's flags are marked parsed for the
  libraries that read them (absl logging, Grain). `stopping` is set when the sweep stops."""
  global _STOPPING
  _STOPPING = stopping
  flags.FLAGS.mark_as_parsed()


def _run_parallel(points, workdir: epath.Path, options, workers: int) -> None:
  """`_run_point` for every point in a pool of `workers` processes (spawned: JAX does not
  survive a fork), each keeping its compiled evaluation programs from point to point.
  Every built-in dataset the points read is prepared here first (two workers preparing
  one would collide). On a GPU the processes share the accelerator: unless set,
  `XLA_PYTHON_CLIENT_PREALLOCATE=false` keeps each to the memory it uses.

  Signals go through this process: the workers start with SIGTERM and SIGINT ignored
  (a worker still importing would die of one, and a terminal's SIGINT reaches the
  whole group), training points take them as a request to checkpoint, and SIGTERM or
  SIGINT here starts no further point and passes SIGTERM on to the workers until they
  return. The first error other than a non-finite loss stops the sweep once the
  running points end; a worker that dies (SIGKILL, out of memory) stops it with
  `cli.Error`."""
  pipeline.prepare_builtins([c.data for _, _, c in points])
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # Inherited by the workers.
  context = multiprocessing.get_context("spawn")
  stopping = context.Event()
  main_thread = threading.current_thread() is threading.main_thread()
  previous = {s: signal.signal(s, signal.SIG_IGN) for s in _SIGNALS} if main_thread else {}
  pool = concurrent.futures.ProcessPoolExecutor(
      max_workers=min(workers, len(points)), mp_context=context, initializer=_worker_init,
      initargs=(stopping,))
  received, futures = [], {}

  def stop(signum, frame):
    del frame
    received.append(signal.Signals(signum).name)
    stopping.set()

  try:
    futures = {pool.submit(_run_point, name, overrides, config, str(workdir / name), options): name
               for name, overrides, config in points}  # Spawns the workers, signals ignored.
    if main_thread:
      for s in _SIGNALS:
        signal.signal(s, stop)
    stopped, pending = [], set(futures)
    while pending:
      done, pending = concurrent.futures.wait(pending, timeout=1.0,
                                              return_when=concurrent.futures.FIRST_COMPLETED)
      results = [(f.result(), futures[f]) for f in done if not f.cancelled()]
      stopped += [(signal_name, name) for signal_name, name in results if signal_name]
      if received:  # Again every second: a worker may have been between points.
        for future in pending:
          future.cancel()
        _sigterm(_workers(pool))
  except concurrent.futures.process.BrokenProcessPool as e:
    stopping.set()
    _stop_workers(_workers(pool))
    raise cli.Error(f"A worker process of the sweep in {workdir} died (killed, or out of memory); "
                    "run the same command again to resume its points.") from e
  finally:
    stopping.set()
    for future in futures:
      future.cancel()
    pool.shutdown(wait=True)
    for s, handler in previous.items():
      signal.signal(s, handler)
  if stopped or received:
    raise Stopped(received[0] if received else stopped[0][0], [name for _, name in stopped])


def _workers(pool) -> list:
  """The worker processes of a `ProcessPoolExecutor`."""
  return list(getattr(pool, "_processes", {}).values())


def _sigterm(processes) -> bool:
  """SIGTERM to each live process of `processes`; whether any was alive (one that exits
  between the check and the signal is not)."""
  alive = False
  for process in processes:
    if process.is_alive():
      try:
        os.kill(process.pid, signal.SIGTERM)
        alive = True
      except ProcessLookupError:
        pass
  return alive


def _stop_workers(processes) -> None:
  """SIGTERM to every live worker once a second until none is left: the pool's own
  SIGTERM reaches a worker still setting up its point while it ignores the signal (its
  handler comes with the training loop), and that worker would train its whole point."""
  while _sigterm(processes):
    time.sleep(1.0)


def define_flags(fv: flags.FlagValues) -> None:
  """The command's flags (`--config` is a sweep file's path, not a loaded config)."""
  define = {"flag_values": fv}
  flags.DEFINE_string("config", None, "Config file with get_sweep, e.g. "
                      "configs/antialias.py[:smoke].", required=True, **define)
  flags.DEFINE_string("workdir", None, "Sweep directory: one folder per point, results.* at the "
                      "top.", required=True, **define)
  flags.DEFINE_bool("print_commands", False, "Print one `progressive train` command per point.",
                    **define)
  flags.DEFINE_bool("aggregate_only", False, "Only aggregate what has finished.", **define)
  flags.DEFINE_multi_string("set", [], "field=value applied to every point, e.g. "
                            "data.data_dir=/data.", **define)
  flags.DEFINE_integer("shift_images", 0, "Test images for the shift measures (0: every one).",
                       **define)
  flags.DEFINE_integer("max_shift", 4, "Largest shift in pixels for the shift measures.",
                       **define)
  flags.DEFINE_list("ensemble_sizes", None, "Sizes of the multi-size test-time ensemble "
                    "(default: the config file's get_ensemble_sizes(arg); empty: none).",
                    **define)
  flags.DEFINE_bool("tune_only", False, "Only the tuning grid: write DIR/tuning.csv and the "
                    "choice, train no point (e.g. to check a grid before the seeds).", **define)
  flags.DEFINE_list("tuning_grid", None, "With --tune_only: these values instead of the config's "
                    "tuning grid, e.g. 0.05,0.1 (to check below or above it).", **define)
  flags.DEFINE_integer("workers", 1, "Points trained at a time, each in its own process (a GPU "
                       "host's cores; small models leave an accelerator mostly idle).", **define)
  flags.DEFINE_integer("bn_images", 1024, "Training images for the scale controls' columns "
                       "(acc_bn@S, acc_canvas@S, acc_canvas_bn@S; 0: none).", **define)


def _run(fv: flags.FlagValues) -> int | None:
  """Prints the commands, aggregates, or runs every unfinished point and aggregates; 128
  + the signal's number if a signal stopped the sweep (the running points checkpointed)."""
  try:  # A bad sweep file, --set or --ensemble_sizes fails here, before any point runs.
    common = parse_overrides(fv.set)
    expand(fv.config, common)
    spec = tuning_spec(fv.config)  # Bad specs fail before training.
    config_finetune(fv.config)
    if fv.tune_only and spec is None:
      raise _nothing_to_tune(fv.config)
    grid = [parse_overrides([f"value={v}"])["value"] for v in fv.tuning_grid or ()]
    _check_tuning_grid(fv.workdir, grid, fv.tune_only)
    kwargs = dict(common=common, num_shift_images=fv.shift_images, max_shift=fv.max_shift,
                  bn_images=fv.bn_images)
    if fv.ensemble_sizes is not None:
      kwargs["ensemble_sizes"] = tuple(int(s) for s in fv.ensemble_sizes)
    if fv.workers < 1:
      raise ValueError(f"--workers must be at least 1, got {fv.workers}.")
  except (OSError, KeyError, ValueError) as e:
    raise cli.Error(e.args[0] if isinstance(e, KeyError) else e) from e
  if fv.print_commands:
    print("\n".join(commands(fv.config, fv.workdir, common)))
  elif fv.aggregate_only:
    aggregate(fv.config, fv.workdir, **kwargs)
  else:
    try:
      run_sweep(fv.config, fv.workdir, workers=fv.workers, tune_only=fv.tune_only,
                tuning_grid=grid, **kwargs)
    except Stopped as e:
      print(e)
      return 128 + signal.Signals[e.signal_name].value
  return None


COMMAND = cli.Command("sweep", __doc__, define_flags, _run)


def main(argv=None):
  cli.run(COMMAND, argv)


if __name__ == "__main__":
  main()
