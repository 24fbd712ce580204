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

`with_seeds(points, seeds)` repeats every point per seed; aggregation then adds the mean
and standard deviation over seeds. A config file may also define
`get_ensemble_sizes(arg)`: each point then reports the multi-size test-time ensemble
over those sizes (overridden by `--ensemble_sizes`).
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


def with_seeds(points: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> list[dict[str, Any]]:
  """Every point once per seed: `seed` set and `_seed<N>` added to its name. Aggregation
  then also reports the mean and standard deviation over the seeds of each point."""
  out = []
  for point in points:
    for seed in seeds:
      named = {"name": f"{point['name']}_seed{seed}"} if "name" in point else {}
      out.append({**point, "seed": seed, **named})
  return out


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


def shift_summary(run, examples, *, num_images: int, max_shift: int) -> dict:
  """Jaggedness and consistency of a finished run at its last stage's size, on the first
  `num_images` of `examples`."""
  from progressive.analysis import shift  # pylint: disable=import-outside-toplevel

  size = int(run.config.stages[-1]["size"])
  examples = {k: v[:num_images] for k, v in examples.items()}
  predict = run.predictor(size)
  args = dict(size=size, max_shift=max_shift, mode=run_lib.shift_mode(run.config.data))
  sweep = shift.shift_sweep(predict, examples, run.info, **args)
  cons = shift.shift_consistency(predict, examples, run.info, **args)
  return {
      "shift_size": size,
      "jaggedness": sweep["mean_changes"],
      "frac_changed": sweep["frac_changed"],
      "consistency": cons["consistency"],
      "jaggedness_family": {k: v["mean_changes"] for k, v in sweep["family"].items()},
      "consistency_family": cons["family"],
  }


def ensemble_summary(run, examples, sizes: Sequence[int]) -> dict:
  """The multi-size test-time ensemble over `sizes` on `examples` (the whole eval split):
  its accuracy, overall and per family, and its gain over the best of those sizes alone."""
  from progressive.analysis import ensemble  # pylint: disable=import-outside-toplevel

  result = ensemble.size_ensemble(run, examples["image"], examples["label"], sizes)
  return {
      "ensemble_sizes": result["sizes"],
      "ensemble": {"accuracy": result["ensemble"]["all"],
                   **{f"accuracy_{k}": v for k, v in result["ensemble"]["family"].items()}},
      "ensemble_gain": result["gain_over_best"],
  }


def budget_summary(rows: Sequence[Mapping[str, Any]], plan: Sequence[schedules.Stage]) -> dict:
  """What training cost: images seen, and training FLOPs (each stage's steps times XLA's
  count for its compiled step, forward and backward, over all devices; None where a
  stage's count is missing)."""
  flops = {(r["size"], r["batch_size"]): r.get("flops") for r in rows
           if r["event"] == "compile" and r["kind"] == "train"}
  per_stage = [flops.get((s.size, s.batch_size)) for s in plan]
  return {
      "images_seen": sum(s.num_steps * s.batch_size for s in plan),
      "train_gflops": None if None in per_stage else
      sum(s.num_steps * f for s, f in zip(plan, per_stage)) / 1e9,
  }


def _options(num_shift_images: int, max_shift: int, ensemble_sizes: Sequence[int]) -> dict:
  """What a summary measured with: a summary made with other options is remade."""
  return {"num_shift_images": int(num_shift_images), "max_shift": int(max_shift),
          "ensemble_sizes": [int(s) for s in ensemble_sizes]}


def summarize_point(workdir: epath.Path, name: str, overrides, config, *, wall_seconds=None,
                    num_shift_images: int = 64, max_shift: int = 4,
                    ensemble_sizes: Sequence[int] = ()) -> dict:
  """Writes `workdir/sweep_point.json`: the overrides, final eval rows, the best test size,
  the training budget, shift measures, the multi-size ensemble over `ensemble_sizes` (if
  any; it reads the whole eval split into memory) and (when run by the sweep) the wall
  time."""
  rows = read_rows(workdir / "metrics.jsonl")
  last = max(r["step"] for r in rows if r["event"] == "eval")
  final = {r["size"]: r for r in rows if r["event"] == "eval" and r["step"] == last}
  run = run_lib.load_run(workdir)
  examples = run_lib.load_examples(
      config.data, config.data.eval_split, None if ensemble_sizes else num_shift_images)
  summary = {
      "name": name,
      "options": _options(num_shift_images, max_shift, ensemble_sizes),
      "overrides": {k: v for k, v in overrides.items() if k != "name"},
      "step": last,
      "eval": {str(size): {k: v for k, v in r.items() if k.startswith("accuracy")}
               for size, r in sorted(final.items())},
      "best_size": max(sorted(final), key=lambda size: final[size]["accuracy"]),
      **budget_summary(rows, run.stages()),
      "wall_seconds": wall_seconds,
      **shift_summary(run, examples, num_images=num_shift_images, max_shift=max_shift),
      **(ensemble_summary(run, examples, ensemble_sizes) if ensemble_sizes else {}),
  }
  (workdir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1, default=str) + "\n")
  return summary


def config_ensemble_sizes(config_flag: str) -> tuple[int, ...]:
  """The sizes of the multi-size ensemble a sweep reports: its config file's
  `get_ensemble_sizes(arg)`, or none."""
  path, arg = split_config_arg(config_flag)
  module = load_module(path)
  return tuple(module.get_ensemble_sizes(arg)) if hasattr(module, "get_ensemble_sizes") else ()


def run_sweep(config_flag: str, workdir: str, *, common: Mapping[str, Any] | None = None,
              **options):
  """Runs every unfinished point, then aggregates. Returns the aggregated rows.

  `options` go to `summarize_point`: `num_shift_images`, `max_shift`, `ensemble_sizes`
  (default: the config file's `get_ensemble_sizes(arg)`)."""
  workdir = epath.Path(workdir)
  options.setdefault("ensemble_sizes", config_ensemble_sizes(config_flag))
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
      summarize_point(point_dir, name, overrides, config, wall_seconds=wall, **options)
  return aggregate(config_flag, str(workdir), common=common, **options)


def _read_summary(point_dir: epath.Path) -> dict | None:
  path = point_dir / SUMMARY_FILE
  return json.loads(path.read_text()) if path.exists() else None


SUMMARY_COLUMNS = ("best_size", "acc_ens", "acc_ens_shape", "acc_ens_texture", "ens_gain",
                   "jaggedness", "consistency", "images_seen", "train_gflops", "wall_seconds")


def _columns(summaries: Sequence[Mapping[str, Any]], rows) -> list[str]:
  keys = list(dict.fromkeys(k for s in summaries for k in s["overrides"]))
  sizes = sorted({int(size) for s in summaries for size in s["eval"]})
  groups = list(dict.fromkeys(g for s in summaries for r in s["eval"].values() for g in r))
  acc = [f"{g.replace('accuracy', 'acc')}@{size}" for size in sizes for g in groups]
  present = [c for c in SUMMARY_COLUMNS if any(r.get(c) is not None for r in rows)]
  return ["name", *keys, *acc, *present]


def _row(summary: Mapping[str, Any]) -> dict[str, Any]:
  row = {"name": summary["name"], **summary["overrides"]}
  for size, groups in summary["eval"].items():
    for group, value in groups.items():
      row[f"{group.replace('accuracy', 'acc')}@{int(size)}"] = value
  for group, value in (summary.get("ensemble") or {}).items():
    row[group.replace("accuracy", "acc_ens")] = value
  row["ens_gain"] = summary.get("ensemble_gain")
  for key in ("best_size", "jaggedness", "consistency", "images_seen", "train_gflops",
              "wall_seconds"):
    row[key] = summary.get(key)
  return row


def _without_seed(name: str) -> str:
  """A point's name without the `_seed<N>` (or `_seed=<N>`) that `with_seeds` gave it."""
  return re.sub(r"_?seed=?\d+$", "", name) or name


def _seed_groups(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
  """Rows of points that differ only by `seed`, under the name without its `_seed<N>`."""
  groups = {}
  for row in rows:
    if "seed" in row:
      groups.setdefault(_without_seed(row["name"]), []).append(row)
  return groups


def _averaged(column: str) -> bool:
  """Whether a column is a measurement averaged over seeds (not a setting or a label)."""
  return column.startswith("acc") or column in (
      "ens_gain", "jaggedness", "consistency", "wall_seconds")


def _mean_rows(rows, columns) -> list[dict[str, Any]]:
  """Per seed group: `mean ± std` (over seeds, n - 1) of every measurement; the other
  columns once where the group agrees, else each seed's value."""
  out = []
  for name, members in _seed_groups(rows).items():
    row = {"name": name, "seeds": " ".join(str(m["seed"]) for m in members)}
    for column in columns:
      if column in ("name", "seed"):
        continue
      values = [m.get(column) for m in members]
      if _averaged(column) and all(isinstance(v, (int, float)) for v in values):
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
        row[column] = f"{_cell(float(mean))} ± {_cell(var ** 0.5)}"
      elif all(v == values[0] for v in values):
        row[column] = values[0]
      else:
        row[column] = " ".join(_cell(v) for v in values)
    out.append(row)
  return out


def _cell(value) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
  if isinstance(value, (list, tuple)):
    return " ".join(_cell(v) if not isinstance(v, Mapping) else
                    "/".join(str(x) for x in v.values()) for v in value)
  return str(value)


def _markdown(columns, rows) -> list[str]:
  return [
      "| " + " | ".join(columns) + " |",
      "| " + " | ".join("---" for _ in columns) + " |",
      *("| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows),
  ]


def _write_csv(path: epath.Path, columns, rows) -> None:
  table = io.StringIO()
  writer = csv.DictWriter(table, fieldnames=columns)
  writer.writeheader()
  for row in rows:
    writer.writerow({k: _cell(row.get(k)) for k in columns})
  path.write_text(table.getvalue())


def aggregate(config_flag: str, workdir: str, *, common: Mapping[str, Any] | None = None,
              num_shift_images: int = 64, max_shift: int = 4,
              ensemble_sizes: Sequence[int] | None = None):
  """Tables and a plot over every finished point (summarising those run elsewhere).

  Writes `results.csv` and `results.md` (one row per point; with several seeds also
  `results_mean.csv` and a second table of means and standard deviations over the seeds)
  and `results.png`. Returns the rows, one per finished point."""
  workdir = epath.Path(workdir)
  if ensemble_sizes is None:
    ensemble_sizes = config_ensemble_sizes(config_flag)
  _, points = expand(config_flag, common)
  options = _options(num_shift_images, max_shift, ensemble_sizes)
  summaries, missing = [], []
  for name, overrides, config in points:
    point_dir = workdir / name
    summary = _read_summary(point_dir)
    # Run elsewhere, or summarised with other measures: (re)summarised here.
    if (summary is None or summary.get("options") != options) and finished(point_dir, config):
      summary = summarize_point(
          point_dir, name, overrides, config, num_shift_images=num_shift_images,
          max_shift=max_shift, ensemble_sizes=ensemble_sizes,
          wall_seconds=(summary or {}).get("wall_seconds"))
    (summaries if summary else missing).append(summary or name)
  if not summaries:
    print(f"No finished point in {workdir} yet.")
    return []
  rows = [_row(s) for s in summaries]
  columns = _columns(summaries, rows)
  _write_csv(workdir / "results.csv", columns, rows)
  notes = (
      "acc@S: test accuracy at input size S (acc_shape/acc_texture: per class family); "
      "best_size: the test size of the highest accuracy; "
      + (f"acc_ens: the softmax averaged over sizes {', '.join(map(str, ensemble_sizes))} on the "
         "whole eval split, ens_gain: acc_ens minus the best of those sizes alone; "
         if ensemble_sizes else "")
      + f"jaggedness and consistency at the last stage's size over {num_shift_images} test "
      f"images, shifts up to {max_shift} px; images_seen"
      + (" and train_gflops (XLA's count of each stage's training step, times its steps)"
         if "train_gflops" in columns else "")
      + ": the training budget."
  )
  lines = [
      f"# Sweep `{config_flag}`", "",
      f"{len(summaries)} of {len(points)} points finished"
      + (f"; missing: {', '.join(missing)}." if missing else "."),
      "", notes, "", *_markdown(columns, rows),
  ]
  means = _mean_rows(rows, columns)
  if any(len(m["seeds"].split()) > 1 for m in means):
    mean_columns = ["name", "seeds", *(c for c in columns if c not in ("name", "seed"))]
    _write_csv(workdir / "results_mean.csv", mean_columns, means)
    lines += ["", "Mean ± standard deviation over seeds:", "", *_markdown(mean_columns, means)]
  (workdir / "results.md").write_text("\n".join(lines) + "\n")
  _plot(summaries, workdir / "results.png")
  print("\n".join(lines))
  return rows


def _plot(summaries, path: epath.Path) -> None:
  """Accuracy against test size, overall and per family: one line per point, or per seed
  group (the mean, with the spread over seeds shaded)."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  lines = {}
  for s in summaries:
    lines.setdefault(_without_seed(s["name"]) if "seed" in s["overrides"] else s["name"], []).append(s)
  groups = list(dict.fromkeys(g for s in summaries for r in s["eval"].values() for g in r))
  fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.6), squeeze=False)
  for ax, group in zip(axes[0], groups):
    for name, members in lines.items():
      sizes = sorted({int(k) for m in members for k in m["eval"]})
      values = np.array([[m["eval"].get(str(k), {}).get(group, np.nan) for k in sizes]
                         for m in members], float)
      mean = np.nanmean(values, axis=0)
      label = name if len(members) == 1 else f"{name} (mean of {len(members)})"
      ax.plot(sizes, mean, marker="o", label=label)
      if len(members) > 1:
        ax.fill_between(sizes, np.nanmin(values, 0), np.nanmax(values, 0), alpha=0.2)
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
  if FLAGS.ensemble_sizes is not None:
    kwargs["ensemble_sizes"] = tuple(int(s) for s in FLAGS.ensemble_sizes)
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
  flags.DEFINE_list("ensemble_sizes", None, "Sizes of the multi-size test-time ensemble "
                    "(default: the config file's get_ensemble_sizes(arg); empty: none).")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
