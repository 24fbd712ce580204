r"""Sweeps: expand a config's `get_sweep(arg)` into runs, run or print them, aggregate.

  python -m progressive.sweep --config=configs/antialias.py:smoke --workdir=/tmp/antialias
  python -m progressive.sweep --config=configs/antialias.py --workdir=DIR --print_commands
  python -m progressive.sweep --config=configs/antialias.py --workdir=DIR --aggregate_only
  python -m progressive.sweep --config=configs/antialias.py --workdir=DIR --set=data.data_dir=/data

A config file that sweeps defines `get_sweep(arg)` beside `get_config(arg)`: a list of
override dicts, one per point, whose keys are dotted config fields
(`{"model.downsample": "blur", "model.blur_size": 3}`) and an optional `"name"`. Every
point runs into `DIR/<name>/`; a finished point is skipped and a partial one resumes
(`progressive.train` resumes from its checkpoints). Aggregation reads whatever has
finished, so points run elsewhere (`--print_commands` for a cluster) count too, and
writes `DIR/results.csv`, `DIR/results.md` and `DIR/results.png`.
"""

import ast
import csv
import importlib.util
import io
import itertools
import json
import re
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
from absl import app, flags, logging
from etils import epath

from progressive import schedules, train
from progressive.analysis import run as run_lib
from progressive.data import pipeline
from progressive.metrics import read_rows

SUMMARY_FILE = "sweep_point.json"


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


def load_module(path: str):
  """Imports a config file by path (its folder's parent on `sys.path`, like `configs.X`)."""
  path = epath.Path(path).resolve()
  root = str(path.parent.parent)
  if root not in sys.path:
    sys.path.insert(0, root)
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
    config_flag: str, common: Mapping[str, Any] | None = None
) -> tuple[ml_collections.ConfigDict, list[tuple[str, dict, Any]]]:
  """The base config and `(name, overrides, config)` for every point of the sweep;
  `common` overrides (e.g. `data.data_dir`) apply to every point first."""
  path, arg = split_config_arg(config_flag)
  module = load_module(path)
  if not hasattr(module, "get_sweep"):
    raise ValueError(f"{path} defines no get_sweep(arg); it is a single run, use progressive.main.")
  base = apply_overrides(module.get_config(arg), common or {})
  points = []
  for overrides in module.get_sweep(arg):
    name = point_name(overrides)
    if any(name == p[0] for p in points):
      raise ValueError(f"Two sweep points share the name {name!r}; give them a 'name'.")
    points.append((name, dict(overrides), apply_overrides(base, overrides)))
  return base, points


def _flag_value(value) -> str:
  if isinstance(value, (list, tuple)):
    return repr(tuple(value))
  return str(value)


def commands(config_flag: str, workdir: str, common: Mapping[str, Any] | None = None) -> list[str]:
  """One `python -m progressive.main ...` command per point."""
  common = dict(common or {})
  _, points = expand(config_flag, common)
  lines = []
  for name, overrides, _ in points:
    args = ["python", "-m", "progressive.main", f"--config={config_flag}",
            f"--workdir={epath.Path(workdir) / name}"]
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


def shift_summary(workdir: epath.Path, config, *, num_images: int, max_shift: int) -> dict:
  """Jaggedness and consistency of a finished run at its last stage's size."""
  from progressive.analysis import shift  # pylint: disable=import-outside-toplevel

  run = run_lib.load_run(workdir)
  size = int(config.stages[-1]["size"])
  examples = run_lib.load_examples(config.data, "test", num_images)
  predict = run.predictor(size)
  sweep = shift.shift_sweep(predict, examples, run.info, size=size, max_shift=max_shift)
  cons = shift.shift_consistency(predict, examples, run.info, size=size, max_shift=max_shift)
  return {
      "shift_size": size,
      "jaggedness": sweep["mean_changes"],
      "frac_changed": sweep["frac_changed"],
      "consistency": cons["consistency"],
      "jaggedness_family": {k: v["mean_changes"] for k, v in sweep["family"].items()},
      "consistency_family": cons["family"],
  }


def summarize_point(workdir: epath.Path, name: str, overrides, config, *, wall_seconds=None,
                    num_shift_images: int = 64, max_shift: int = 4) -> dict:
  """Writes `workdir/sweep_point.json`: the overrides, final eval rows, shift measures
  and (when run by the sweep) the wall time."""
  rows = read_rows(workdir / "metrics.jsonl")
  last = max(r["step"] for r in rows if r["event"] == "eval")
  summary = {
      "name": name,
      "overrides": {k: v for k, v in overrides.items() if k != "name"},
      "step": last,
      "eval": {str(r["size"]): {k: v for k, v in r.items() if k.startswith("accuracy")}
               for r in rows if r["event"] == "eval" and r["step"] == last},
      "wall_seconds": wall_seconds,
      **shift_summary(workdir, config, num_images=num_shift_images, max_shift=max_shift),
  }
  (workdir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1, default=str) + "\n")
  return summary


def run_sweep(config_flag: str, workdir: str, *, common: Mapping[str, Any] | None = None,
              num_shift_images: int = 64, max_shift: int = 4):
  """Runs every unfinished point, then aggregates. Returns the aggregated rows."""
  workdir = epath.Path(workdir)
  _, points = expand(config_flag, common)
  for name, overrides, config in points:
    point_dir = workdir / name
    if finished(point_dir, config):
      print(f"[{name}] finished already; skipped.")
    else:
      print(f"[{name}] {'resuming' if run_lib.checkpoint_steps(point_dir) else 'starting'}.")
      start = time.perf_counter()
      try:
        train.train_and_evaluate(config, str(point_dir))
      except train.NonFiniteLossError as e:
        print(f"[{name}] stopped: {e} It is left out of the results; set skip_nonfinite=True to keep it.")
        continue
      previous = _read_summary(point_dir)
      wall = time.perf_counter() - start + ((previous or {}).get("wall_seconds") or 0)
      summarize_point(point_dir, name, overrides, config, wall_seconds=wall,
                      num_shift_images=num_shift_images, max_shift=max_shift)
  return aggregate(config_flag, str(workdir), common=common, num_shift_images=num_shift_images,
                   max_shift=max_shift)


def _read_summary(point_dir: epath.Path) -> dict | None:
  path = point_dir / SUMMARY_FILE
  return json.loads(path.read_text()) if path.exists() else None


def _columns(summaries: Sequence[Mapping[str, Any]]) -> list[str]:
  keys = list(dict.fromkeys(k for s in summaries for k in s["overrides"]))
  sizes = sorted({int(size) for s in summaries for size in s["eval"]})
  groups = list(dict.fromkeys(g for s in summaries for r in s["eval"].values() for g in r))
  acc = [f"{g.replace('accuracy', 'acc')}@{size}" for size in sizes for g in groups]
  return ["name", *keys, *acc, "jaggedness", "consistency", "wall_seconds"]


def _row(summary: Mapping[str, Any]) -> dict[str, Any]:
  row = {"name": summary["name"], **summary["overrides"]}
  for size, groups in summary["eval"].items():
    for group, value in groups.items():
      row[f"{group.replace('accuracy', 'acc')}@{int(size)}"] = value
  row.update(jaggedness=summary["jaggedness"], consistency=summary["consistency"],
             wall_seconds=summary["wall_seconds"])
  return row


def _cell(value) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
  if isinstance(value, (list, tuple)):
    return " ".join(_cell(v) if not isinstance(v, Mapping) else
                    "/".join(str(x) for x in v.values()) for v in value)
  return str(value)


def aggregate(config_flag: str, workdir: str, *, common: Mapping[str, Any] | None = None,
              num_shift_images: int = 64, max_shift: int = 4):
  """Tables and a plot over every finished point (summarising those run elsewhere)."""
  workdir = epath.Path(workdir)
  _, points = expand(config_flag, common)
  summaries, missing = [], []
  for name, overrides, config in points:
    point_dir = workdir / name
    summary = _read_summary(point_dir)
    if summary is None and finished(point_dir, config):
      summary = summarize_point(point_dir, name, overrides, config,
                                num_shift_images=num_shift_images, max_shift=max_shift)
    (summaries if summary else missing).append(summary or name)
  if not summaries:
    print(f"No finished point in {workdir} yet.")
    return []
  columns = _columns(summaries)
  rows = [_row(s) for s in summaries]
  table = io.StringIO()
  writer = csv.DictWriter(table, fieldnames=columns)
  writer.writeheader()
  for row in rows:
    writer.writerow({k: _cell(row.get(k)) for k in columns})
  (workdir / "results.csv").write_text(table.getvalue())
  lines = [
      f"# Sweep `{config_flag}`", "",
      f"{len(summaries)} of {len(points)} points finished"
      + (f"; missing: {', '.join(missing)}." if missing else "."),
      "", "acc@S: test accuracy at input size S (acc_shape/acc_texture: per class family); "
      f"jaggedness and consistency at the last stage's size over {num_shift_images} test "
      f"images, shifts up to {max_shift} px.", "",
      "| " + " | ".join(columns) + " |",
      "| " + " | ".join("---" for _ in columns) + " |",
  ]
  lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
  (workdir / "results.md").write_text("\n".join(lines) + "\n")
  _plot(summaries, workdir / "results.png")
  print("\n".join(lines))
  return rows


def _plot(summaries, path: epath.Path) -> None:
  """Accuracy against test size, one line per point, overall and per family."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  groups = list(dict.fromkeys(g for s in summaries for r in s["eval"].values() for g in r))
  fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.6), squeeze=False)
  for ax, group in zip(axes[0], groups):
    for s in summaries:
      sizes = sorted(int(k) for k in s["eval"])
      ax.plot(sizes, [s["eval"][str(k)].get(group) for k in sizes], marker="o", label=s["name"])
    ax.set(title=group.replace("_", " "), xlabel="test size (px)", ylabel="accuracy", ylim=(0, 1))
    ax.grid(alpha=0.3)
  axes[0][-1].legend(fontsize=7, loc="lower right")
  fig.tight_layout()
  fig.savefig(str(path), dpi=110)
  plt.close(fig)


FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint step at INFO.
  common = parse_overrides(FLAGS.set)
  kwargs = dict(common=common, num_shift_images=FLAGS.shift_images, max_shift=FLAGS.max_shift)
  if FLAGS.print_commands:
    print("\n".join(commands(FLAGS.config, FLAGS.workdir, common)))
  elif FLAGS.aggregate_only:
    aggregate(FLAGS.config, FLAGS.workdir, **kwargs)
  else:
    run_sweep(FLAGS.config, FLAGS.workdir, **kwargs)


if __name__ == "__main__":
  flags.DEFINE_string("config", None, "Config file with get_sweep, e.g. configs/antialias.py[:smoke].")
  flags.DEFINE_string("workdir", None, "Sweep directory: one folder per point, results.* at the top.")
  flags.DEFINE_bool("print_commands", False, "Print one progressive.main command per point.")
  flags.DEFINE_bool("aggregate_only", False, "Only aggregate what has finished.")
  flags.DEFINE_multi_string("set", [], "field=value applied to every point, e.g. data.data_dir=/data.")
  flags.DEFINE_integer("shift_images", 64, "Test images for jaggedness and consistency.")
  flags.DEFINE_integer("max_shift", 4, "Largest shift in pixels for the shift measures.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
