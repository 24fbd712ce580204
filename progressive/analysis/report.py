"""Every analysis of one run, written to `DIR/analysis/`: figures, JSON, CSV and `report.md`.

`analyze(run, options)` computes the results (JSON-able dicts); `write_report` saves
them with their figures. `progressive analyze --workdir=DIR` calls both. Any dataset
is analysed: sections that need a built-in dataset's metadata (object scale, the
receptive field against objects, families, redrawn shifts) are left out with one line
saying why (`sections_left_out`).
"""

import dataclasses
import errno
import json
from collections.abc import Mapping, Sequence
from typing import Any

from etils import epath

from progressive.analysis import activations, controls, ensemble, interpret, plots, scale, shift
from progressive.analysis.run import (
  Run,
  RunError,
  check_comparable,
  dataset_name,
  describe,
  label,
  load_examples,
  shift_mode,
  stage_end_steps,
)
from progressive.data import pipeline
from progressive.training import workdir as workdir_lib


@dataclasses.dataclass
class Options:
  """What to compute; the defaults keep a smoke run's analysis to seconds on a CPU."""

  num_images: int = 64  # Test images for the size matrix, ensemble and shift analyses.
  sizes: Sequence[int] | None = None  # Test sizes; default: every stage and eval size.
  canvas_size: int | None = None  # Object-scale canvas; default: the checkpoint's stage size.
  # Training images batch norm is recalibrated on at each test size (0: no recalibration).
  bn_images: int = 1024
  canvas_sizes: Sequence[int] | None = None  # Canvas control sizes; default: the test sizes.
  canvas_mode: str = "edge"  # How a larger canvas is filled (controls.CANVAS_MODES).
  # Object-scale bins (photos: zoom bins); default: the dataset's (scale.SCALE_BINS,
  # photos.ZOOM_BINS).
  scale_bins: Sequence[float] | None = None
  per_bin: int = 12  # Rendered scenes per object-scale bin.
  shift_size: int | None = None  # Input size of the shift analyses; default: stage size.
  shift_mode: str | None = None  # One of shift.MODES; default: run.shift_mode(data).
  max_shift: int = 4  # Sweep from -max_shift to +max_shift px; consistency offsets within it.
  direction: Sequence[int] = (1, 0)  # Sweep direction (dx, dy).
  topk: int = 1
  stats_images: int = 64  # Batch for activation statistics of checkpoints.
  stats_train: bool = False  # Batch norm with batch statistics, as in a training step.
  stage_rows: bool = True  # Size-matrix rows: every kept stage-end checkpoint.
  compare: Mapping[str, Run] = dataclasses.field(default_factory=dict)  # More rows.
  seed: int = 0
  # Test images for per-class accuracy, the confusion matrix and the top losses
  # (None: the whole eval split, read in batches).
  interpret_images: int | None = None
  top_losses: int = 9  # Images in the top-losses grid.
  show_batch_images: int = 8  # Training inputs shown per stage (0: no show_batch).


def default_sizes(run: Run) -> list[int]:
  """Every stage size and eval size of the run's config, ascending; only the trained size
  for a `"flatten"` head, whose weights fit one input size."""
  if run.config.model.get("head") == "flatten":
    return [run.train_size]
  return sorted({s.size for s in run.stages()} | {int(s) for s in run.config.eval_sizes})


def _boundaries(run: Run) -> tuple[list[int], list[int]]:
  plan = run.stages()
  return [s.start for s in plan[1:]], [s.size for s in plan]


SECTIONS_LEFT_OUT = {  # Why a section needs a built-in dataset (scale_shapes, photos).
    "object_scale": "Object scale: left out — only the built-in datasets can redraw a scene "
                    "at another scale.",
    "receptive_field": "Receptive field against the objects: left out — only the built-in "
                       "datasets record how large each object is in its image.",
    "render": "Redrawn shifts: left out — only the built-in datasets can redraw a scene with "
              "its content moved; the shifts below pad by reflection and crop instead.",
}


def sections_left_out(info: pipeline.DatasetInfo) -> dict[str, str]:
  """`{section: one line saying why it is left out}` for a run's dataset: the sections
  that need a built-in dataset's metadata, and the families where it has none."""
  lines = {} if info.name in pipeline.BUILTINS else dict(SECTIONS_LEFT_OUT)
  if info.family_names is None:
    lines["families"] = ("Families: left out — this dataset has no class families, so every "
                         "table is over all classes and per class.")
  return lines


def _recalibrated_at(matrix: Mapping[str, Any] | None, row: str, size: int) -> float | None:
  """The accuracy of `row` at test `size` in a size matrix, if it has that cell."""
  if matrix is None or row not in matrix["rows"] or size not in matrix["sizes"]:
    return None
  return matrix["accuracy"]["all"][matrix["rows"].index(row)][matrix["sizes"].index(size)]


def analyze(run: Run, options: Options | None = None) -> dict[str, Any]:
  """All analyses of `run`: `scale_matrix`, `shift`, `activation_stats`, `ensemble`,
  `schedules`, `interpretation` (per class, confusion, top losses, show_batch),
  `curves` (loss and accuracy), `overview` (the dataset, a warning near chance, what is
  left out and how many test images each section used), each a JSON-able dict; `run`
  (a one-line description); and `images`, the arrays the top-losses and show_batch
  figures draw (not written as JSON).

  Runs in `options.compare` must share `run`'s dataset (`RunError` otherwise)."""
  options = options or Options()
  for other in options.compare.values():
    check_comparable(run, other)
  builtin = run.info.name in pipeline.BUILTINS
  if options.shift_mode == "render" and not builtin:
    raise RunError(f"shift_mode='render' redraws scenes, which only the built-in datasets "
                   f"can do; {dataset_name(run.config.data)} is shifted by padding: use "
                   "reflect, edge, constant or circular.")
  sizes = [int(s) for s in (options.sizes or default_sizes(run))]
  examples = run.test_examples(options.num_images)
  images, labels = examples["image"], examples["label"]
  rf = scale.receptive_field(run.config.model, run.train_size, run.info.num_classes)

  checkpoints = {run.step: run}

  def at(step: int) -> Run:  # Each checkpoint restored once.
    if step not in checkpoints:
      checkpoints[step] = run.at_step(step)
    return checkpoints[step]

  steps = stage_end_steps(run) if options.stage_rows else [run.step]
  rows = {**{label(at(s)): at(s) for s in steps}, **options.compare}
  latest = label(run)
  logits = {name: scale.predict_sizes(r.predict, images, sizes) for name, r in rows.items()}
  matrix = scale.size_matrix_from_logits(logits, labels, run.info)
  matrix["train_sizes"] = [int(r.train_size) for r in rows.values()]
  matrix["steps"] = [int(r.step) for r in rows.values()]
  canvas = int(options.canvas_size or run.train_size)
  calibration = None
  if options.bn_images and run.has_batch_norm:
    calibration = load_examples(run.config.data, run.config.data.train_split, options.bn_images)["image"]
  canvas_sizes = [int(s) for s in (options.canvas_sizes or sizes)]
  scale_result = {
      "size_matrix": matrix,
      # The controls: recomputed batch-norm statistics, canvas without resampling, grid.
      "size_matrix_bn": controls.bn_size_matrix(rows, images, labels, sizes, calibration)
      if calibration is not None else None,
      "canvas": controls.canvas_matrix(
          run, images, labels, canvas_sizes, calibration, mode=options.canvas_mode),
      "grid": controls.grid(run.config.model, sorted({*sizes, *canvas_sizes}), run.info.num_classes),
      "batch_norm": bool(run.has_batch_norm),
      # Objects' sizes in their images: only the built-in datasets record them.
      "receptive_field": scale.rf_coverage(rf, examples.get("object_scale", []), sizes),
      # Scenes redrawn at chosen object scales (photos: zooms): only the built-in
      # datasets can do that.
      "object_scale": scale.object_scale_accuracy(
          run.predictor(canvas), run.info, canvas_size=canvas, bin_edges=options.scale_bins,
          per_bin=options.per_bin, seed=options.seed, features_rf=rf,
      ) if builtin else None,
  }

  shift_size = int(options.shift_size or run.train_size)
  mode = options.shift_mode or shift_mode(run.config.data)
  shift_args = dict(size=shift_size, mode=mode, max_shift=options.max_shift)
  predict_view = shift.view_predictor(run)  # A grown canvas at its own side (flatten: its frame).
  shift_result = {
      "sweep": shift.shift_sweep(
          predict_view, examples, run.info, direction=options.direction,
          topk=options.topk, **shift_args),
      "consistency": shift.shift_consistency(
          predict_view, examples, run.info, seed=options.seed, **shift_args),
      # Over one whole subsampling period along x, y and the diagonal, every object whole.
      "period": shift.period_sweep(
          predict_view, examples, run.info, size=shift_size, mode=mode,
          period=scale_result["grid"]["total_stride"], seed=options.seed),
  }

  ensemble_result = ensemble.ensemble_from_logits(logits[latest], labels, run.info)
  ensemble_result["flip_tta"] = {"size": int(run.train_size), **ensemble.flip_tta_summary(
      run.predictor(run.train_size), images, labels, run.info)}

  stats_images = run.test_examples(options.stats_images)["image"]
  checkpoint_rows = activations.checkpoint_stats([run], stats_images, train=options.stats_train)
  recorded = activations.read_stats(run.workdir)
  if recorded:
    source, over_training = "recorded", recorded
  else:  # This checkpoint's rows are the last of them: not computed (and compiled) twice.
    source = "checkpoints"
    over_training = activations.checkpoint_stats(
        [at(s) for s in run.steps if s < run.step], stats_images, train=options.stats_train
    ) + checkpoint_rows
  stats_result = {
      "source": source,
      "layers": activations.layers_in_order(checkpoint_rows),
      "checkpoint": {"step": run.step, "size": run.train_size, "train": options.stats_train,
                     "num_images": len(stats_images), "rows": checkpoint_rows},
      "over_training": over_training,
  }

  # fastai's ClassificationInterpretation, show_batch and the loss curves.
  interpretation, top_images = interpret.interpret_run(
      run, num_images=options.interpret_images, top_losses=options.top_losses)
  batches = (interpret.show_batch(run, options.show_batch_images)
             if options.show_batch_images else [])
  interpretation["show_batch"] = [
      {"stage": b["stage"], "size": b["size"], "seed": b["seed"],
       "classes": [run.info.class_names[int(c)] for c in b["label"]]} for b in batches]

  num_test = int(run.info.num_test)
  warning = interpret.chance_warning(
      interpretation["accuracy"], run.info.num_classes, run.train_size,
      recalibrated=_recalibrated_at(scale_result["size_matrix_bn"], latest, run.train_size))
  overview = {
      "dataset": {"name": dataset_name(run.config.data), "source": run.info.name,
                  "num_classes": int(run.info.num_classes),
                  "class_names": list(run.info.class_names),
                  "family_names": list(run.info.family_names or []) or None,
                  "num_train": int(run.info.num_train), "num_test": num_test,
                  "eval_split": str(run.config.data.eval_split),
                  "train_split": str(run.config.data.train_split),
                  "augment": str(run.config.data.augment)},
      "warning": warning,
      "sections_left_out": sections_left_out(run.info),
      # How many of the num_test test images each section used.
      "test_images": {
          "interpretation": interpretation["num_images"],
          "size_matrix": int(matrix["num_images"]),
          "shift": int(shift_result["sweep"]["num_images"]),
          "period": int(shift_result["period"]["num_images"]),
          "ensemble": int(len(labels)),
          "activation_stats": int(len(stats_images)),
      },
      "calibration_images": None if calibration is None else int(len(calibration)),
  }

  return {
      "run": describe(run),
      "overview": overview,
      "interpretation": interpretation,
      "curves": interpret.training_curves(run),
      "scale_matrix": scale_result,
      "shift": shift_result,
      "activation_stats": stats_result,
      "ensemble": ensemble_result,
      "schedules": run.schedule_curves(),
      "images": {"top_losses": top_images, "show_batch": batches},
  }


def figures(run: Run, results: Mapping[str, Any]) -> dict[str, Any]:
  """`{file stem: Figure}` for every figure of `results` (from `analyze`)."""
  boundaries, stage_sizes = _boundaries(run)
  scale_result, stats = results["scale_matrix"], results["activation_stats"]
  order = stats["layers"] or None
  # The receptive field against objects: only where objects' sizes are known.
  rf = scale_result["receptive_field"]
  rf = rf if rf["median_object_scale"] is not None else None
  interpretation, images = results["interpretation"], results["images"]
  return {
      "curves": plots.training_curves(results["curves"]),
      **({"show_batch": plots.show_batch(images["show_batch"], run.info.class_names)}
         if images["show_batch"] else {}),
      "confusion_matrix": plots.confusion_matrix(interpretation),
      **({"top_losses": plots.top_losses(interpretation, images["top_losses"])}
         if interpretation["top_losses"] else {}),
      "size_matrix": plots.size_matrix(scale_result["size_matrix"], rf),
      **({"size_matrix_bn": plots.size_matrix(scale_result["size_matrix_bn"], rf)}
         if scale_result["size_matrix_bn"] is not None else {}),
      **({"object_scale": plots.object_scale(scale_result["object_scale"])}
         if scale_result["object_scale"] is not None else {}),
      "jaggedness": plots.jaggedness(results["shift"]["sweep"]),
      "ensemble": plots.ensemble(results["ensemble"]),
      "layer_stats": plots.layer_stats(
          stats["over_training"], layers=order, boundaries=boundaries, stage_sizes=stage_sizes),
      "colorful_dimension": plots.colorful_dimension(
          stats["over_training"], layers=order, boundaries=boundaries),
      "schedules": plots.schedules(
          results["schedules"], logged=run.metrics("train").to_dict("records")),
  }


# CSV files, from the results: the interpretation's tables with class names.
TABLES = {
    "confusion_matrix.csv": lambda results: interpret.confusion_csv(results["interpretation"]),
    "per_class.csv": lambda results: interpret.per_class_csv(results["interpretation"]),
}
JSON_FILES = ("overview", "interpretation", "curves", "scale_matrix", "shift", "activation_stats",
              "ensemble", "schedules")


def _fmt(value, spec: str = ".3f") -> str:
  return "n/a" if value is None else format(value, spec)


def _matrix_tables(matrix: Mapping[str, Any], corner: str, misaligned: Sequence[int]) -> list[str]:
  """One markdown table per group (all, then families): rows by sizes, sizes that are
  not multiples of the total stride marked with a dagger."""
  sizes = [f"{s}†" if s in misaligned else str(s) for s in matrix["sizes"]]
  lines = []
  for group, table in matrix["accuracy"].items():
    lines += [f"**{group}**", "", f"| {corner} | " + " | ".join(sizes) + " |",
              "|" + " --- |" * (len(sizes) + 1)]
    for row, values in zip(matrix["rows"], table):
      lines.append(f"| {row} | " + " | ".join(_fmt(v) for v in values) + " |")
    lines.append("")
  return lines


def _grid_note(grid: Mapping[str, Any]) -> str:
  marked = ", ".join(str(s) for s in grid["misaligned"]) or "none"
  return (f"Total stride {grid['total_stride']} px (`progressive arch`): sizes marked † are not "
          f"multiples of it, so the last feature map does not tile the image evenly ({marked}).")


def _interval(value, ci, spec: str = ".3f") -> str:
  return _fmt(value, spec) + ("" if ci is None else f" [{_fmt(ci[0], spec)}, {_fmt(ci[1], spec)}]")


def _period_lines(period: Mapping[str, Any]) -> list[str]:
  """The shift measures over one subsampling period, with bootstrap 95% intervals."""
  inside = period["inside"]
  lines = [
      "### Over one subsampling period", "",
      f"Shifts {period['shifts'][0]}..{period['shifts'][-1]} px: one whole period of the "
      f"network's {period['period']} px subsampling grid, along x, y and the diagonal, at "
      f"{period['size']} px ({period['mode']}, {period['canvas']} px canvas), {period['n_images']} "
      "images; bootstrap 95% "
      "intervals over images in brackets."
      + ("" if inside is None else
         f" The canvas grows by {(period['canvas'] - period['size']) // 2} px on each side, so "
         f"every object stays whole: {inside['would_leave']} of {inside['total']} would have "
         f"left a {period['size']} px canvas at some shift." if period["canvas"] > period["size"]
         else f" {inside['left_out']} of {inside['total']} images were left out (their camera "
         "moves would leave their split's region)."), "",
      "| direction | top-1 correctness changes | predicted class changes (fraction of neighbours) "
      "| mean abs. change of p(true class) |", "| --- | --- | --- | --- |",
  ]
  for direction, m in period["directions"].items():
    lines.append(
        f"| {direction} | {_interval(m['mean_changes'], m['mean_changes_ci'], '.2f')} | "
        f"{_interval(m['pred_change_rate'], m['pred_change_rate_ci'])} | "
        f"{_interval(m['prob_change'], m['prob_change_ci'])} |")
  lines += ["", f"Consistency over {period['pairs']} random pairs of shifts within the period per "
            f"image: {_interval(period['consistency'], period['consistency_ci'])}.", ""]
  return lines


def _names(names: Sequence[str], most: int = 12) -> str:
  shown = ", ".join(names[:most])
  return shown + (f", ... ({len(names) - most} more)" if len(names) > most else "")


def _of(n: int, total: int, *, start: bool = False) -> str:
  """`"12 of 120"`, or `"all 120"` (`"All"` to start a sentence)."""
  return f"{n} of {total}" if n != total else f"{'All' if start else 'all'} {total}"


def _overview_lines(results: Mapping[str, Any]) -> list[str]:
  """The report's first lines: a warning near chance, the run, the dataset, how many
  test images each section used, and the families' left-out line."""
  ov = results["overview"]
  data, used, total = ov["dataset"], ov["test_images"], ov["dataset"]["num_test"]
  lines = ["# Analysis", ""]
  if ov["warning"]:
    lines += [f"**{ov['warning']}**", ""]
  lines += [results["run"], ""]
  families = (f" Class families: {', '.join(data['family_names'])}."
              if data["family_names"] else "")
  lines += [
      f"Dataset: {data['name']}, {data['num_classes']} classes ({_names(data['class_names'])}); "
      f"{data['num_train']} training images ({data['train_split']}), {total} test images "
      f"({data['eval_split']}).{families}", "",
      f"Test images each section used, of the {total} in {data['eval_split']}:", "",
      "| section | test images |", "| --- | --- |",
      "| per-class accuracy, confusion matrix, top losses | "
      f"{_of(used['interpretation'], total)} |",
      f"| size matrix, its controls, multi-size ensemble, flip TTA (`--num_images`) | "
      f"{_of(used['size_matrix'], total)} |",
      f"| shifts: sweep and consistency | {_of(used['shift'], total)} |",
      f"| shifts over one subsampling period | {_of(used['period'], total)} |",
      f"| activation statistics of the checkpoint (`--stats_images`) | "
      f"{_of(used['activation_stats'], total)} |", "",
      "Numbers: [overview.json](overview.json)", "",
  ]
  if "families" in ov["sections_left_out"]:
    lines += [ov["sections_left_out"]["families"], ""]
  return lines


def _run_lines(results: Mapping[str, Any]) -> list[str]:
  """show_batch and the loss and accuracy curves."""
  interp, curves = results["interpretation"], results["curves"]
  data = results["overview"]["dataset"]
  lines = ["## Training inputs (show_batch)", ""]
  if interp["show_batch"]:
    count = len(interp["show_batch"][0]["classes"])
    lines += [
        f"The first {count} training inputs of each stage, as the pipeline made them "
        f"(augment={data['augment']!r}, at the stage's size): the start of the first batch each "
        "stage trained on.", "",
        "| stage | size | classes |", "| --- | --- | --- |",
        *(f"| {b['stage']} | {b['size']} px | {', '.join(b['classes'])} |"
          for b in interp["show_batch"]),
        "", "![show_batch](show_batch.png)", "",
    ]
  else:
    lines += ["Not drawn (show_batch_images=0).", ""]
  ev = curves["eval"]
  lines += [
      "## Loss and accuracy", "",
      "Training loss and accuracy (each point the mean over the steps since the last) and the "
      f"evaluation on {data['eval_split']} at each stage's size, against steps; stage boundaries "
      "dashed.", "",
  ]
  if ev["step"]:
    lines += ["| step | size | eval accuracy | eval loss |", "| --- | --- | --- | --- |",
              *(f"| {st} | {sz} px | {_fmt(a)} | {_fmt(l)} |"
                for st, sz, a, l in zip(ev["step"], ev["size"], ev["accuracy"], ev["loss"])), ""]
  else:
    lines += ["No evaluation at a stage's size was logged in metrics.jsonl.", ""]
  lines += ["![loss and accuracy](curves.png)", "", "Numbers: [curves.json](curves.json)", ""]
  return lines


def _interpretation_lines(results: Mapping[str, Any], most_rows: int = 40) -> list[str]:
  """fastai's ClassificationInterpretation: per class, confusion, top losses."""
  interp = results["interpretation"]
  total = results["overview"]["dataset"]["num_test"]
  rows = interp["per_class"]
  lines = [
      "## Per-class accuracy", "",
      f"{_of(interp['num_images'], total, start=True)} test images ({interp['split']}) at the "
      "training size, "
      f"{interp['size']} px, with the batch-norm statistics stored there (step {interp['step']}): "
      f"accuracy {_fmt(interp['accuracy'])}.", "",
  ]
  shown = rows
  if len(rows) > most_rows:
    shown = sorted(rows, key=lambda r: (r["accuracy"] is None, r["accuracy"] or 0))[:most_rows]
    lines += [f"The {most_rows} classes with the lowest accuracy (all {len(rows)} in "
              "[per_class.csv](per_class.csv)):", ""]
  lines += ["| class | images | correct | accuracy |", "| --- | --- | --- | --- |",
            *(f"| {r['class']} | {r['count']} | {r['correct']} | {_fmt(r['accuracy'])} |"
              for r in shown),
            "", "Numbers: [per_class.csv](per_class.csv)", "",
            "## Confusion matrix", "",
            "True class down, predicted class across; counts of the same test images "
            "([confusion_matrix.csv](confusion_matrix.csv)).", "",
            "![confusion matrix](confusion_matrix.png)", "",
            "Most confused pairs:", ""]
  if interp["most_confused"]:
    lines += ["| true | predicted | count |", "| --- | --- | --- |",
              *(f"| {m['true']} | {m['predicted']} | {m['count']} |"
                for m in interp["most_confused"]),
              ""]
  else:
    lines += ["None: no test image was misclassified.", ""]
  lines += ["## Top losses", ""]
  if interp["top_losses"]:
    lines += [
        f"The {len(interp['top_losses'])} test images with the highest cross-entropy, each with "
        "its true class, the predicted class, the loss and the predicted class's probability.", "",
        "| image | true | predicted | loss | probability | p(true) |",
        "| --- | --- | --- | --- | --- | --- |",
        *(f"| {t['index']} | {t['true']} | {t['predicted']} | {t['loss']:.3f} | "
          f"{t['probability']:.3f} | {t['p_true']:.3f} |" for t in interp["top_losses"]),
        "", "![top losses](top_losses.png)", "",
    ]
  else:
    lines += ["No test image was evaluated.", ""]
  lines += ["Numbers: [interpretation.json](interpretation.json)", ""]
  return lines


def _scale_question(results: Mapping[str, Any]) -> str:
  """The size matrix's question, in the words of the run's dataset."""
  data = results["overview"]["dataset"]
  matrix = results["scale_matrix"]["size_matrix"]
  if data["source"] == pipeline.BUILTIN:
    question = ("Which sizes does each checkpoint recognise, for shapes (outlines, scale "
                "invariant) and textures (fixed pixel periods)?")
  elif data["family_names"]:
    question = (f"Which sizes does each checkpoint recognise, for each class family "
                f"({', '.join(data['family_names'])})?")
  else:
    question = f"Which sizes does each checkpoint recognise the {data['num_classes']} classes at?"
  return (f"{question} {_of(matrix['num_images'], data['num_test'])} test images, zoomed whole "
          "to each size, with the batch-norm statistics stored at the training size.")


def _flip_tta_lines(tta: Mapping[str, Any], groups: Sequence[str]) -> list[str]:
  """The ensemble section's flip test-time augmentation at the training size."""
  size = tta["size"]
  pick = lambda entry, g: _fmt(entry["all"] if g == "all" else entry["family"][g])
  return [
      "### Flip test-time augmentation", "",
      f"Does averaging the softmax over each image and its horizontal mirror beat the image "
      f"alone at the training size ({size} px; `--config.eval_tta=flip` does this in "
      "training's evaluation)?", "",
      "| | " + " | ".join(groups) + " |", "|" + " --- |" * (len(groups) + 1),
      f"| {size} px | " + " | ".join(pick(tta["single"], g) for g in groups) + " |",
      f"| {size} px, flip TTA | " + " | ".join(pick(tta["tta"], g) for g in groups) + " |",
      "", f"Gain of flip TTA: {_fmt(tta['gain'], '+.3f')}.", "",
  ]


def markdown(results: Mapping[str, Any]) -> str:
  """`report.md`: what each figure answers, its key numbers, links to figure and JSON."""
  sm = results["scale_matrix"]
  matrix, rf, obj = sm["size_matrix"], sm["receptive_field"], sm["object_scale"]
  sweep, cons = results["shift"]["sweep"], results["shift"]["consistency"]
  ens, stats = results["ensemble"], results["activation_stats"]
  groups = list(matrix["accuracy"])
  grid = sm["grid"]
  left = results["overview"]["sections_left_out"]
  lines = [*_overview_lines(results), *_run_lines(results), *_interpretation_lines(results),
           "## Scale: accuracy by test size", "", _scale_question(results), ""]
  lines += _matrix_tables(matrix, "trained \\ test px", grid["misaligned"])
  lines.append(_grid_note(grid))
  lines.append(f"Final receptive field (one position of the pooled map): {rf['features_rf']} px"
               + ("." if rf["median_object_scale"] is None else
                  f"; the median object ({_fmt(rf['median_object_scale'], '.2f')} of the canvas) "
                  f"is wider than it from {_fmt(rf['uncovered_from_size'], '.1f')} px on."))
  if "receptive_field" in left:
    lines += ["", left["receptive_field"]]
  lines += ["", "![size matrix](size_matrix.png)", ""]
  bn = sm["size_matrix_bn"]
  lines += ["### Control: batch-norm statistics recomputed at each test size", ""]
  if bn is None:
    lines += [("The model has no batch norm: nothing to recalibrate." if not sm["batch_norm"]
               else "Not computed (bn_images=0)."), ""]
  else:
    lines += [
        f"The same images, with every batch-norm layer's statistics recomputed at the test size "
        f"from {bn['calibration_images']} training images (`progressive.training.recalibrate`). Where "
        "this recovers what the stored statistics lost, the drop was the statistics', not the "
        "features'.", "",
    ]
    lines += _matrix_tables(bn, "trained \\ test px", grid["misaligned"])
    lines += ["![size matrix, recalibrated](size_matrix_bn.png)", ""]
  cv = sm["canvas"]
  lines += [
      "### Control: the canvas changed without resampling", "",
      f"The {cv['image_size']} px test images centre-cropped or padded ({cv['mode']}) to each "
      "canvas size: every object keeps its exact pixels, only the feature-map grid and the "
      f"border change (latest checkpoint, trained at {cv['train_size']} px).", "",
  ]
  lines += _matrix_tables(cv, "statistics \\ canvas px", grid["misaligned"])
  if obj is not None and obj.get("quantity") == "zoom":
    lines += [
        "## Scale: accuracy by zoom", "",
        "Patches cut afresh from the test regions of the photographs at a "
        f"{obj['canvas_size']} px canvas, {obj['count'][0]} per bin: at which zooms (stored px "
        f"per source px; training drew {obj['train_range'][0]} to {obj['train_range'][1]}) is "
        "each family recognised?", "",
        "| zoom | " + " | ".join(_fmt(c, ".2f") for c in obj["bin_centers"]) + " |",
        "|" + " --- |" * (len(obj["bin_centers"]) + 1),
    ]
    for group, values in obj["accuracy"].items():
      lines.append(f"| {group} | " + " | ".join(_fmt(v, ".2f") for v in values) + " |")
    lines += ["", "![accuracy by zoom](object_scale.png)", ""]
  elif obj is not None:
    lines += [
        "## Scale: accuracy by object scale", "",
        f"Scenes redrawn at a {obj['canvas_size']} px canvas, {obj['count'][0]} per bin: at "
        "which object sizes are shapes and textures recognised? The red line is where the "
        "receptive field stops covering the object.", "",
        "| object scale | " + " | ".join(_fmt(c, ".2f") for c in obj["bin_centers"]) + " |",
        "|" + " --- |" * (len(obj["bin_centers"]) + 1),
    ]
    for group, values in obj["accuracy"].items():
      lines.append(f"| {group} | " + " | ".join(_fmt(v, ".2f") for v in values) + " |")
    lines += ["", "![object scale](object_scale.png)", ""]
  if "object_scale" in left:
    lines += [left["object_scale"], ""]
  total = results["overview"]["dataset"]["num_test"]
  lines += [
      "Numbers: [scale_matrix.json](scale_matrix.json)", "",
      "## Shifts", "",
      f"How stable are predictions under 1-pixel translations ({sweep['mode']} shifts at "
      f"{sweep['size']} px on a {sweep['canvas']} px canvas, {_of(sweep['n_images'], total)} "
      "test images)?", "",
      *([left["render"], ""] if "render" in left else []),
      f"- Jaggedness (Azulay & Weiss, top-{sweep['topk']}, shifts "
      f"{sweep['shifts'][0]}..{sweep['shifts'][-1]} px along {tuple(sweep['direction'])}): {_fmt(sweep['mean_changes'], '.2f')} changes per "
      f"image; {_fmt(sweep['frac_changed'], '.1%')} of images change at least once.",
  ]
  for name, value in sweep["family"].items():
    lines.append(f"  - {name}: {_fmt(value['mean_changes'], '.2f')} changes, "
                 f"{_fmt(value['frac_changed'], '.1%')} change")
  lines += [
      f"- Consistency (Zhang, two random shifts within +-{cons['max_shift']} px): "
      f"{_fmt(cons['consistency'], '.1%')}"
      + "".join(f"; {k} {_fmt(v, '.1%')}" for k, v in cons["family"].items()),
      "", "![jaggedness](jaggedness.png)", "", *_period_lines(results["shift"]["period"]),
      "Numbers: [shift.json](shift.json)", "",
      "## Multi-size ensemble", "",
      "Does averaging the softmax over several input sizes beat every single size? "
      f"({_of(matrix['num_images'], total)} test images, as in the size matrix)", "",
      "| | " + " | ".join(groups) + " |", "|" + " --- |" * (len(groups) + 1),
  ]
  for size in ens["sizes"]:
    entry = ens["single"][str(size)]
    lines.append(f"| {size} px | " + " | ".join(
        _fmt(entry["all"] if g == "all" else entry["family"][g]) for g in groups) + " |")
  lines += [
      "| ensemble | " + " | ".join(
          _fmt(ens["ensemble"]["all"] if g == "all" else ens["ensemble"]["family"][g])
          for g in groups) + " |",
      "", f"Gain over the best single size ({ens['best_single_size']} px): "
      f"{_fmt(ens['gain_over_best'], '+.3f')}.", "",
      "![ensemble](ensemble.png)", "",
      *_flip_tta_lines(ens["flip_tta"], groups),
      "Numbers: [ensemble.json](ensemble.json)", "",
      "## Activation statistics", "",
      "How healthy were the activations (fastai's ActivationStats: mean, std, fraction <= 0.05, "
      "histograms over [0, 10] of every layer with parameters)? "
      + ("Recorded during training (`activation_stats.jsonl`)." if stats["source"] == "recorded"
         else "Not recorded during training: computed on a test batch for every kept checkpoint."),
      "", "| layer | mean | std | near zero |", "| --- | --- | --- | --- |",
  ]
  for row in stats["checkpoint"]["rows"]:
    lines.append(
        f"| {row['layer']} | {row['mean']:.3f} | {row['std']:.3f} | {row['near_zero']:.3f} |")
  lines += [
      "", f"(checkpoint at step {stats['checkpoint']['step']}, {stats['checkpoint']['size']} px, "
      f"{stats['checkpoint']['num_images']} test images, batch norm in "
      f"{'training' if stats['checkpoint']['train'] else 'inference'} mode)", "",
      "![layer statistics](layer_stats.png)", "",
      "![colorful dimension](colorful_dimension.png)", "",
      "Numbers: [activation_stats.json](activation_stats.json)", "",
      "## Schedules", "",
      "Learning rate and momentum over steps, stage boundaries dashed.", "",
      "![schedules](schedules.png)", "", "Numbers: [schedules.json](schedules.json)", "",
  ]
  return "\n".join(lines)


def write_report(run: Run, out_dir=None, options: Options | None = None) -> epath.Path:
  """Runs `analyze` and writes `report.md`, the JSON, CSV (`TABLES`) and PNG files to
  `out_dir` (default: `run.workdir / "analysis"`), each whole or not at all (a temporary
  file, then a rename); a full disk is a `WorkdirError` naming the file. Returns the path
  of `report.md`, written last."""
  out_dir = epath.Path(out_dir or run.workdir / "analysis")
  fix = ("run `progressive analyze` again, or pass --out=<a folder with room>; the run itself "
         "is untouched.")
  try:
    out_dir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
      raise
    raise workdir_lib.WorkdirError(f"Cannot create {out_dir}: {e.strerror or e}. Its disk (or "
                                   f"quota) is full: free some space there, then {fix}") from None
  results = analyze(run, options)

  def write(path, writer):
    workdir_lib.write_output(path, writer, fix)

  for name in JSON_FILES:
    text = json.dumps(results[name], indent=1) + "\n"
    write(out_dir / f"{name}.json", lambda tmp, text=text: tmp.write_text(text))
  for name, fig in figures(run, results).items():
    write(out_dir / f"{name}.png", lambda tmp, fig=fig: plots.write_png(fig, tmp))
  for name, table in TABLES.items():
    text = table(results)
    write(out_dir / name, lambda tmp, text=text: tmp.write_text(text))
  path = out_dir / "report.md"
  write(path, lambda tmp: tmp.write_text(markdown(results)))
  return path
