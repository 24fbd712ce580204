"""A sweep's tables from its points' summaries: one row per point, seed groups (points
whose overrides differ only in `seed`) with their means, intervals and comparisons, the
seed ensemble, and the cells as csv, markdown and a plot of accuracy against test size
(or of the sweep's headline measures; claim 6's sweeps also the dead-unit measure over
training, `write_activations_figure`).
"""

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from etils import epath
from matplotlib.figure import Figure

from progressive import errors, statistics
from progressive.analysis import activations, controls, ensemble, plots
from progressive.analysis import run as run_lib
from progressive.data import pipeline
from progressive.sweeps import folder, measure, spec
from progressive.training.activations import is_relu
from progressive.training.metrics import read_rows

# Summary keys of the scale controls and their column prefixes: acc_bn@S, acc_bn_shape@S, ...
CONTROL_COLUMNS = (("eval_bn", "acc_bn"), ("eval_canvas", "acc_canvas"),
                   ("eval_canvas_bn", "acc_canvas_bn"), ("eval_ft", "acc_ft"))
# The ensembles' summary keys and their column prefixes: acc_ens, acc_ens_shape, ...
ENSEMBLE_COLUMNS = (("ensemble", "acc_ens"), ("ensemble_bn", "acc_ens_bn"),
                    ("ensemble_logp_bn", "acc_ens_logp_bn"))
SUMMARY_COLUMNS = ("best_size", "best_size_bn", "ens_gain", "ens_gain_bn", "acc_seed_ens",
                   "ens_vs_seeds", "rf_scale", "jaggedness", "consistency", "shift_images",
                   "shift_period",
                   "jag_period", "pred_change", "prob_change", "cons_period", "act_std",
                   "act_near_zero", "act_near_zero_preact", "skipped_steps", "images_seen",
                   "train_gflops", "train_gflops_xla", "wall_seconds", "device")
# Measurements over overlapping windows of a seed group's networks: not independent
# across seeds, so no Welch test between groups.
WINDOWED = ("acc_seed_ens", "ens_vs_seeds")
# Azulay & Weiss's canvas protocol (`measure.CanvasProtocol`, sweep --canvas_topk): top-k
# jaggedness, fraction changed and accuracy over every position, then the images measured.
AW_PREFIXES = ("aw_jag_top", "aw_changed_top", "aw_acc_top", "aw_images")
UNRECORDED = "unrecorded"  # The device of a point trained outside a sweep that records it.


class MixedDevicesError(errors.Error):
  """A seed group (an arm) whose points trained on more than one kind of device, or a
  point that did: one device kind per arm."""


def summary_group_name(summary: Mapping[str, Any]) -> str:
  """The seed group name (`spec.group_name`) of a summarised point with a seed."""
  return spec.group_name(summary["name"], summary["overrides"]["seed"])


def columns(summaries: Sequence[Mapping[str, Any]], rows) -> list[str]:
  """The columns of results.csv, in order: name, overrides, accuracies by size, the
  controls, then the summary columns present."""
  keys = list(dict.fromkeys(k for s in summaries for k in s["overrides"]))
  sizes = sorted({int(size) for s in summaries for size in s["eval"]})
  groups = list(dict.fromkeys(g for s in summaries for r in s["eval"].values() for g in r))
  # The training loop's own recalibrated accuracy (accuracy_bn*, config.eval_bn_images) is
  # a column of its own where the summary has no eval_bn control to fill acc_bn@S.
  plain = [g for g in groups if not g.startswith("accuracy_bn")]
  acc = [f"{g.replace('accuracy', 'acc')}@{size}" for size in sizes for g in groups]
  controlled = [f"{g.replace('accuracy', prefix)}@{size}" for key, prefix in CONTROL_COLUMNS
                if any(key in s for s in summaries) for size in sizes for g in plain
                if any(str(size) in (s.get(key) or {}) for s in summaries)]
  scales = list(dict.fromkeys(b for s in summaries for b in (s.get("object_scale") or {})))
  controlled += [f"{g.replace('accuracy', 'acc_obj')}@{b}" for b in scales for g in plain]
  controlled += [f"ft_gain@{size}" for size in sizes if any(f"ft_gain@{size}" in r for r in rows)]
  present = [c for c in SUMMARY_COLUMNS if any(r.get(c) is not None for r in rows)]
  canvas = [c for c in dict.fromkeys(k for r in rows for k in r) if c.startswith(AW_PREFIXES)]
  at = present.index("shift_period") if "shift_period" in present else len(present)
  present[at:at] = canvas  # Azulay & Weiss's canvas beside the other shift measures.
  in_rows = list(dict.fromkeys(k for r in rows for k in r))
  ensembles = [c for _, prefix in ENSEMBLE_COLUMNS for c in in_rows
               if _ensemble_prefix(c) == prefix]
  at = next((i for i, c in enumerate(present) if not c.startswith("best_size")), len(present))
  present[at:at] = ensembles  # After best_size, where acc_ens always stood.
  return list(dict.fromkeys(["name", *keys, *acc, *controlled, *present]))


def _ensemble_prefix(column: str) -> str | None:
  """The longest `ENSEMBLE_COLUMNS` prefix `column` is (`acc_ens_bn`) or is a family of
  (`acc_ens_bn_shape`), else None."""
  matches = [p for _, p in ENSEMBLE_COLUMNS if column == p or column.startswith(p + "_")]
  return max(matches, key=len) if matches else None


def point_row(summary: Mapping[str, Any]) -> dict[str, Any]:
  """A point's row of `results.csv` (every column it has) from its summary."""
  row = {"name": summary["name"], **summary["overrides"]}
  for size, groups in summary["eval"].items():
    for group, value in groups.items():
      row[f"{group.replace('accuracy', 'acc')}@{int(size)}"] = value
  for center, groups in (summary.get("object_scale") or {}).items():
    for group, value in groups.items():
      row[f"{group.replace('accuracy', 'acc_obj')}@{center}"] = value
  for key, prefix in CONTROL_COLUMNS:
    for size, groups in (summary.get(key) or {}).items():
      for group, value in groups.items():
        row[f"{group.replace('accuracy', prefix)}@{int(size)}"] = value
  for size, groups in (summary.get("eval_ft") or {}).items():
    recalibrated = (summary.get("eval_bn") or {}).get(size, {}).get("accuracy")
    if recalibrated is not None:  # What the fine-tune adds beyond recomputed statistics.
      row[f"ft_gain@{int(size)}"] = groups["accuracy"] - recalibrated
  for key, prefix in ENSEMBLE_COLUMNS:
    for group, value in (summary.get(key) or {}).items():
      row[group.replace("accuracy", prefix)] = value
  row["ens_gain"] = summary.get("ensemble_gain")
  if summary.get("skipped_steps"):  # Only where a step was skipped: no column of zeros.
    row["skipped_steps"] = summary["skipped_steps"]
  row["ens_gain_bn"] = summary.get("ensemble_gain_bn")
  if summary.get("eval_bn"):
    row["best_size_bn"] = int(max(sorted(summary["eval_bn"], key=int),
                                  key=lambda s: summary["eval_bn"][s]["accuracy"]))
  for key, value in summary.items():
    if key.startswith(AW_PREFIXES) and not key.endswith("_ci"):
      row[key] = value
  for key in ("best_size", "rf_scale", "jaggedness", "consistency", "shift_images",
              "shift_period", "jag_period",
              "pred_change", "prob_change", "cons_period", "act_std", "act_near_zero",
              "act_near_zero_preact", "images_seen", "train_gflops", "train_gflops_xla",
              "wall_seconds", "device"):
    row[key] = summary.get(key)
  if "train_gflops_xla" not in summary:  # Summarised before the architecture's count:
    row["train_gflops"], row["train_gflops_xla"] = None, summary.get("train_gflops")  # XLA's.
  if "act_near_zero_preact" not in summary:  # Summarised before ReLU outputs were recorded:
    row["act_near_zero"] = None  # its act_near_zero was fastai's, at the last record only.
  return row


def check_devices(summaries: Sequence[Mapping[str, Any]]) -> None:
  """`MixedDevicesError`, one line, for the first point that trained on several device
  kinds (its `device` joins them with " + ") or seed group whose points trained on
  different kinds, naming it and the kinds with their seeds. A point without a recorded
  device (`UNRECORDED`) is left out of the check."""
  groups, names = {}, {}
  for s in summaries:
    device = s.get("device")
    if device and " + " in device:
      raise MixedDevicesError(
          f"Point {s['name']} trained on several device kinds ({device}): one device kind per "
          "arm; move its folder aside and rerun it on one kind.")
    key = spec.seed_group(s["overrides"])
    if key is not None and device:
      names.setdefault(key, summary_group_name(s))
      groups.setdefault(key, {}).setdefault(device, []).append(s["overrides"]["seed"])
  for key, kinds in groups.items():
    if len(kinds) > 1:
      listed = "; ".join(f"{kind} (seed{'s' if len(seeds) > 1 else ''} "
                         f"{', '.join(map(str, sorted(seeds)))})" for kind, seeds in kinds.items())
      raise MixedDevicesError(
          f"Seed group {names[key]} mixes device kinds: {listed}. One device kind per arm: move "
          "the other kind's points aside and rerun them on one kind (or aggregate them in a "
          "sweep folder of their own).")


def group_devices(summaries: Sequence[Mapping[str, Any]]) -> dict[str, str]:
  """`{seed group name: the device its points trained on}` (`check_devices` keeps it to
  one kind), `UNRECORDED` where no point of the group recorded one."""
  out = {}
  for s in summaries:
    if spec.seed_group(s["overrides"]) is None:
      continue
    name = summary_group_name(s)
    if s.get("device") or name not in out:
      out[name] = s.get("device") or UNRECORDED
  return out


def devices_text(devices: Sequence[str | None]) -> str | None:
  """The device kinds of several seed groups, once each, joined by " / " (None for none)."""
  kinds = list(dict.fromkeys(d or UNRECORDED for d in devices))
  return " / ".join(kinds) if kinds else None


def add_seed_ensembles(workdir: epath.Path, summaries, rows) -> None:
  """Per seed group with a multi-size ensemble of k sizes: each point's `acc_seed_ens`,
  the softmax at the training size averaged over k networks (this seed and the next k - 1
  of its group, in seed order, wrapping around), and `ens_vs_seeds`: its own size
  ensemble with recalibrated statistics (`acc_ens_bn`, else `acc_ens`) minus that seed
  ensemble, both costing k forward passes. The windows share networks, so the spread
  over a group's points understates a seed ensemble's own."""
  groups = {}
  for s, row in zip(summaries, rows):
    key = spec.seed_group(s["overrides"])
    path = epath.Path(workdir) / s["name"] / measure.LOGITS_FILE
    if key is not None and s.get("ensemble_sizes") and path.exists():
      groups.setdefault(key, []).append((s["overrides"]["seed"], row, path))
  for members in groups.values():
    members.sort(key=lambda m: m[0])
    k = len(next(s for s in summaries if s["name"] == members[0][1]["name"])["ensemble_sizes"])
    if len(members) < k or k < 2:
      continue
    loaded = [np.load(str(path)) for _, _, path in members]
    labels = loaded[0]["labels"]
    if any(not np.array_equal(x["labels"], labels) for x in loaded):
      continue  # Points tested on images in different orders: no common ensemble.
    for i, (_, row, _) in enumerate(members):
      window = [loaded[(i + j) % len(members)]["logits"] for j in range(k)]
      row["acc_seed_ens"] = ensemble.seed_ensemble(window, labels)
      own = row.get("acc_ens_bn", row.get("acc_ens"))
      row["ens_vs_seeds"] = None if own is None else own - row["acc_seed_ens"]


def _averaged(column: str) -> bool:
  """Whether a column is a measurement averaged over seeds (not a setting or a label)."""
  return column.startswith(("acc", "ft_gain", *AW_PREFIXES[:3])) or column in (
      "ens_gain", "ens_gain_bn", "ens_vs_seeds", "best_size_bn", "jaggedness", "consistency",
      "jag_period", "pred_change", "prob_change", "cons_period", "act_std", "act_near_zero",
      "act_near_zero_preact", "skipped_steps", "wall_seconds")


def _mean(values: pd.Series) -> float:
  """The mean, summed in order as the committed tables were (pandas' compensated sum can
  round a table's last digit the other way)."""
  values = [float(v) for v in values]
  return sum(values) / len(values)


def _std(values: pd.Series) -> float:
  """The sample standard deviation (n - 1; 0 for one value), summed as `_mean` is."""
  mean, values = _mean(values), [float(v) for v in values]
  if len(values) < 2:
    return 0.0
  return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def mean_rows(summaries, rows, names: Sequence[str]) -> list[dict[str, Any]]:
  """Per seed group: `mean ± std` (over seeds, n - 1) of every measurement among the
  columns `names`; the other columns once where the group agrees, else each seed's value."""
  seeded = [(key, summary_group_name(s), r) for s, r in zip(summaries, rows)
            if (key := spec.seed_group(s["overrides"])) is not None]
  if not seeded:
    return []
  others = [c for c in names if c not in ("name", "seed")]
  table = pd.DataFrame([{c: r.get(c) for c in ["seed", *others]} for _, _, r in seeded],
                       dtype=object)
  key = pd.Series([k for k, _, _ in seeded], name="group")
  measured = [c for c in others if _averaged(c)]
  is_number = table[measured].map(lambda v: isinstance(v, (int, float)))
  numbers = table[measured].where(is_number).astype(float)
  stats = numbers.groupby(key, sort=False).agg([_mean, _std])
  complete = is_number.groupby(key, sort=False).all()
  group_names = {}
  for k, name, _ in seeded:
    group_names.setdefault(k, name)  # The first point's.
  out = []
  for group, members in table.groupby(key, sort=False):
    row = {"name": group_names[group], "seeds": " ".join(str(s) for s in members["seed"])}
    for column in others:
      values = members[column].tolist()
      if column in measured and complete.loc[group, column]:
        mean, std = stats.loc[group, (column, "_mean")], stats.loc[group, (column, "_std")]
        row[column] = f"{cell(float(mean))} ± {cell(float(std))}"
      elif all(v == values[0] for v in values):
        row[column] = values[0]
      else:
        row[column] = " ".join(cell(v) for v in values)
    out.append(row)
  return out


def _values_by_arm(summaries, rows, names: Sequence[str], keep: Callable[[str, Any], bool],
                   lone_points: bool) -> dict[str, dict[str, list[float]]]:
  """`{arm: {column: [value per seed]}}` over the columns `names`, each value `keep`
  accepts: seed groups by their name, and with `lone_points` a point without a seed by
  its own."""
  groups, group_names = {}, {}
  for s, r in zip(summaries, rows):
    key = spec.seed_group(s["overrides"])
    if key is None and not lone_points:
      continue
    name = s["name"] if key is None else group_names.setdefault(key, summary_group_name(s))
    values = groups.setdefault(name, {})
    for column in names:
      if keep(column, r.get(column)):
        values.setdefault(column, []).append(float(r[column]))
  return groups


def seed_values(summaries, rows, names: Sequence[str]) -> dict[str, dict[str, list[float]]]:
  """`{group name: {measurement: [value per seed]}}` for every seed group, over the
  columns `names`."""
  return _values_by_arm(
      summaries, rows, names, lone_points=False,
      keep=lambda column, value: _averaged(column) and isinstance(value, (int, float)))


def interval_rows(groups: Mapping[str, Mapping[str, Sequence[float]]]) -> list[dict[str, Any]]:
  """One row per seed group and measurement: mean, std, n and the 95% Student t interval."""
  return [{"name": name, "metric": metric, **statistics.mean_interval(values)}
          for name, measured in groups.items() for metric, values in measured.items()]


def comparison_rows(groups, comparisons: Sequence[Sequence[str]],
                    devices: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
  """Per `(arm, baseline)` pair of seed-group names and shared measurement (but the
  `WINDOWED` ones): the difference of means, its 95% Welch interval, Welch's p-value,
  each side's n, the verdict the interval gives, the `method` ("Welch", or "exact" where
  neither side varies over seeds: the interval is the difference, p 0 unless it is 0),
  `kind` "exploratory": uncorrected, unlike the primary hypotheses (`hypotheses`), and
  the `device` kinds the two groups trained on (`group_devices`, `devices_text`)."""
  devices = devices or {}
  out = []
  for arm, baseline in comparisons:
    missing = [g for g in (arm, baseline) if g not in groups]
    if missing:
      raise ValueError(
          f"Comparison ({arm!r}, {baseline!r}) names no seed group {missing}; the groups are "
          f"{sorted(groups)}."
      )
    for metric in groups[arm]:
      if metric in groups[baseline] and metric not in WINDOWED:
        result = statistics.welch(groups[arm][metric], groups[baseline][metric])
        out.append({"metric": metric, "arm": arm, "baseline": baseline, **{
            k: result[k] for k in ("difference", "low", "high", "p", "n_arm", "n_baseline")},
            "verdict": statistics.verdict(result["low"], result["high"]),
            "method": "Welch" if "df" in result else "exact" if result["p"] is not None else None,
            "kind": "exploratory",
            "device": devices_text([devices.get(arm), devices.get(baseline)])})
  return out


def cell(value) -> str:
  """A value as a table prints it (three significant digits below 0.1)."""
  if value is None:
    return "-"
  if isinstance(value, float):
    if value and abs(value) < 0.1:  # Three significant digits: a grid value 0.0125, p 0.0014.
      return f"{value:.3g}"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
  if isinstance(value, (list, tuple)):
    return " ".join(cell(v) if not isinstance(v, Mapping) else
                    "/".join(str(x) for x in v.values()) for v in value)
  return str(value)


def cells(names: Sequence[str], rows) -> pd.DataFrame:
  """The cells as printed: one string per row and column of `names`."""
  return pd.DataFrame([[cell(r.get(c)) for c in names] for r in rows], columns=names)


def markdown(table: pd.DataFrame) -> list[str]:
  """The lines of a markdown table."""
  return [
      "| " + " | ".join(table.columns) + " |",
      "| " + " | ".join("---" for _ in table.columns) + " |",
      *("| " + " | ".join(row) + " |" for row in table.itertuples(index=False)),
  ]


def write_csv(path: epath.Path, table: pd.DataFrame) -> None:
  folder.write_text(path, table.to_csv(index=False, lineterminator="\r\n"))


def write_tuning(workdir: epath.Path, choice: Mapping[str, Any]) -> pd.DataFrame:
  """Writes the tuning grid of `choice` (`tuning.choose`) to `workdir/tuning.csv`: per
  arm and value the metric's mean over the tuning seeds, its std, `n_seeds` and each
  seed's value (`per_seed`; a choice made before several seeds has the mean alone), and
  where a tuning run diverged, how many seeds of each cell did (`diverged`; such a cell's
  mean is `-`: never chosen)."""
  names = ["arm", "value", choice["metric"]]
  if any("n_seeds" in r for r in choice["grid"]):
    names += ["std", "n_seeds", "per_seed"]
  if any(r.get("diverged") for r in choice["grid"]):
    names.append("diverged")
  grid = cells(names, choice["grid"])
  write_csv(epath.Path(workdir) / "tuning.csv", grid)
  return grid


def sizes_text(sizes) -> str:
  """`24, 32` for a tuple; `24, 32, 40 (trained at 32), ...` for a mapping by training size."""
  if isinstance(sizes, Mapping):
    return "; ".join(f"{', '.join(map(str, v))} (trained at {k})" for k, v in sizes.items())
  return ", ".join(map(str, sizes))


def grid_note(configs, sizes: Sequence[int]) -> str:
  """Which test sizes are not multiples of each model's total subsampling factor (traced
  by `progressive arch`): there the last feature map does not tile the image."""
  grids = {}
  for config in configs:
    key = json.dumps(config.model.to_dict(), sort_keys=True, default=str)
    if key not in grids:
      num_classes = pipeline.dataset_info(config.data).num_classes
      grids[key] = (config.model.name, controls.grid(config.model, sizes, num_classes))
  if not grids:
    return ""
  def models(stride):
    return ", ".join(sorted({n for n, g in grids.values() if g["total_stride"] == stride}))

  parts = sorted({f"{g['total_stride']} ({models(g['total_stride'])}): "
                  f"{', '.join(map(str, g['misaligned'])) or 'none'}" for _, g in grids.values()})
  return ("Grid alignment, total subsampling factor (models): the test sizes that are not "
          "multiples of it, where the last feature map does not tile the image: "
          + "; ".join(parts) + ".")


def notes(summaries, names: Sequence[str], settings: measure.Settings) -> str:
  """What results.md says its columns (`names`) mean, for the columns present."""
  ensemble_sizes, finetune = settings.ensemble_sizes, settings.finetune
  return (
      "acc@S: test accuracy at input size S (acc_shape/acc_texture: per class family); "
      "best_size: the test size of the highest accuracy; "
      + (f"acc_ens: the softmax averaged over sizes {sizes_text(ensemble_sizes)} on the "
         "whole eval split, ens_gain: acc_ens minus the best of those sizes alone; "
         if ensemble_sizes else "")
      + ("acc_ens_bn (acc_ens_logp_bn): the mean softmax (log-probability) over those sizes "
         "with batch-norm statistics recomputed at each, ens_gain_bn: acc_ens_bn minus the "
         "best of those sizes alone with recomputed statistics; acc_seed_ens: the softmax at "
         "the training size averaged over as many networks of the seed group (this seed and "
         "the next ones, wrapping around; the windows share networks), ens_vs_seeds: "
         "acc_ens_bn minus acc_seed_ens; "
         if any("ensemble_bn" in s for s in summaries) else "")
      + (f"acc_ft@S: FixRes's fine-tune of the classifier and batch norm at S "
         f"({finetune['epochs']:g} epoch(s) of training images zoomed whole to S, flipped, SGD "
         f"at lr {finetune['lr']:g}, then statistics recomputed), ft_gain@S: acc_ft@S minus "
         "acc_bn@S; best_size_bn: the test size of the highest acc_bn; "
         if finetune and any("eval_ft" in s for s in summaries) else "")
      + "jaggedness and consistency at the last stage's size over "
      + (f"{settings.num_shift_images} test images" if settings.num_shift_images
         else "every test image")
      + f", shifts up to {settings.max_shift} px; images_seen"
      + (", train_gflops (counted from the architecture: the multiply-adds of every "
         "convolution and dense layer at each stage's size, 2 FLOPs each, times 3 for the "
         "forward and backward passes, times the images trained on; the same on every "
         "backend)" if "train_gflops" in names else "")
      + (" and train_gflops_xla (XLA's count of each stage's compiled training step, "
         "times its steps; it depends on the backend)" if "train_gflops_xla" in names else "")
      + ": the training budget."
      + (" jag_period, pred_change (fraction of neighbouring shifts whose predicted class "
         "changes), prob_change (mean abs. change of the true class's probability) and "
         "cons_period: over one whole subsampling period (shift_period px, the traced total "
         "stride) along x, y and the diagonal, objects kept inside the canvas."
         if "jag_period" in names else "")
      + (" act_near_zero: the fraction of ReLU outputs <= 0.05 (dead units), over every ReLU "
         "and recorded step; act_near_zero_preact: fastai's figure, the same of the "
         "convolutions' outputs before batch norm and ReLU; act_std: their std at the last "
         "record."
         if "act_near_zero_preact" in names else "")
      + (" acc_obj@O: accuracy on scenes redrawn at object scale O (bin centre, fraction of "
         "the canvas; photos: zoom O, stored px per source px) at the last stage's size; "
         "rf_scale: the object scale past which the final receptive field no longer covers "
         "the object."
         if any("object_scale" in s for s in summaries) else "")
      + (f" acc_bn@S: accuracy at S with batch-norm statistics recomputed at S from "
         f"{settings.bn_images} training images; acc_canvas@S (acc_canvas_bn@S): the test images "
         "cropped or padded to an S canvas without resampling, stored (recomputed) statistics."
         if any(key in s for s in summaries for key, _ in CONTROL_COLUMNS) else "")
      + (" device: the kind of device a point trained on (one kind per seed group)."
         if "device" in names else "")
  )


def figure(summaries) -> Figure:
  """Accuracy against test size, overall and per family: one line per point, or per seed
  group (the mean, with the spread over seeds shaded)."""
  lines, names = {}, {}
  for s in summaries:
    group = spec.seed_group(s["overrides"])
    key = ("point", s["name"]) if group is None else ("seeds", group)
    names.setdefault(key, s["name"] if group is None else summary_group_name(s))
    lines.setdefault(key, []).append(s)
  groups = list(dict.fromkeys(g for s in summaries for r in s["eval"].values() for g in r))
  fig = Figure(figsize=(4.5 * len(groups), 3.6))
  axes = fig.subplots(1, len(groups), squeeze=False)
  for ax, group in zip(axes[0], groups):
    for key, members in lines.items():
      sizes = sorted({int(k) for m in members for k in m["eval"]})
      values = np.array([[m["eval"].get(str(k), {}).get(group, np.nan) for k in sizes]
                         for m in members], float)
      mean = np.nanmean(values, axis=0)
      label = names[key] if len(members) == 1 else f"{names[key]} (mean of {len(members)})"
      ax.plot(sizes, mean, marker="o", label=label)
      if len(members) > 1:
        ax.fill_between(sizes, np.nanmin(values, 0), np.nanmax(values, 0), alpha=0.2)
    ax.set(title=group.replace("_", " "), xlabel="test size (px)", ylabel="accuracy", ylim=(0, 1))
    ax.grid(alpha=0.3)
  axes[0][-1].legend(fontsize=7, loc="lower right")
  fig.tight_layout()
  return fig


def shown_columns(names: Sequence[str], headline: Sequence[str]) -> list[str]:
  """The columns results.md shows: every one without a headline; else the point's name,
  its seed and the headline measures the sweep measured, in the headline's order."""
  if not headline:
    return list(names)
  return [c for c in ("name", "seeds", "seed") if c in names] + [c for c in headline if c in names]


def headline_values(summaries, rows, headline: Sequence[str]) -> dict[str, dict[str, list[float]]]:
  """`{arm: {measure: [value per seed]}}` of every numeric headline measure: seed groups
  by their name, a point without a seed by its own."""
  return _values_by_arm(
      summaries, rows, headline, lone_points=True,
      keep=lambda _, value: isinstance(value, (int, float)) and not isinstance(value, bool))


def headline_figure(values: Mapping[str, Mapping[str, Sequence[float]]],
                    headline: Sequence[str]) -> Figure:
  """One panel per headline measure, one row per arm: the mean over its seeds (a dot) with
  the 95% Student t interval (a whisker; none for one seed). Three panels a row, so the
  figure stays readable scaled down."""
  metrics = [m for m in headline if any(m in v for v in values.values())]
  arms = list(values)
  columns_ = max(1, min(3, len(metrics)))
  nrows = max(1, -(-len(metrics) // columns_))
  fig = Figure(figsize=(3.9 * columns_, (0.9 + 0.28 * len(arms)) * nrows), layout="constrained")
  axes = fig.subplots(nrows, columns_, squeeze=False).ravel()
  for ax, metric in zip(axes, metrics):
    for i, arm in enumerate(arms):
      measured = values[arm].get(metric)
      if not measured:
        continue
      r = statistics.mean_interval(measured)
      if r["low"] is not None:
        ax.hlines(i, r["low"], r["high"], color="C0", linewidth=2, alpha=0.6)
      ax.plot(r["mean"], i, "o", color="C0", markersize=4)
    ax.set_yticks(range(len(arms)), arms, fontsize=7)
    ax.set_ylim(len(arms) - 0.5, -0.5)
    ax.set_title(metric, fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
  for ax in axes[len(metrics):]:
    ax.set_axis_off()
  fig.suptitle("mean over seeds, 95% interval", fontsize=8)
  return fig


def write_figure(summaries, path: epath.Path, rows=None, headline: Sequence[str] = ()) -> None:
  """`results.png`: the headline measures by arm (`headline_figure`) where the sweep names
  them and measured any, else the accuracy curves (`figure`)."""
  values = headline_values(summaries, rows, headline) if headline and rows is not None else {}
  if any(m in v for v in values.values() for m in headline):
    fig = headline_figure(values, headline)
  else:
    fig = figure(summaries)
  folder.write_file(path, lambda tmp: fig.savefig(str(tmp), format="png", dpi=110))


ACTIVATIONS_FIGURE = "activations.png"


def write_activations_figure(summaries, workdir: epath.Path, headline: Sequence[str]) -> bool:
  """Claim 6's figure, `activations.png` (`plots.near_zero_by_arm`), for a sweep whose
  headline is the dead-unit measure (`act_near_zero`): every finished point that recorded
  ReLU outputs, by seed group, with the learning rate its `metrics.jsonl` logged. Returns
  whether it was written."""
  if "act_near_zero" not in headline:
    return False
  arms: dict[str, list[dict[str, Any]]] = {}
  for summary in summaries:
    point_dir = epath.Path(workdir) / summary["name"]
    stats = activations.read_stats(point_dir)
    if not any(is_relu(r["layer"]) for r in stats):
      continue  # Recorded before ReLU outputs were, or not at all.
    logged = [r for r in read_rows(point_dir / "metrics.jsonl")
              if r["event"] == "train" and "lr" in r]
    seed = summary["overrides"].get("seed", 0)
    # A train row at step s holds the rate the schedule gave step s - 1.
    lr = (np.asarray([r["step"] - 1 for r in logged]), np.asarray([r["lr"] for r in logged]))
    arms.setdefault(spec.group_name(summary["name"], seed), []).append(
        {"seed": seed, "stats": stats, "lr": lr})
  if not arms:
    return False
  for seeds in arms.values():
    seeds.sort(key=lambda s: s["seed"])
  fig = plots.near_zero_by_arm(arms)
  folder.write_file(epath.Path(workdir) / ACTIVATIONS_FIGURE,
                    lambda tmp: fig.savefig(str(tmp), format="png", dpi=100))
  return True


CANVAS_FIGURE = "canvas.png"
CANVAS_IMAGES = 60  # The rows of the canvas figure: a few images, each one readable.


def write_canvas_figure(summaries, workdir: epath.Path, *, topk: int,
                        num_images: int = CANVAS_IMAGES) -> bool:
  """Azulay & Weiss's canvas figure of a sweep measured with their protocol
  (`--canvas_topk`), `canvas.png` (`plots.canvas_by_arm`): the first seed of each seed
  group that still has its checkpoints (a point summarised elsewhere and copied without
  them has no network to shift), on the first `num_images` test images
  (`measure.canvas_grid`), its numbers over those images (the `aw_*` columns are over
  every shift image). Returns whether it was written."""
  first = {}
  for summary in summaries:
    seed = summary["overrides"].get("seed", 0)
    group = spec.group_name(summary["name"], seed)
    has_network = run_lib.checkpoint_steps(epath.Path(workdir) / summary["name"])
    if has_network and (group not in first or seed < first[group][0]):
      first[group] = (seed, summary["name"])
  if not first:
    return False
  results = {f"{group} (seed {seed})": measure.canvas_grid(
      epath.Path(workdir) / name, topk=topk, num_images=num_images)
      for group, (seed, name) in first.items()}
  fig = plots.canvas_by_arm(results, max_rows=num_images)
  folder.write_file(epath.Path(workdir) / CANVAS_FIGURE,
                    lambda tmp: fig.savefig(str(tmp), format="png", dpi=100))
  return True
