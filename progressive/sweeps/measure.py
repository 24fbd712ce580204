"""One point of a sweep on disk: its status (finished, summarised, trained under another
config, seconds trained, the device kinds it trained on) and its summary,
`DIR/<name>/sweep_point.json`.

A summary holds the point's overrides, final eval rows and best test size, then the
union of the measures its `Settings` ask for. Each measure is a small object with a
`name` and a `run(inputs)` returning its summary entries (the shape of big_vision's
evaluators): `Budget` always, and beyond a tuning run's summary `Stability`, `Shift`,
`CanvasProtocol` (when asked), `Ensemble`, `Controls`, `Finetune` and `ObjectScale`.
They read one `Inputs`: the restored `Run`, its metrics rows, and the eval split,
training images and recalibrated logits loaded once for all of them.

A sweep's ensemble sizes and fine-tune sizes are either one tuple for every point or a
mapping from a point's last stage size to its own (sizes near each training size).
"""

import dataclasses
import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from etils import epath

from progressive import config as config_lib
from progressive import schedules
from progressive.analysis import controls, ensemble, scale, shift
from progressive.analysis import finetune as finetune_lib
from progressive.analysis import run as run_lib
from progressive.data import pipeline
from progressive.models import flops
from progressive.sweeps import folder, spec
from progressive.training import activations
from progressive.training import workdir as workdir_lib
from progressive.training.metrics import read_rows

SUMMARY_FILE = "sweep_point.json"
WALL_FILE = "sweep_wall.json"  # The seconds a point trained, over every attempt a signal stopped.
DEVICE_FILE = "sweep_device.json"  # The device kinds a point trained on, over every attempt.
# A point that stopped on a non-finite loss: why, so that the sweep neither retrains it nor
# reports it, and tuning counts its rate as one that diverged.
DIVERGED_FILE = "sweep_diverged.json"
# What a summary measures beyond its options; a summary of an older version is remade.
# 2: period shifts, object scale, the scale controls; 3: act_near_zero after ReLUs;
# 4: train_gflops counted from the architecture (XLA's count is train_gflops_xla);
# 5: shifts of every scale_shapes test image on a canvas grown by the largest shift
# (nothing left out), with the images each shift measure used (shift_images).
MEASURES = 5
OBJECT_PER_BIN = 24  # Rendered scenes per object-scale bin.
LOGITS_FILE = "eval_logits.npz"  # Test logits at the training size, for the seed ensemble.


def for_point(sizes, config) -> tuple[int, ...]:
  """A point's own sizes of `sizes`: a tuple as it is, a mapping by the point's last
  stage size (`{32: (24, 32, 40)}`; none for a size it does not name)."""
  if isinstance(sizes, Mapping):
    sizes = {int(k): v for k, v in sizes.items()}.get(int(config.stages[-1]["size"]), ())
  return tuple(int(s) for s in sizes or ())


def finetune_for_point(recipe: Mapping[str, Any] | None, config) -> dict[str, Any] | None:
  """A point's FixRes fine-tune: `recipe` (`sizes`, `epochs`, `lr`) with its own sizes, or
  None without a spec or without sizes for this point."""
  if not recipe:
    return None
  sizes = for_point(recipe["sizes"], config)
  if not sizes:
    return None
  return {"sizes": list(sizes), "epochs": float(recipe["epochs"]), "lr": float(recipe["lr"])}


# The status of a point on disk.


def total_steps(config) -> int:
  info = pipeline.dataset_info(config.data)
  return schedules.stage_plan(config.stages, config.batch_size, info.num_train)[-1].end


def finished(point_dir: epath.Path, config) -> bool:
  """Whether `point_dir` holds a checkpoint at the point's last step."""
  steps = run_lib.checkpoint_steps(point_dir)
  return bool(steps) and max(steps) >= total_steps(config)


def record_diverged(point_dir: epath.Path, message: str) -> None:
  """Marks a point stopped by a non-finite loss (`DIVERGED_FILE`: the error's message)."""
  epath.Path(point_dir).mkdir(parents=True, exist_ok=True)
  folder.write_text(epath.Path(point_dir) / DIVERGED_FILE,
                    json.dumps({"diverged": message}, indent=1) + "\n")


def diverged(point_dir: epath.Path) -> str | None:
  """Why a point stopped on a non-finite loss (`record_diverged`), or None."""
  path = epath.Path(point_dir) / DIVERGED_FILE
  return json.loads(path.read_text())["diverged"] if path.exists() else None


def read_summary(point_dir: epath.Path) -> dict | None:
  """A point's `sweep_point.json`, or None before it is summarised."""
  path = epath.Path(point_dir) / SUMMARY_FILE
  return json.loads(path.read_text()) if path.exists() else None


def summarized(point_dir: epath.Path, config, settings: "Settings") -> bool:
  """Whether `point_dir` holds a summary of the point to its last step made with
  `settings`: a point copied from another machine without its checkpoints."""
  summary = read_summary(point_dir)
  return (summary is not None and summary.get("step", 0) >= total_steps(config)
          and summary.get("options") == settings.options(config))


def trained_otherwise(point_dir: epath.Path, config) -> dict[str, tuple[Any, Any]]:
  """The fields that change what training computes (neither run control nor resumable,
  `config_lib.FIELDS`) whose value in `point_dir/config.json` differs from
  `config`'s: `{field: (stored, now)}`; empty where they agree or nothing is stored."""
  path = epath.Path(point_dir) / "config.json"
  if not path.exists():
    return {}
  return workdir_lib.config_differences(json.loads(path.read_text()), json.loads(config.to_json()),
                                        ignore=config_lib.RESUMABLE_FIELDS)


def trained_otherwise_text(point_dir: epath.Path, config) -> str:
  """`trained_otherwise` as one phrase, `field: stored -> now; ...` (empty where they agree)."""
  return "; ".join(f"{k}: {a!r} -> {b!r}"
                   for k, (a, b) in trained_otherwise(point_dir, config).items())


def trained_seconds(point_dir: epath.Path) -> float | None:
  """The wall seconds the sweep spent training the point in `point_dir` (`WALL_FILE`),
  or None where it was not trained by a sweep that recorded it."""
  path = epath.Path(point_dir) / WALL_FILE
  return json.loads(path.read_text())["wall_seconds"] if path.exists() else None


def record_trained_seconds(point_dir: epath.Path, seconds: float) -> None:
  """Writes `WALL_FILE`: what `trained_seconds` reads."""
  point_dir = epath.Path(point_dir)
  point_dir.mkdir(parents=True, exist_ok=True)
  folder.write_text(point_dir / WALL_FILE, json.dumps({"wall_seconds": seconds}) + "\n")


def current_device() -> dict[str, Any]:
  """The device this process trains on: `kind` (`jax.devices()[0].device_kind`, e.g.
  "NVIDIA H200" or "cpu"), `platform` ("gpu", "cpu", "tpu") and `count` (devices)."""
  devices = jax.devices()
  return {"kind": str(devices[0].device_kind), "platform": str(devices[0].platform),
          "count": len(devices)}


def record_device(point_dir: epath.Path, device: Mapping[str, Any] | None = None) -> None:
  """Adds `device` (default: `current_device()`) to the point's `DEVICE_FILE` unless it
  is there: called before each attempt to train it, so a point resumed on another kind of
  device lists both."""
  point_dir = epath.Path(point_dir)
  device = dict(device or current_device())
  devices = trained_devices(point_dir)
  if device not in devices:
    point_dir.mkdir(parents=True, exist_ok=True)
    folder.write_text(point_dir / DEVICE_FILE, json.dumps({"devices": [*devices, device]}) + "\n")


def trained_devices(point_dir: epath.Path) -> list[dict[str, Any]]:
  """The devices `record_device` listed for a point; where the sweep did not train it
  (a printed `progressive train` command), those its `metrics.jsonl` names (each call of
  training writes a `device` row); else none."""
  path = epath.Path(point_dir) / DEVICE_FILE
  if path.exists():
    return json.loads(path.read_text())["devices"]
  devices = []
  for row in read_rows(epath.Path(point_dir) / "metrics.jsonl"):
    device = {k: row.get(k) for k in ("kind", "platform", "count")}
    if row["event"] == "device" and device not in devices:
      devices.append(device)
  return devices


def device_label(device: Mapping[str, Any]) -> str:
  """`"NVIDIA H200 (gpu)"`, `"cpu"`, `"4 x TPU v4 (tpu)"`: one device kind as tables print it."""
  kind, platform = device["kind"], device["platform"]
  label = kind if kind.lower() == platform.lower() else f"{kind} ({platform})"
  return label if int(device.get("count", 1)) == 1 else f"{device['count']} x {label}"


def device_summary(devices: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """What a summary records of the devices a point trained on (`trained_devices`):
  `device_kind`, `device_platform`, `device_count` and `device` (`device_label`); several
  kinds (a point resumed elsewhere) are joined by " + ", which aggregation refuses. Empty
  where none was recorded (trained outside a sweep, or before sweeps recorded it)."""
  if not devices:
    return {}
  def joined(values):
    return " + ".join(str(v) for v in dict.fromkeys(values))
  return {"device_kind": joined(d["kind"] for d in devices),
          "device_platform": joined(d["platform"] for d in devices),
          "device_count": devices[0]["count"] if len(devices) == 1 else joined(
              d["count"] for d in devices),
          "device": joined(device_label(d) for d in devices)}


# The measures: what each entry of a summary says, as functions of their inputs.


def budget_summary(rows: Sequence[Mapping[str, Any]], plan: Sequence[schedules.Stage],
                   image_flops: Mapping[int, float] | None = None) -> dict:
  """What training cost: images seen; `train_gflops`, counted from the architecture:
  each stage's images times `image_flops[size]`, one training image's FLOPs at its size
  (`flops.train_flops`: forward and backward, backward twice the forward), the same on
  every backend (None without `image_flops`); and `train_gflops_xla`, each stage's steps
  times XLA's count for its compiled step over all devices, which depends on the
  backend (None where a stage's count is missing)."""
  xla = {(r["size"], r["batch_size"]): r.get("flops") for r in rows
         if r["event"] == "compile" and r["kind"] == "train"}
  per_stage = [xla.get((s.size, s.batch_size)) for s in plan]
  return {
      "images_seen": sum(s.num_steps * s.batch_size for s in plan),
      "train_gflops": None if image_flops is None else
      sum(s.num_steps * s.batch_size * image_flops[s.size] for s in plan) / 1e9,
      "train_gflops_xla": None if None in per_stage else
      sum(s.num_steps * f for s, f in zip(plan, per_stage)) / 1e9,
  }


def _mean(values: Sequence[float]) -> float | None:
  return sum(values) / len(values) if values else None


def stability_summary(point_dir: epath.Path, rows: Sequence[Mapping[str, Any]]) -> dict:
  """What training recorded of its stability: the steps skipped for a non-finite loss
  (`skip_nonfinite`), and from `activation_stats.jsonl` (if recorded; a step recorded
  twice, by a resumed run, counts once):
  - `act_near_zero`: the dead-unit measure, the fraction of ReLU outputs `<= 0.05`
    (layers `*/relu`), averaged over every ReLU and every recorded step of the run;
  - `act_near_zero_preact`: fastai's figure, the same fraction of the convolutions'
    outputs (`*/conv`, before batch norm and ReLU: a bias-free convolution's are about
    half negative by sign alone), averaged the same way;
  - `act_std`: the convolutions' output std at the last record.
  A run recorded before ReLU outputs were has no `act_near_zero`."""
  out = {"skipped_steps": sum(int(r.get("skipped", 0)) for r in rows if r["event"] == "train")}
  path = epath.Path(point_dir) / activations.STATS_FILE
  stats = {(r["step"], r["layer"]): r for r in (read_rows(path) if path.exists() else [])}
  if stats:
    last = max(step for step, _ in stats)
    convs = [r for r in stats.values() if r["layer"].endswith("/conv")]
    relus = [r for r in stats.values() if activations.is_relu(r["layer"])]
    out.update({
        "act_std": _mean([r["std"] for r in convs if r["step"] == last]),
        "act_near_zero": _mean([r["near_zero"] for r in relus]),
        "act_near_zero_preact": _mean([r["near_zero"] for r in convs]),
    })
  return {k: v for k, v in out.items() if v is not None}


def shift_summary(run, examples, *, num_images: int, max_shift: int) -> dict:
  """Jaggedness and consistency of a finished run at its last stage's size, on the first
  `num_images` of `examples` (0: all of them): within `max_shift` px (Azulay & Weiss,
  Zhang), and over one whole subsampling period of the traced total stride along x, y and
  the diagonal (`shift.period_sweep`; averaged over the directions). `scale_shapes`
  scenes are shifted on a canvas grown by the largest shift on each side, so every one
  is measured (`shift_canvas`, `shift_period_canvas`: the sides the network saw);
  `photos` patches whose camera moves would leave their region are left out
  (`shift_inside`). `shift_images` and `shift_period_images` say how many images each
  measure used."""
  size = int(run.config.stages[-1]["size"])
  examples = {k: v[:num_images or None] for k, v in examples.items()}
  # The grown canvas at its own size, not zoomed; a flatten head sees its central frame.
  predict = shift.view_predictor(run)
  mode = run_lib.shift_mode(run.config.data)
  args = dict(size=size, max_shift=max_shift, mode=mode)
  along = shift.shift_sweep(predict, examples, run.info, **args)
  cons = shift.shift_consistency(predict, examples, run.info, **args)
  period = controls.grid(run.config.model, [size], run.info.num_classes)["total_stride"]
  over = shift.period_sweep(predict, examples, run.info, size=size, period=period, mode=mode)

  def across(name):
    values = [d[name] for d in over["directions"].values() if d[name] is not None]
    return sum(values) / len(values) if values else None

  return {
      "shift_size": size,
      "shift_canvas": size if run.config.model.get("head") == "flatten" else along["canvas"],
      "shift_images": along["n_images"],
      "jaggedness": along["mean_changes"],
      "frac_changed": along["frac_changed"],
      "consistency": cons["consistency"],
      "jaggedness_family": {k: v["mean_changes"] for k, v in along["family"].items()},
      "consistency_family": cons["family"],
      "shift_period": period,
      "shift_period_canvas": size if run.config.model.get("head") == "flatten" else over["canvas"],
      "jag_period": across("mean_changes"),
      "pred_change": across("pred_change_rate"),
      "prob_change": across("prob_change"),
      "cons_period": over["consistency"],
      "shift_inside": over["inside"],
      "shift_period_images": over["n_images"],
  }


def canvas_summary(predict_at, examples, *, size: int, period: int, topk: int) -> dict:
  """Azulay & Weiss's canvas protocol (`shift.canvas_protocol`): each of `examples`'
  images at `size` px in a black canvas of `size + 2 * period` px (two whole periods of
  free range; 48 px for 32 px and a stride of 8, their 1.5 ratio), moved down one pixel
  at a time; `predict_at(images, side)` is `Run.predict`. Summary keys: `aw_jag_top<k>`
  (changes of top-k correctness per image, with `_ci`), `aw_changed_top<k>` (the
  fraction of images with one or more), `aw_acc_top<k>` (top-k accuracy over every
  position), `aw_canvas` and `aw_images`."""
  result = _canvas_protocol(predict_at, examples, size=size, period=period, topk=topk)
  canvas = result["canvas"]
  k = int(topk)
  return {f"aw_jag_top{k}": result["mean_changes"], f"aw_jag_top{k}_ci": result["mean_changes_ci"],
          f"aw_changed_top{k}": result["frac_changed"], f"aw_acc_top{k}": result["accuracy"],
          "aw_canvas": canvas, "aw_images": result["n_images"]}


def _canvas_protocol(predict_at, examples, *, size: int, period: int, topk: int) -> dict:
  """`shift.canvas_protocol` in a canvas two periods wider than `size` (`canvas_summary`)."""
  canvas = int(size) + 2 * int(period)
  return shift.canvas_protocol(lambda views: predict_at(views, canvas), examples["image"],
                               examples["label"], size=size, canvas=canvas, topk=topk)


def canvas_grid(point_dir, *, topk: int, num_images: int) -> dict:
  """A finished point's canvas protocol as `CanvasProtocol` measures it (its last
  stage's size, two periods of its traced total stride), on its first `num_images` test
  images: `shift.canvas_protocol`'s result, with its grid `correct` for the figure."""
  run = run_lib.load_run(point_dir)
  size = int(run.config.stages[-1]["size"])
  period = controls.grid(run.config.model, [size], run.info.num_classes)["total_stride"]
  return _canvas_protocol(run.predict, run.test_examples(num_images), size=size, period=period,
                          topk=topk)


def object_scale_summary(run, *, per_bin: int) -> dict:
  """Accuracy by object scale on `scale_shapes` scenes redrawn at the last stage's size
  (`scale.object_scale_accuracy`), per bin centre and family, with the object scale
  `rf_scale` past which the final receptive field no longer covers the object; for
  `photos`, by zoom on patches cut afresh from the test regions (no `rf_scale`)."""
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
  """A `breakdown` as summary accuracies: `accuracy`, `accuracy_<family>`."""
  return {"accuracy": result["all"], **{f"accuracy_{k}": v for k, v in result["family"].items()}}


def ensemble_summary(run, examples, sizes: Sequence[int], *, calibration=None,
                     point_dir: epath.Path | None = None,
                     recalibrated: Mapping[int, np.ndarray] | None = None) -> dict:
  """The multi-size test-time ensemble over `sizes` on `examples` (the whole eval split):
  its accuracy, overall and per family, and its gain over the best of those sizes alone;
  with `calibration` (training images) again with batch-norm statistics recomputed at
  each size, by the mean softmax (`ensemble_bn`) and the mean log-probability
  (`ensemble_logp_bn`); `recalibrated` (`controls.recalibrated_logits`, at least at `sizes`)
  saves recomputing them. With `point_dir`, the logits at the training size are written
  to `LOGITS_FILE` for the seed ensemble of `tables.add_seed_ensembles`."""
  images, labels = examples["image"], examples["label"]
  logits = scale.predict_sizes(run.predict, images, sizes)
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
  if point_dir is not None:
    size = int(run.train_size)
    at_size = logits[size] if size in logits else run.predict(images, size)
    np.savez_compressed(epath.Path(point_dir) / LOGITS_FILE, logits=np.asarray(at_size, np.float32),
                        labels=np.asarray(labels), size=size)
  return out


def finetune_summary(run, examples, recipe: Mapping[str, Any], *, calibration) -> dict:
  """Accuracy at each of `recipe["sizes"]` after FixRes's fine-tune of the classifier and
  batch norm at that size (`progressive.analysis.finetune`, `recipe["epochs"]` epochs of
  the training split at `recipe["lr"]`, batch size as in training), overall and per family."""
  batch = int(run.config.batch_size)
  steps = max(1, math.ceil(recipe["epochs"] * run.info.num_train / batch))
  train = run_lib.load_examples(run.config.data, run.config.data.train_split,
                                min(steps * batch, run.info.num_train))
  out = {}
  for size in recipe["sizes"]:
    tuned = finetune_lib.finetune(run, int(size), train["image"], train["label"], steps=steps,
                                  lr=recipe["lr"], batch_size=batch, seed=int(run.config.seed),
                                  calibration=calibration)
    correct = np.argmax(tuned.predict(examples["image"], int(size)), -1) == examples["label"]
    out[str(size)] = _accuracies(scale.breakdown(correct, examples["label"], run.info))
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
  images, labels = examples["image"], examples["label"]

  def by_size(matrix, row: int) -> dict:
    accuracy = matrix["accuracy"]
    return {str(size): {("accuracy" if g == "all" else f"accuracy_{g}"): accuracy[g][row][i]
                        for g in accuracy} for i, size in enumerate(matrix["sizes"])}

  canvas = controls.canvas_matrix(run, images, labels, sizes, calibration, mode=canvas_mode)
  out = {"eval_canvas": by_size(canvas, 0)}
  if calibration is not None:
    out["eval_canvas_bn"] = by_size(canvas, 1)
    if recalibrated is None:
      recalibrated = controls.recalibrated_logits(run, images, sizes, calibration)
    zoomed = {"run": {int(s): recalibrated[int(s)] for s in sizes}}
    out["eval_bn"] = by_size(scale.size_matrix_from_logits(zoomed, labels, run.info), 0)
  return out


# The measures as objects: a name, and `run(inputs)` returning the summary entries.


@dataclasses.dataclass
class Inputs:
  """What a trained point's measures read: the restored `run` (`analysis.run.Run`), its
  metrics `rows`, the eval `sizes` of its last evaluation and, loaded once for every
  measure that needs them, the eval split's `examples`, the `calibration` training
  images (batch-norm recalibration) and the `recalibrated` logits at each size."""

  point_dir: epath.Path
  run: run_lib.Run
  rows: list[dict[str, Any]]
  sizes: list[int]
  examples: dict[str, np.ndarray] | None = None
  calibration: np.ndarray | None = None
  recalibrated: dict[int, np.ndarray] | None = None


@dataclasses.dataclass(frozen=True)
class Budget:
  """Images seen and training GFLOPs, counted from the run's model and by XLA
  (`budget_summary`)."""
  name = "budget"

  def run(self, inputs: Inputs) -> dict:
    plan = inputs.run.stages()
    image_flops = {s.size: flops.train_flops(inputs.run.model, s.size) for s in plan}
    return budget_summary(inputs.rows, plan, image_flops)


@dataclasses.dataclass(frozen=True)
class Stability:
  """Skipped steps and the activation statistics, after the ReLUs and fastai's
  (`stability_summary`)."""
  name = "stability"

  def run(self, inputs: Inputs) -> dict:
    return stability_summary(inputs.point_dir, inputs.rows)


@dataclasses.dataclass(frozen=True)
class Shift:
  """Jaggedness and consistency within `max_shift` px and over a whole period (`shift_summary`)."""
  num_images: int
  max_shift: int
  name = "shift"

  def run(self, inputs: Inputs) -> dict:
    return shift_summary(inputs.run, inputs.examples, num_images=self.num_images,
                         max_shift=self.max_shift)


@dataclasses.dataclass(frozen=True)
class CanvasProtocol:
  """Azulay & Weiss's canvas protocol at the last stage's size with top-`topk`
  jaggedness, on the first `num_images` test images (0: all; `canvas_summary`)."""
  topk: int
  num_images: int
  name = "canvas_protocol"

  def run(self, inputs: Inputs) -> dict:
    run = inputs.run
    size = int(run.config.stages[-1]["size"])
    period = controls.grid(run.config.model, [size], run.info.num_classes)["total_stride"]
    examples = {k: v[:self.num_images or None] for k, v in inputs.examples.items()}
    return canvas_summary(run.predict, examples, size=size, period=period, topk=self.topk)


@dataclasses.dataclass(frozen=True)
class Ensemble:
  """The multi-size test-time ensemble over `sizes` (`ensemble_summary`)."""
  sizes: tuple[int, ...]
  name = "ensemble"

  def run(self, inputs: Inputs) -> dict:
    return ensemble_summary(inputs.run, inputs.examples, self.sizes, calibration=inputs.calibration,
                            point_dir=inputs.point_dir, recalibrated=inputs.recalibrated)


@dataclasses.dataclass(frozen=True)
class Controls:
  """The scale controls at every eval size (`controls_summary`)."""
  name = "controls"

  def run(self, inputs: Inputs) -> dict:
    return controls_summary(inputs.run, inputs.examples, inputs.sizes,
                            calibration=inputs.calibration, recalibrated=inputs.recalibrated)


@dataclasses.dataclass(frozen=True)
class Finetune:
  """FixRes's fine-tune at the point's own sizes (`finetune_summary`)."""
  recipe: Mapping[str, Any]
  name = "finetune"

  def run(self, inputs: Inputs) -> dict:
    return finetune_summary(inputs.run, inputs.examples, self.recipe,
                            calibration=inputs.calibration)


@dataclasses.dataclass(frozen=True)
class ObjectScale:
  """Accuracy by object scale on redrawn scenes (`object_scale_summary`)."""
  per_bin: int = OBJECT_PER_BIN
  name = "object_scale"

  def run(self, inputs: Inputs) -> dict:
    return object_scale_summary(inputs.run, per_bin=self.per_bin)


@dataclasses.dataclass(frozen=True)
class Settings:
  """What a sweep measures of each point: shifts on the first `num_shift_images` test
  images (0: all) up to `max_shift` px, the multi-size ensemble over `ensemble_sizes`,
  the scale controls with batch norm recalibrated on `bn_images` training images (0: no
  controls), FixRes's fine-tune (`finetune`: `sizes`, `epochs`, `lr`), Azulay & Weiss's
  canvas protocol with top-`canvas_topk` jaggedness on the shift measures' images (0:
  off; a forward pass per pixel of two periods per image). `tuning`: a tuning run's
  summary, its eval rows and budget alone (it is read for its metric)."""

  num_shift_images: int = 0
  max_shift: int = 4
  ensemble_sizes: tuple[int, ...] | Mapping[int, tuple[int, ...]] = ()
  bn_images: int = 0
  finetune: Mapping[str, Any] | None = None
  canvas_topk: int = 0
  tuning: bool = False

  @classmethod
  def of(cls, sweep: spec.Sweep, *, ensemble_sizes=None, finetune=None, **settings) -> "Settings":
    """`Settings` with the sweep file's ensemble sizes and fine-tune unless given."""
    return cls(ensemble_sizes=sweep.ensemble_sizes if ensemble_sizes is None else ensemble_sizes,
               finetune=sweep.finetune if finetune is None else finetune, **settings)

  def options(self, config) -> dict:
    """The summary's `options` for a point of `config` (its own ensemble and fine-tune
    sizes): a summary holding others is remade."""
    if self.tuning:
      return {"measures": "tuning"}
    options = {"num_shift_images": int(self.num_shift_images), "max_shift": int(self.max_shift),
               "ensemble_sizes": list(for_point(self.ensemble_sizes, config)),
               "measures": MEASURES}
    if self.bn_images:  # Absent when off, so summaries made before the controls existed stay valid.
      options["bn_images"] = int(self.bn_images)
    if self.canvas_topk:  # Absent when off, as bn_images.
      options["canvas_topk"] = int(self.canvas_topk)
    tune = finetune_for_point(self.finetune, config)
    if tune:
      options["finetune"] = dict(tune)
    return options

  def measures(self, config) -> list:
    """The measures of a point of `config`, in the order its summary lists them."""
    if self.tuning:
      return [Budget()]
    sizes = for_point(self.ensemble_sizes, config)
    tune = finetune_for_point(self.finetune, config)
    return [
        Budget(), Stability(), Shift(self.num_shift_images, self.max_shift),
        *([CanvasProtocol(self.canvas_topk, self.num_shift_images)] if self.canvas_topk else []),
        *([Ensemble(sizes)] if sizes else []),
        *([Controls()] if self.bn_images else []),
        *([Finetune(tune)] if tune else []),
        *([ObjectScale()] if config.data.name in pipeline.BUILTINS else []),
    ]

  def inputs(self, point_dir: epath.Path, config, rows, sizes) -> Inputs:
    """The `Inputs` of these measures, each loaded once: the whole eval split for the
    ensemble, the controls and the fine-tune (else the shift measures' images), the
    training images batch norm is recalibrated on, and the logits recomputed with them
    at the controls' and the ensemble's sizes."""
    run = run_lib.load_run(point_dir)
    inputs = Inputs(point_dir, run, rows, sizes)
    if self.tuning:
      return inputs
    ensemble_sizes = for_point(self.ensemble_sizes, config)
    whole = ensemble_sizes or self.bn_images or finetune_for_point(self.finetune, config)
    inputs.examples = run_lib.load_examples(
        config.data, config.data.eval_split,
        None if whole or not self.num_shift_images else self.num_shift_images)
    if self.bn_images and run.has_batch_norm:
      inputs.calibration = run_lib.load_examples(config.data, config.data.train_split,
                                                 self.bn_images)["image"]
      needed = sorted({int(s) for s in (*sizes, *ensemble_sizes)})
      inputs.recalibrated = controls.recalibrated_logits(run, inputs.examples["image"], needed,
                                                         inputs.calibration)
    return inputs


def summarize_point(point_dir: epath.Path, name: str, overrides, config, settings: Settings, *,
                    wall_seconds: float | None = None) -> dict:
  """Writes `point_dir/sweep_point.json`: the overrides, final eval rows, the best test
  size, the test images they are over (`eval_images`), the wall time and the device kind
  it trained on (`device_summary`; when run by the sweep), every measure of `settings`
  (`Settings.measures`; the ensemble, the controls and the fine-tune read the whole eval
  split into memory) and the wall time they took (`measure_seconds`). Returns the
  summary."""
  start = time.perf_counter()
  point_dir = epath.Path(point_dir)
  rows = read_rows(point_dir / "metrics.jsonl")
  last = max(r["step"] for r in rows if r["event"] == "eval")
  final = {r["size"]: r for r in rows if r["event"] == "eval" and r["step"] == last}
  measures = settings.measures(config)
  inputs = settings.inputs(point_dir, config, rows, sorted(final))
  summary = {
      "name": name,
      "options": settings.options(config),
      "overrides": {k: v for k, v in overrides.items() if k != "name"},
      "step": last,
      "eval": {str(size): {k: v for k, v in r.items() if k.startswith("accuracy")}
               for size, r in sorted(final.items())},
      "best_size": max(sorted(final), key=lambda size: final[size]["accuracy"]),
      "wall_seconds": wall_seconds,
      **device_summary(trained_devices(point_dir)),
  }
  if all("examples" in r for r in final.values()):  # The test images each accuracy is over.
    summary["eval_images"] = min(int(r["examples"]) for r in final.values())
  for measure in measures:
    summary.update(measure.run(inputs))
  summary["measure_seconds"] = time.perf_counter() - start
  folder.write_text(point_dir / SUMMARY_FILE, json.dumps(summary, indent=1, default=str) + "\n")
  return summary
