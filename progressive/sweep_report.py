"""Sweep reports: each finished point's summary, and the tables and plot over a sweep.

`summarize_point` writes `DIR/<name>/sweep_point.json` (the point's overrides, final
accuracies, budget, shift measures, multi-size ensemble and FixRes fine-tune);
`aggregate` reads every point's summary, summarising those run elsewhere, and writes
`DIR/results.csv`, `DIR/results.md` and `DIR/results.png`. Points whose overrides differ
only in `seed` form a seed group: with several seeds it also writes
`DIR/results_mean.csv` and a table of the mean and standard deviation over each group's
seeds, and with a multi-size ensemble the seed ensemble it competes with.

A sweep's ensemble sizes and fine-tune sizes are either one tuple for every point or a
mapping from a point's last stage size to its own (sizes near each training size).
"""

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from etils import epath

from progressive import schedules, statistics
from progressive.analysis import run as run_lib
from progressive.data import pipeline
from progressive.training.metrics import read_rows

SUMMARY_FILE = "sweep_point.json"
WALL_FILE = "sweep_wall.json"  # The seconds a point trained, over every attempt a signal stopped.
# What a summary measures beyond its options; a summary of an older version is remade.
MEASURES = 2  # 2: period shifts, object scale, the scale controls.
OBJECT_PER_BIN = 24  # Rendered scenes per object-scale bin.
LOGITS_FILE = "eval_logits.npz"  # Test logits at the training size, for the seed ensemble.


def for_point(sizes, config) -> tuple[int, ...]:
  """A point's own sizes of `sizes`: a tuple as it is, a mapping by the point's last
  stage size (`{32: (24, 32, 40)}`; none for a size it does not name)."""
  if isinstance(sizes, Mapping):
    sizes = {int(k): v for k, v in sizes.items()}.get(int(config.stages[-1]["size"]), ())
  return tuple(int(s) for s in sizes or ())


def finetune_for_point(spec: Mapping[str, Any] | None, config) -> dict[str, Any] | None:
  """A point's FixRes fine-tune: `spec` (`sizes`, `epochs`, `lr`) with its own sizes, or
  None without a spec or without sizes for this point."""
  if not spec:
    return None
  sizes = for_point(spec["sizes"], config)
  return {"sizes": list(sizes), "epochs": float(spec["epochs"]), "lr": float(spec["lr"])} if sizes else None


def shift_summary(run, examples, *, num_images: int, max_shift: int) -> dict:
  """Jaggedness and consistency of a finished run at its last stage's size, on the first
  `num_images` of `examples` (0: all of them): within `max_shift` px (Azulay & Weiss, Zhang), and over one
  whole subsampling period of the traced total stride along x, y and the diagonal,
  objects kept inside the canvas (`shift.period_sweep`; averaged over the directions)."""
  from progressive.analysis import controls, shift  # pylint: disable=import-outside-toplevel

  size = int(run.config.stages[-1]["size"])
  examples = {k: v[:num_images or None] for k, v in examples.items()}
  predict = run.predictor(size)
  mode = run_lib.shift_mode(run.config.data)
  args = dict(size=size, max_shift=max_shift, mode=mode)
  sweep = shift.shift_sweep(predict, examples, run.info, **args)
  cons = shift.shift_consistency(predict, examples, run.info, **args)
  period = controls.grid(run.config.model, [size], run.info.num_classes)["total_stride"]
  over = shift.period_sweep(predict, examples, run.info, size=size, period=period, mode=mode)

  def across(name):
    values = [d[name] for d in over["directions"].values() if d[name] is not None]
    return sum(values) / len(values) if values else None

  return {
      "shift_size": size,
      "jaggedness": sweep["mean_changes"],
      "frac_changed": sweep["frac_changed"],
      "consistency": cons["consistency"],
      "jaggedness_family": {k: v["mean_changes"] for k, v in sweep["family"].items()},
      "consistency_family": cons["family"],
      "shift_period": period,
      "jag_period": across("mean_changes"),
      "pred_change": across("pred_change_rate"),
      "prob_change": across("prob_change"),
      "cons_period": over["consistency"],
      "shift_inside": over["inside"],
  }


def object_scale_summary(run, *, per_bin: int) -> dict:
  """Accuracy by object scale on `scale_shapes` scenes redrawn at the last stage's size
  (`scale.object_scale_accuracy`), per bin centre and family, with the object scale
  `rf_scale` past which the final receptive field no longer covers the object; for
  `photos`, by zoom on patches cut afresh from the test regions (no `rf_scale`)."""
  from progressive.analysis import scale  # pylint: disable=import-outside-toplevel

  size = int(run.config.stages[-1]["size"])
  rf = scale.receptive_field(run.config.model, size, run.info.num_classes)
  result = scale.object_scale_accuracy(
      run.predictor(size), run.info, canvas_size=size, per_bin=per_bin, features_rf=rf)
  by_bin = {}
  for i, center in enumerate(result["bin_centers"]):
    by_bin[f"{center:.2f}"] = {("accuracy" if g == "all" else f"accuracy_{g}"): values[i]
                               for g, values in result["accuracy"].items()}
  return {"object_scale": by_bin, "rf_scale": result.get("rf_scale")}


def _accuracies(result: Mapping[str, Any]) -> dict[str, float]:
  """A `scale.breakdown` as summary accuracies: `accuracy`, `accuracy_<family>`."""
  return {"accuracy": result["all"], **{f"accuracy_{k}": v for k, v in result["family"].items()}}


def ensemble_summary(run, examples, sizes: Sequence[int], *, calibration=None,
                     workdir: epath.Path | None = None,
                     recalibrated: Mapping[int, np.ndarray] | None = None) -> dict:
  """The multi-size test-time ensemble over `sizes` on `examples` (the whole eval split):
  its accuracy, overall and per family, and its gain over the best of those sizes alone;
  with `calibration` (training images) again with batch-norm statistics recomputed at
  each size, by the mean softmax (`ensemble_bn`) and the mean log-probability
  (`ensemble_logp_bn`); `recalibrated` (`controls.recalibrated_logits`, at least at `sizes`)
  saves recomputing them. With `workdir`, the logits at the training size are written
  to `LOGITS_FILE` for the seed ensemble `aggregate` builds."""
  from progressive.analysis import controls, ensemble  # pylint: disable=import-outside-toplevel
  from progressive.analysis.scale import predict_sizes  # pylint: disable=import-outside-toplevel

  images, labels = examples["image"], examples["label"]
  logits = predict_sizes(run.predict, images, sizes)
  result = ensemble.ensemble_from_logits(logits, labels, run.info)
  out = {
      "ensemble_sizes": result["sizes"],
      "ensemble": _accuracies(result["ensemble"]),
      "ensemble_gain": result["gain_over_best"],
  }
  if calibration is not None and run.has_batch_norm:
    if recalibrated is None:
      recalibrated = controls.recalibrated_logits(run, images, sizes, calibration)
    result = ensemble.ensemble_from_logits({int(s): recalibrated[int(s)] for s in sizes}, labels,
                                           run.info)
    out.update({
        "ensemble_bn": _accuracies(result["ensemble"]),
        "ensemble_logp_bn": _accuracies(result["ensemble_logp"]),
        "ensemble_gain_bn": result["gain_over_best"],
    })
  if workdir is not None:
    size = int(run.train_size)
    at_size = logits[size] if size in logits else run.predict(images, size)
    np.savez_compressed(epath.Path(workdir) / LOGITS_FILE, logits=np.asarray(at_size, np.float32),
                        labels=np.asarray(labels), size=size)
  return out


def finetune_summary(run, examples, spec: Mapping[str, Any], *, calibration) -> dict:
  """Accuracy at each of `spec["sizes"]` after FixRes's fine-tune of the classifier and
  batch norm at that size (`progressive.analysis.finetune`, `spec["epochs"]` epochs of
  the training split at `spec["lr"]`, batch size as in training), overall and per family."""
  from progressive.analysis import finetune  # pylint: disable=import-outside-toplevel
  from progressive.analysis.scale import breakdown  # pylint: disable=import-outside-toplevel

  batch = int(run.config.batch_size)
  steps = max(1, math.ceil(spec["epochs"] * run.info.num_train / batch))
  train = run_lib.load_examples(run.config.data, run.config.data.train_split,
                                min(steps * batch, run.info.num_train))
  out = {}
  for size in spec["sizes"]:
    tuned = finetune.finetune(run, int(size), train["image"], train["label"], steps=steps,
                              lr=spec["lr"], batch_size=batch, seed=int(run.config.seed),
                              calibration=calibration)
    correct = np.argmax(tuned.predict(examples["image"], int(size)), -1) == examples["label"]
    out[str(size)] = _accuracies(breakdown(correct, examples["label"], run.info))
  return {"eval_ft": out, "finetune_steps": steps}


def controls_summary(run, examples, sizes: Sequence[int], *, calibration,
                     canvas_mode: str = "edge",
                     recalibrated: Mapping[int, np.ndarray] | None = None) -> dict:
  """Accuracy at each of `sizes` on `examples` (the whole eval split) under the scale
  controls (`progressive.analysis.controls`): zoomed with batch-norm statistics
  recomputed at the size from the `calibration` training images (`eval_bn`; from
  `recalibrated`, `controls.recalibrated_logits` at least at `sizes`, when given), and on a
  canvas of that size without resampling, with stored (`eval_canvas`) and recomputed
  (`eval_canvas_bn`) statistics. Without calibration images (no batch norm) only
  `eval_canvas`."""
  from progressive.analysis import controls  # pylint: disable=import-outside-toplevel
  from progressive.analysis.scale import size_matrix_from_logits  # pylint: disable=import-outside-toplevel

  images, labels = examples["image"], examples["label"]

  def by_size(matrix, row: int) -> dict:
    return {str(size): {("accuracy" if g == "all" else f"accuracy_{g}"): matrix["accuracy"][g][row][i]
                        for g in matrix["accuracy"]} for i, size in enumerate(matrix["sizes"])}

  canvas = controls.canvas_matrix(run, images, labels, sizes, calibration, mode=canvas_mode)
  out = {"eval_canvas": by_size(canvas, 0)}
  if calibration is not None:
    out["eval_canvas_bn"] = by_size(canvas, 1)
    if recalibrated is None:
      recalibrated = controls.recalibrated_logits(run, images, sizes, calibration)
    zoomed = {"run": {int(s): recalibrated[int(s)] for s in sizes}}
    out["eval_bn"] = by_size(size_matrix_from_logits(zoomed, labels, run.info), 0)
  return out


def activation_summary(workdir: epath.Path, rows: Sequence[Mapping[str, Any]]) -> dict:
  """What training recorded of its stability: the steps skipped for a non-finite loss
  (`skip_nonfinite`), and from `activation_stats.jsonl` (if recorded) the mean over the
  convolutions (`*/conv` layers, before batch norm and ReLU) of their outputs' std and
  near-zero fraction (`<= 0.05`, fastai's dead-unit measure) at the last record."""
  out = {"skipped_steps": sum(int(r.get("skipped", 0)) for r in rows if r["event"] == "train")}
  path = epath.Path(workdir) / "activation_stats.jsonl"
  stats = read_rows(path) if path.exists() else []
  if stats:
    last = max(r["step"] for r in stats)
    convs = [r for r in stats if r["step"] == last and r["layer"].endswith("/conv")]
    if convs:
      out["act_std"] = sum(r["std"] for r in convs) / len(convs)
      out["act_near_zero"] = sum(r["near_zero"] for r in convs) / len(convs)
  return out


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


def _options(num_shift_images: int, max_shift: int, ensemble_sizes: Sequence[int],
             bn_images: int = 0, finetune: Mapping[str, Any] | None = None) -> dict:
  """What a summary measured with (`ensemble_sizes` and `finetune` the point's own): a
  summary made with other options is remade."""
  options = {"num_shift_images": int(num_shift_images), "max_shift": int(max_shift),
             "ensemble_sizes": [int(s) for s in ensemble_sizes], "measures": MEASURES}
  if bn_images:  # Absent when off, so summaries made before the controls existed stay valid.
    options["bn_images"] = int(bn_images)
  if finetune:
    options["finetune"] = dict(finetune)
  return options


def summary_options(config, *, num_shift_images: int = 0, max_shift: int = 4, ensemble_sizes=(),
                    bn_images: int = 0, finetune=None, measures: bool = True) -> dict:
  """The `options` that `summarize_point` with these arguments writes for a point of
  `config`: a summary holding others is remade."""
  if not measures:
    return {"measures": "tuning"}
  return _options(num_shift_images, max_shift, for_point(ensemble_sizes, config), bn_images,
                  finetune_for_point(finetune, config))


def summarize_point(workdir: epath.Path, name: str, overrides, config, *, wall_seconds=None,
                    num_shift_images: int = 0, max_shift: int = 4,
                    ensemble_sizes=(), bn_images: int = 0, finetune=None,
                    measures: bool = True) -> dict:
  """Writes `workdir/sweep_point.json`: the overrides, final eval rows, the best test size,
  the training budget, shift measures, the multi-size ensemble over `ensemble_sizes` (if
  any, `for_point`; it reads the whole eval split into memory), with `bn_images` the scale
  controls at every eval size (`controls_summary`, on the whole eval split), the
  ensemble with recalibrated statistics and FixRes's fine-tune (`finetune`: `sizes`,
  `epochs`, `lr`; `finetune_for_point`), and (when run by the sweep) the wall time.
  `measures=False` (tuning runs, which are read only for their validation accuracy)
  stops after the budget."""
  options = summary_options(config, num_shift_images=num_shift_images, max_shift=max_shift,
                            ensemble_sizes=ensemble_sizes, bn_images=bn_images, finetune=finetune,
                            measures=measures)
  ensemble_sizes = for_point(ensemble_sizes, config)
  finetune = finetune_for_point(finetune, config)
  workdir = epath.Path(workdir)
  rows = read_rows(workdir / "metrics.jsonl")
  last = max(r["step"] for r in rows if r["event"] == "eval")
  final = {r["size"]: r for r in rows if r["event"] == "eval" and r["step"] == last}
  run = run_lib.load_run(workdir)
  summary = {
      "name": name,
      "options": options,
      "overrides": {k: v for k, v in overrides.items() if k != "name"},
      "step": last,
      "eval": {str(size): {k: v for k, v in r.items() if k.startswith("accuracy")}
               for size, r in sorted(final.items())},
      "best_size": max(sorted(final), key=lambda size: final[size]["accuracy"]),
      **budget_summary(rows, run.stages()),
  }
  if measures:
    summary.update(_measured(workdir, run, rows, config, sorted(final), wall_seconds=wall_seconds,
                             num_shift_images=num_shift_images, max_shift=max_shift,
                             ensemble_sizes=ensemble_sizes, bn_images=bn_images, finetune=finetune))
  else:
    summary["wall_seconds"] = wall_seconds
  (workdir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1, default=str) + "\n")
  return summary


def _measured(workdir, run, rows, config, sizes, *, wall_seconds, num_shift_images, max_shift,
              ensemble_sizes, bn_images, finetune) -> dict:
  """`summarize_point`'s measures beyond the eval rows and the budget. The training
  images batch norm is recalibrated on are read once, for the controls, the ensemble and
  the fine-tune, and the logits with recomputed statistics are computed once per size for
  the controls and the ensemble."""
  examples = run_lib.load_examples(
      config.data, config.data.eval_split,
      None if ensemble_sizes or bn_images or finetune or not num_shift_images else num_shift_images)
  calibration = None
  if bn_images and run.has_batch_norm:
    calibration = run_lib.load_examples(config.data, config.data.train_split, bn_images)["image"]
  recalibrated = None
  if calibration is not None:  # The controls' sizes and the ensemble's, each once.
    from progressive.analysis import controls  # pylint: disable=import-outside-toplevel

    needed = sorted({int(s) for s in (*sizes, *ensemble_sizes)})
    recalibrated = controls.recalibrated_logits(run, examples["image"], needed, calibration)
  return {
      **activation_summary(workdir, rows),
      "wall_seconds": wall_seconds,
      **shift_summary(run, examples, num_images=num_shift_images, max_shift=max_shift),
      **(ensemble_summary(run, examples, ensemble_sizes, calibration=calibration, workdir=workdir,
                          recalibrated=recalibrated) if ensemble_sizes else {}),
      **(controls_summary(run, examples, sizes, calibration=calibration, recalibrated=recalibrated)
         if bn_images else {}),
      **(finetune_summary(run, examples, finetune, calibration=calibration) if finetune else {}),
      **(object_scale_summary(run, per_bin=OBJECT_PER_BIN)
         if config.data.name in pipeline.BUILTINS else {}),
  }


def trained_seconds(point_dir: epath.Path) -> float | None:
  """The wall seconds the sweep spent training the point in `point_dir` (`WALL_FILE`),
  or None where it was not trained by a sweep that recorded it."""
  path = epath.Path(point_dir) / WALL_FILE
  return json.loads(path.read_text())["wall_seconds"] if path.exists() else None


def read_summary(point_dir: epath.Path) -> dict | None:
  """A point's `sweep_point.json`, or None before it is summarised."""
  path = epath.Path(point_dir) / SUMMARY_FILE
  return json.loads(path.read_text()) if path.exists() else None


# Summary keys of the scale controls and their column prefixes: acc_bn@S, acc_bn_shape@S, ...
CONTROL_COLUMNS = (("eval_bn", "acc_bn"), ("eval_canvas", "acc_canvas"),
                   ("eval_canvas_bn", "acc_canvas_bn"), ("eval_ft", "acc_ft"))
# The ensembles' summary keys and their column prefixes: acc_ens, acc_ens_shape, ...
ENSEMBLE_COLUMNS = (("ensemble", "acc_ens"), ("ensemble_bn", "acc_ens_bn"),
                    ("ensemble_logp_bn", "acc_ens_logp_bn"))
SUMMARY_COLUMNS = ("best_size", "best_size_bn", "ens_gain", "ens_gain_bn", "acc_seed_ens",
                   "ens_vs_seeds", "rf_scale", "jaggedness", "consistency", "shift_period",
                   "jag_period", "pred_change", "prob_change", "cons_period", "act_std",
                   "act_near_zero", "skipped_steps", "images_seen", "train_gflops", "wall_seconds")


def _columns(summaries: Sequence[Mapping[str, Any]], rows) -> list[str]:
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
  in_rows = list(dict.fromkeys(k for r in rows for k in r))
  ensembles = [c for _, prefix in ENSEMBLE_COLUMNS for c in in_rows if _ensemble_prefix(c) == prefix]
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
  for key in ("best_size", "rf_scale", "jaggedness", "consistency", "shift_period", "jag_period",
              "pred_change", "prob_change", "cons_period", "act_std", "act_near_zero",
              "images_seen", "train_gflops", "wall_seconds"):
    row[key] = summary.get(key)
  return row


def add_seed_ensembles(workdir: epath.Path, summaries, rows) -> None:
  """Per seed group with a multi-size ensemble of k sizes: each point's `acc_seed_ens`,
  the softmax at the training size averaged over k networks (this seed and the next k - 1
  of its group, in seed order, wrapping around), and `ens_vs_seeds`: its own size
  ensemble with recalibrated statistics (`acc_ens_bn`, else `acc_ens`) minus that seed
  ensemble, both costing k forward passes. The windows share networks, so the spread
  over a group's points understates a seed ensemble's own."""
  from progressive.analysis import ensemble  # pylint: disable=import-outside-toplevel

  groups = {}
  for s, row in zip(summaries, rows):
    key = seed_group(s["overrides"])
    path = epath.Path(workdir) / s["name"] / LOGITS_FILE
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


def seed_group(overrides: Mapping[str, Any]) -> str | None:
  """The seed group of a point with a `seed` override: its other overrides (None without
  a seed). Points that differ only in `seed` share it, whatever their names."""
  if "seed" not in overrides:
    return None
  rest = {k: v for k, v in overrides.items() if k not in ("seed", "name")}
  return json.dumps(rest, sort_keys=True, default=str)


def group_name(summary: Mapping[str, Any]) -> str:
  """A seed group's name: its first point's name without its seed part (the `_seed<N>`
  of `with_seeds`, or the `seed=<N>` of a `field=value` name), else the name itself."""
  name, seed = summary["name"], summary["overrides"]["seed"]
  for part in (f"_seed{seed}", f"_seed={seed}"):
    if name.endswith(part) and name != part:
      return name[:-len(part)]
  if name.startswith(f"seed={seed}_"):
    return name[len(f"seed={seed}_"):]
  return name.replace(f"_seed={seed}_", "_", 1)


def _averaged(column: str) -> bool:
  """Whether a column is a measurement averaged over seeds (not a setting or a label)."""
  return column.startswith(("acc", "ft_gain")) or column in (
      "ens_gain", "ens_gain_bn", "ens_vs_seeds", "best_size_bn", "jaggedness", "consistency",
      "jag_period", "pred_change", "prob_change", "cons_period", "act_std", "act_near_zero",
      "skipped_steps", "wall_seconds")


def _mean(values: pd.Series) -> float:
  """The mean, summed in order as the committed tables were (pandas' compensated sum can
  round a table's last digit the other way)."""
  values = [float(v) for v in values]
  return sum(values) / len(values)


def _std(values: pd.Series) -> float:
  """The sample standard deviation (n - 1; 0 for one value), summed as `_mean` is."""
  mean, values = _mean(values), [float(v) for v in values]
  return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0


def _mean_rows(summaries, rows, columns) -> list[dict[str, Any]]:
  """Per seed group: `mean ± std` (over seeds, n - 1) of every measurement; the other
  columns once where the group agrees, else each seed's value."""
  seeded = [(key, group_name(s), r) for s, r in zip(summaries, rows)
            if (key := seed_group(s["overrides"])) is not None]
  if not seeded:
    return []
  others = [c for c in columns if c not in ("name", "seed")]
  frame = pd.DataFrame([{c: r.get(c) for c in ["seed", *others]} for _, _, r in seeded],
                       dtype=object)
  key = pd.Series([k for k, _, _ in seeded], name="group")
  measured = [c for c in others if _averaged(c)]
  is_number = frame[measured].map(lambda v: isinstance(v, (int, float)))
  numbers = frame[measured].where(is_number).astype(float)
  stats = numbers.groupby(key, sort=False).agg([_mean, _std])
  complete = is_number.groupby(key, sort=False).all()
  names = {}
  for k, name, _ in seeded:
    names.setdefault(k, name)  # The first point's.
  out = []
  for group, members in frame.groupby(key, sort=False):
    row = {"name": names[group], "seeds": " ".join(str(s) for s in members["seed"])}
    for column in others:
      values = members[column].tolist()
      if column in measured and complete.loc[group, column]:
        mean, std = stats.loc[group, (column, "_mean")], stats.loc[group, (column, "_std")]
        row[column] = f"{_cell(float(mean))} ± {_cell(float(std))}"
      elif all(v == values[0] for v in values):
        row[column] = values[0]
      else:
        row[column] = " ".join(_cell(v) for v in values)
    out.append(row)
  return out


def _seed_values(summaries, rows, columns) -> dict[str, dict[str, list[float]]]:
  """`{group name: {measurement: [value per seed]}}` for every seed group."""
  groups, names = {}, {}
  for s, r in zip(summaries, rows):
    key = seed_group(s["overrides"])
    if key is None:
      continue
    name = names.setdefault(key, group_name(s))
    values = groups.setdefault(name, {})
    for column in columns:
      if _averaged(column) and isinstance(r.get(column), (int, float)):
        values.setdefault(column, []).append(float(r[column]))
  return groups


def interval_rows(groups: Mapping[str, Mapping[str, Sequence[float]]]) -> list[dict[str, Any]]:
  """One row per seed group and measurement: mean, std, n and the 95% Student t interval."""
  return [{"name": name, "metric": metric, **statistics.mean_interval(values)}
          for name, measured in groups.items() for metric, values in measured.items()]


# Measurements over overlapping windows of a seed group's networks: not independent
# across seeds, so no Welch test between groups.
WINDOWED = ("acc_seed_ens", "ens_vs_seeds")


def comparison_rows(groups, comparisons: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
  """Per `(arm, baseline)` pair of seed-group names and shared measurement (but the
  `WINDOWED` ones): the difference of means, its 95% Welch interval, Welch's p-value,
  each side's n and the verdict the interval gives."""
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
            "verdict": statistics.verdict(result["low"], result["high"])})
  return out


def config_comparisons(config_flag: str) -> list[tuple[str, str]]:
  """The `(arm, baseline)` pairs of the config file's `get_comparisons(arg)`, if any."""
  from progressive import sweep  # pylint: disable=import-outside-toplevel  it imports this

  path, arg = sweep.split_config_arg(config_flag)
  module = sweep.load_module(path)
  if not hasattr(module, "get_comparisons"):
    return []
  return [tuple(pair) for pair in module.get_comparisons(arg)]


def _cell(value) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    if value and abs(value) < 0.1:  # Three significant digits: a grid value 0.0125, p 0.0014.
      return f"{value:.3g}"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
  if isinstance(value, (list, tuple)):
    return " ".join(_cell(v) if not isinstance(v, Mapping) else
                    "/".join(str(x) for x in v.values()) for v in value)
  return str(value)


def _table(columns, rows) -> pd.DataFrame:
  """The cells as printed: one string per row and column."""
  return pd.DataFrame([[_cell(r.get(c)) for c in columns] for r in rows], columns=columns)


def _markdown(table: pd.DataFrame) -> list[str]:
  return [
      "| " + " | ".join(table.columns) + " |",
      "| " + " | ".join("---" for _ in table.columns) + " |",
      *("| " + " | ".join(cells) + " |" for cells in table.itertuples(index=False)),
  ]


def _write_csv(path: epath.Path, table: pd.DataFrame) -> None:
  path.write_text(table.to_csv(index=False, lineterminator="\r\n"))


def write_tuning(workdir: epath.Path, choice: Mapping[str, Any]) -> pd.DataFrame:
  """Writes the tuning grid of `choice` (`sweep.choose`) to `workdir/tuning.csv`."""
  grid = _table(["arm", "value", choice["metric"]], choice["grid"])
  _write_csv(epath.Path(workdir) / "tuning.csv", grid)
  return grid


def aggregate(config_flag: str, workdir: str, *, common: Mapping[str, Any] | None = None,
              num_shift_images: int = 0, max_shift: int = 4,
              ensemble_sizes=None, bn_images: int = 0, finetune=None,
              comparisons: Sequence[Sequence[str]] | None = None):
  """Tables and a plot over every finished point (summarising those run elsewhere).

  Writes `results.csv` and `results.md` (one row per point; with several seeds also
  `results_mean.csv` and a table of means and standard deviations over the seeds,
  `results_intervals.csv` with each mean's 95% interval, and for the `(arm, baseline)`
  seed groups of `comparisons` (default: the config's `get_comparisons(arg)`)
  `comparisons.csv`) and `results.png`. `ensemble_sizes` and `finetune` default to the
  config file's (`get_ensemble_sizes(arg)`, `get_finetune(arg)`). Returns the rows, one
  per finished point."""
  from progressive import sweep  # pylint: disable=import-outside-toplevel  it imports this

  workdir = epath.Path(workdir)
  if ensemble_sizes is None:
    ensemble_sizes = sweep.config_ensemble_sizes(config_flag)
  if finetune is None:
    finetune = sweep.config_finetune(config_flag)
  choice = sweep.read_choice(workdir)
  if choice is None and sweep.tuning_spec(config_flag) is not None:
    try:  # Tuning runs finished elsewhere (--print_commands): choose now.
      choice = sweep.choose(config_flag, workdir, common)
    except ValueError as e:
      print(f"Not choosing yet: {e}")
  _, points = sweep.expand(config_flag, common, choice=choice)
  summaries, missing = [], []
  for name, overrides, config in points:
    point_dir = workdir / name
    summary = read_summary(point_dir)
    options = summary_options(config, num_shift_images=num_shift_images, max_shift=max_shift,
                              ensemble_sizes=ensemble_sizes, bn_images=bn_images, finetune=finetune)
    # Run elsewhere, or summarised with other measures: (re)summarised here.
    if (summary is None or summary.get("options") != options) and sweep.finished(point_dir, config):
      summary = summarize_point(
          point_dir, name, overrides, config, num_shift_images=num_shift_images,
          max_shift=max_shift, ensemble_sizes=ensemble_sizes, bn_images=bn_images,
          finetune=finetune,
          wall_seconds=(summary or {}).get("wall_seconds") or trained_seconds(point_dir))
    (summaries if summary else missing).append(summary or name)
  if not summaries:
    print(f"No finished point in {workdir} yet.")
    return []
  rows = [point_row(s) for s in summaries]
  add_seed_ensembles(workdir, summaries, rows)
  if choice:  # The tuned field as a column: each point's arm's chosen value.
    for s, row in zip(summaries, rows):
      row.setdefault(choice["field"], choice["values"].get(sweep.arm_key(s["overrides"])))
      s["overrides"].setdefault(choice["field"], row[choice["field"]])
  columns = _columns(summaries, rows)
  table = _table(columns, rows)
  _write_csv(workdir / "results.csv", table)
  notes = (
      "acc@S: test accuracy at input size S (acc_shape/acc_texture: per class family); "
      "best_size: the test size of the highest accuracy; "
      + (f"acc_ens: the softmax averaged over sizes {_sizes_text(ensemble_sizes)} on the "
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
      + (f"{num_shift_images} test images" if num_shift_images else "every test image")
      + f", shifts up to {max_shift} px; images_seen"
      + (" and train_gflops (XLA's count of each stage's training step, times its steps)"
         if "train_gflops" in columns else "")
      + ": the training budget."
      + (" jag_period, pred_change (fraction of neighbouring shifts whose predicted class "
         "changes), prob_change (mean abs. change of the true class's probability) and "
         "cons_period: over one whole subsampling period (shift_period px, the traced total "
         "stride) along x, y and the diagonal, objects kept inside the canvas."
         if "jag_period" in columns else "")
      + (" acc_obj@O: accuracy on scenes redrawn at object scale O (bin centre, fraction of "
         "the canvas; photos: zoom O, stored px per source px) at the last stage's size; "
         "rf_scale: the object scale past which the final receptive field no longer covers "
         "the object."
         if any("object_scale" in s for s in summaries) else "")
      + (f" acc_bn@S: accuracy at S with batch-norm statistics recomputed at S from "
         f"{bn_images} training images; acc_canvas@S (acc_canvas_bn@S): the test images "
         "cropped or padded to an S canvas without resampling, stored (recomputed) statistics."
         if any(key in s for s in summaries for key, _ in CONTROL_COLUMNS) else "")
  )
  notes += " " + grid_note([config for name, _, config in points if name not in missing],
                            sorted({int(size) for s in summaries for size in s["eval"]}))
  lines = [
      f"# Sweep `{config_flag}`", "",
      f"{len(summaries)} of {len(points)} points finished"
      + (f"; missing: {', '.join(missing)}." if missing else "."),
      "", notes, "", *_markdown(table),
  ]
  means = _mean_rows(summaries, rows, columns)
  if any(len(m["seeds"].split()) > 1 for m in means):
    means = _table(["name", "seeds", *(c for c in columns if c not in ("name", "seed"))], means)
    _write_csv(workdir / "results_mean.csv", means)
    lines += ["", "Mean ± standard deviation over seeds:", "", *_markdown(means)]
    groups = _seed_values(summaries, rows, columns)
    intervals = _table(["name", "metric", "mean", "std", "n", "low", "high"], interval_rows(groups))
    _write_csv(workdir / "results_intervals.csv", intervals)
    lines += ["", "Mean over seeds with its 95% interval (Student t; low, high):", "",
              *_markdown(intervals)]
    pairs = comparisons if comparisons is not None else config_comparisons(config_flag)
    # A pair whose seed group the sweep plans but has not finished waits; a name the
    # sweep has no point for is an error (comparison_rows).
    planned = {group_name({"name": n, "overrides": o}) for n, o, _ in points if "seed" in o}
    waiting = [pair for pair in pairs if set(pair) <= planned and not set(pair) <= set(groups)]
    comparisons = comparison_rows(groups, [pair for pair in pairs if pair not in waiting])
    if waiting:
      lines += ["", "Comparisons waiting for unfinished seed groups: "
                + ", ".join(f"{a} - {b}" for a, b in waiting) + "."]
    if comparisons:
      printed = [{**c, "p": None if c["p"] is None else f"{c['p']:.3g}"} for c in comparisons]
      table = _table(["metric", "arm", "baseline", "difference", "low", "high", "p", "n_arm",
                      "n_baseline", "verdict"], printed)
      _write_csv(workdir / "comparisons.csv", table)
      lines += ["", "Comparisons: arm minus baseline, 95% Welch interval (low, high), Welch's "
                "two-sided p; the verdict follows the interval:", "", *_markdown(table)]
  if choice:
    grid = write_tuning(workdir, choice)
    metric = choice["metric"] + (" (the accuracy at each arm's own training size)"
                                 if "{size}" in choice["metric"] else "")
    lines += ["", f"Tuning: {choice['field']} chosen per arm by {metric} on the validation "
              f"slice ({choice['splits'][1]}, trained on {choice['splits'][0]}); the test split "
              "was not used to choose. Chosen: " + ", ".join(
                  f"{r['arm']} {choice['values'][r['key']]}" for r in
                  {r["key"]: r for r in choice["grid"]}.values()) + ".", "", *_markdown(grid)]
  (workdir / "results.md").write_text("\n".join(lines) + "\n")
  _plot(summaries, workdir / "results.png")
  print("\n".join(lines))
  return rows


def _sizes_text(sizes) -> str:
  """`24, 32` for a tuple; `24, 32, 40 (trained at 32), ...` for a mapping by training size."""
  if isinstance(sizes, Mapping):
    return "; ".join(f"{', '.join(map(str, v))} (trained at {k})" for k, v in sizes.items())
  return ", ".join(map(str, sizes))


def grid_note(configs, sizes: Sequence[int]) -> str:
  """Which test sizes are not multiples of each model's total subsampling factor (traced
  by `progressive.commands.arch`): there the last feature map does not tile the image."""
  from progressive.analysis import controls  # pylint: disable=import-outside-toplevel

  grids = {}
  for config in configs:
    key = json.dumps(config.model.to_dict(), sort_keys=True, default=str)
    if key not in grids:
      num_classes = pipeline.dataset_info(config.data).num_classes
      grids[key] = (config.model.name, controls.grid(config.model, sizes, num_classes))
  if not grids:
    return ""
  parts = sorted({f"{stride} ({', '.join(sorted({n for n, g in grids.values() if g['total_stride'] == stride}))})"
                  f": {', '.join(map(str, g['misaligned'])) or 'none'}"
                  for _, g in grids.values() for stride in [g["total_stride"]]})
  return ("Grid alignment, total subsampling factor (models): the test sizes that are not "
          "multiples of it, where the last feature map does not tile the image: "
          + "; ".join(parts) + ".")


def _plot(summaries, path: epath.Path) -> None:
  """Accuracy against test size, overall and per family: one line per point, or per seed
  group (the mean, with the spread over seeds shaded)."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  lines, names = {}, {}
  for s in summaries:
    group = seed_group(s["overrides"])
    key = ("point", s["name"]) if group is None else ("seeds", group)
    names.setdefault(key, s["name"] if group is None else group_name(s))
    lines.setdefault(key, []).append(s)
  groups = list(dict.fromkeys(g for s in summaries for r in s["eval"].values() for g in r))
  fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.6), squeeze=False)
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
  fig.savefig(str(path), dpi=110)
  plt.close(fig)
