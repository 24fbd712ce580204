"""A finished or running training run, restored for analysis on any machine.

    run = load_run("/tmp/progressive/default")       # latest checkpoint
    logits = run.predict(images_uint8, size=48)       # resized and normalised as in training
    run.stages(), run.metrics("eval"), run.at_step(run.steps[0])

Restores without the devices that wrote the checkpoint: every array is placed on one
local device (CPU unless an accelerator is present), whatever the mesh of the run was.
"""

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pandas as pd
from etils import epath

from progressive import config as config_lib
from progressive import errors, models, schedules
from progressive.data import pipeline
from progressive.data.resize import preprocess
from progressive.training import recalibrate
from progressive.training.metrics import read_rows
from progressive.training.workdir import flatten


class RunError(errors.Error, ValueError):
  """A workdir that holds no run, or not the checkpoint asked for."""


def checkpoint_steps(workdir) -> list[int]:
  """Steps of the complete checkpoints in `workdir/checkpoints`, ascending."""
  root = epath.Path(workdir) / "checkpoints"
  if not root.exists():
    return []
  steps = []
  for path in root.iterdir():
    # A checkpoint being written (a running run) is not finalized yet.
    if path.name.isdigit() and ocp.path.step.is_checkpoint_finalized(path):
      steps.append(int(path.name))
  return sorted(steps)


def _abstract_on(tree, device: jax.Device):
  """Orbax array metadata to `ShapeDtypeStruct`s on one device."""
  sharding = jax.sharding.SingleDeviceSharding(device)

  def leaf(meta):
    if hasattr(meta, "shape") and hasattr(meta, "dtype"):
      return jax.ShapeDtypeStruct(tuple(meta.shape), meta.dtype, sharding=sharding)
    return meta

  return jax.tree.map(leaf, tree)


def restore_state(path, device: jax.Device | None = None) -> dict[str, Any]:
  """A checkpoint's `state` item as nested dicts (`params`, `batch_stats`, `opt_state`,
  `step`) of arrays on `device` (default: the first local device)."""
  device = device or jax.local_devices()[0]
  path = epath.Path(path)
  tree = ocp.StandardCheckpointHandler().metadata(path).tree
  return ocp.StandardCheckpointer().restore(path, _abstract_on(dict(tree), device))


def _read_json_item(path) -> dict | None:
  """A checkpoint's JSON item (`meta`, `data`), or None if it has none."""
  path = epath.Path(path)
  if not path.exists():
    return None
  return ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(path)


@functools.lru_cache(maxsize=32)
def make_logits_fn(model, mean, std) -> Callable:
  """`(variables, images [B, S, S, 3] in 0..255, size) -> float32 logits [B, classes]`, jitted;
  one function per model and normalisation in a process, so runs of one architecture
  share its compiled programs."""

  def logits(variables, images, size):
    return jnp.asarray(model.apply(variables, preprocess(images, size, mean, std)), jnp.float32)

  return jax.jit(logits, static_argnums=2)


@dataclasses.dataclass(frozen=True, eq=False)
class Run:
  """One checkpoint of a run: its config, model and variables, and the run's records."""

  workdir: epath.Path
  config: ml_collections.ConfigDict
  info: pipeline.DatasetInfo
  model: Any  # flax.linen.Module, built with bn_axis_name=None.
  variables: dict[str, Any]  # {"params", "batch_stats"} on one device.
  step: int
  stage: int
  steps: tuple[int, ...]  # Every checkpoint kept in the workdir.
  device: jax.Device
  logits_fn: Callable = dataclasses.field(repr=False)  # make_logits_fn, shared by at_step.
  # recalibrate.make_moments_fn, shared by at_step and recalibrated.
  moments_fn: Callable | None = dataclasses.field(default=None, repr=False)

  @property
  def apply_fn(self) -> Callable:
    return self.model.apply

  @property
  def train_size(self) -> int:
    """The image size of the stage this checkpoint was written in."""
    return self.stages()[self.stage].size

  def at_step(self, step: int) -> "Run":
    """The same run at another kept checkpoint (the model and its compiles are shared)."""
    variables, stage, _ = _restore(self.workdir, step, self.steps, self.stages(), self.device)
    return dataclasses.replace(self, variables=variables, step=int(step), stage=stage)

  def stages(self) -> list[schedules.Stage]:
    """The stage plan: size, batch size and global step range of every stage."""
    return schedules.stage_plan(self.config.stages, self.config.batch_size, self.info.num_train)

  def schedule_fns(self) -> tuple[Callable, Callable]:
    """The run's `(lr_fn, momentum_fn)` of the global step."""
    opt = self.config.opt
    return schedules.make_schedules(
        self.stages(), opt.lr_max, cycle=opt.cycle, div=opt.div, div_final=opt.div_final,
        pct_start=opt.pct_start, moms=tuple(opt.moms),
    )

  def schedule_curves(self) -> dict[str, list]:
    """LR and momentum at every step, with the stage boundaries and sizes, as lists."""
    plan = self.stages()
    if plan[-1].end == 0:  # Imported without training: no schedule.
      return {"step": [], "lr": [], "momentum": [], "boundaries": [],
              "stage_sizes": [s.size for s in plan]}
    lr_fn, momentum_fn = self.schedule_fns()
    steps = np.arange(plan[-1].end)
    return {
        "step": steps.tolist(),
        "lr": np.asarray(lr_fn(steps)).tolist(),
        "momentum": np.asarray(momentum_fn(steps)).tolist(),
        "boundaries": [s.start for s in plan[1:]],
        "stage_sizes": [s.size for s in plan],
    }

  def predict(self, images, size: int | None = None, *, batch_size: int = 256) -> np.ndarray:
    """Logits `[N, classes]` for images `[N, S, S, 3]` (uint8, or float in 0..255) at `size`.

    Images are resized to `size` (default: this checkpoint's stage size) and normalised
    exactly as in training; batches are padded to one shape so each size compiles once.
    """
    size = int(size or self.train_size)
    images = np.asarray(images)
    n = len(images)
    chunk = max(1, min(batch_size, n))
    out = []
    for start in range(0, n, chunk):
      batch = images[start:start + chunk]
      pad = chunk - len(batch)
      if pad:
        batch = np.concatenate([batch, np.zeros((pad, *batch.shape[1:]), batch.dtype)])
      batch = jax.device_put(batch, self.device)
      out.append(np.asarray(self.logits_fn(self.variables, batch, size))[:chunk - pad])
    return np.concatenate(out) if out else np.zeros((0, self.info.num_classes), np.float32)

  def probabilities(self, images, size: int | None = None, **kwargs) -> np.ndarray:
    """Softmax of `predict`, `[N, classes]`."""
    return np.asarray(jax.nn.softmax(self.predict(images, size, **kwargs), axis=-1))

  def predictor(self, size: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """`images -> logits` at a fixed size, for the analyses that take a predict function."""
    return functools.partial(self.predict, size=size)

  def inputs(self, images, size: int | None = None) -> jax.Array:
    """Images as the model sees them: resized and normalised, float32 `[N, size, size, 3]`."""
    size = int(size or self.train_size)
    images = jax.device_put(np.asarray(images), self.device)
    return preprocess(images, size, self.info.mean, self.info.std)

  @property
  def has_batch_norm(self) -> bool:
    return recalibrate.has_batch_norm(self.variables)

  def recalibrated(self, size: int, images=None, *, num_images: int = 1024) -> "Run":
    """This checkpoint with batch-norm statistics recomputed at `size`
    (`progressive.training.recalibrate`) from `images` (default: the first `num_images` of the
    training split, host-transformed without augmentation). The same run if it has no
    batch norm."""
    if not self.has_batch_norm:
      return self
    if images is None:
      images = load_examples(self.config.data, self.config.data.train_split, num_images)["image"]
    variables = recalibrate.recalibrate(
        self.model.apply, self.variables, images, int(size), self.info.mean, self.info.std,
        moments_fn=self.moments_fn,
    )
    return dataclasses.replace(self, variables=variables)

  def metrics(self, event: str | None = None) -> pd.DataFrame:
    """`metrics.jsonl` as a table, optionally only the rows of one `event`."""
    rows = read_rows(self.workdir / "metrics.jsonl")
    if event is not None:
      rows = [r for r in rows if r["event"] == event]
    return pd.DataFrame(rows)

  def test_examples(self, num: int | None = None) -> dict[str, np.ndarray]:
    """The first `num` examples of the run's eval split (`load_examples`)."""
    return load_examples(self.config.data, self.config.data.eval_split, num)


def load_examples(data_config: Mapping[str, Any], split: str, num: int | None = None):
  """The first `num` examples of a split as arrays: `image` uint8 `[N, S, S, 3]` and
  `label`; for `scale_shapes` also `family` and what `render` needs to redraw the scenes
  (`object_scale`, `center`, `seed`), for `photos` `family` and what `photos.cut` needs
  to cut them again (`zoom`, `center`). A TFDS dataset's images are eval-transformed
  (resized and centre-cropped to `data.image_size`, as evaluation sees them)."""
  if data_config["name"] in pipeline.BUILTINS:
    return pipeline.builtin_examples(data_config, split, num=num)[0]
  reader = pipeline.open_split(data_config, split)
  count = reader.num_examples if num is None else min(num, reader.num_examples)
  images, labels = [], []
  for batch in reader.eval_batches(min(count, 256) or 1):
    keep = batch["mask"] & (batch["unreadable"] == 0)  # Undecodable files (skip_unreadable) out.
    images.append(batch["image"][keep])
    labels.append(batch["label"][keep])
    if sum(map(len, labels)) >= count:
      break
  return {"image": np.concatenate(images)[:count], "label": np.concatenate(labels)[:count]}


def shift_mode(data_config: Mapping[str, Any]) -> str:
  """How shifted views of a dataset's examples are made by default: `scale_shapes` scenes
  are redrawn and `photos` patches cut again with the camera moved (`"render"`: nothing
  enters from outside the image); other images are padded by reflection and cropped
  (`"reflect"`)."""
  return "render" if data_config["name"] in pipeline.BUILTINS else "reflect"


def images_data(config, images: str) -> ml_collections.ConfigDict:
  """`config.data` for a folder of images labelled by the run's classes: an image-folder
  dataset (`IMAGES` is both splits) with `data.class_names` the run's, its normalisation
  and image size, unreadable files left out, and for an imported network its source's
  centre-crop fraction (`config.pretrained`)."""
  root = os.path.abspath(os.path.expanduser(str(images))).rstrip(os.sep)
  if not os.path.isdir(root):
    raise RunError(f"--images={images} is not a folder; give one laid out as "
                   "IMAGES/<class>/<image>, with the run's class names as folder names.")
  info = pipeline.dataset_info(config.data)
  data = ml_collections.ConfigDict(config.data.to_dict())
  data.name, data.builder_config = pipeline.FOLDER, "default"
  data.data_dir, data.train_split = os.path.dirname(root), os.path.basename(root)
  data.eval_split = data.train_split
  data.class_names, data.image_size = tuple(info.class_names), int(info.image_size)
  data.mean, data.std = tuple(info.mean), tuple(info.std)
  data.augment, data.skip_unreadable = "none", True
  source = config.get("pretrained")
  if source is not None and source.get("arch"):
    data.eval_crop = source.crop_px / source.resize_px
  return data


def load_run(
    workdir,
    step: int | None = None,
    *,
    data_dir: str | None = None,
    device: jax.Device | None = None,
    images: str | None = None,
) -> Run:
  """Restores a run's checkpoint at `step` (default: the latest) for analysis.

  `data_dir` overrides the TFDS directory stored in the config (a run trained on another
  machine); `device` is where the variables go (default: the first local device).
  `images`, a folder `IMAGES/<class>/<image>` whose class folders are named by the run's
  classes (any of them), becomes the run's data, both splits (`images_data`): test
  images for a network imported without data, or other images for a trained one.
  """
  workdir = epath.Path(os.path.abspath(os.path.expanduser(str(workdir))))  # Orbax wants it absolute.
  config_path = workdir / "config.json"
  if not config_path.exists():
    raise RunError(f"{workdir} holds no run: there is no config.json.")
  stored = json.loads(config_path.read_text())
  config = ml_collections.ConfigDict(config_lib.with_defaults(stored))  # Fields added since.
  if data_dir is not None:
    config.data.data_dir = data_dir
  if images is not None:
    config.data = images_data(config, images)
  steps = checkpoint_steps(workdir)
  if not steps:
    raise RunError(f"{workdir} holds no checkpoint yet (looked in {workdir / 'checkpoints'}).")
  step = steps[-1] if step is None else int(step)
  device = device or jax.local_devices()[0]
  try:
    info = pipeline.dataset_info(config.data)
  except ValueError as e:
    if images is None:
      raise
    raise RunError(f"--images={images}: {errors.one_line(e)}") from None
  plan = schedules.stage_plan(config.stages, config.batch_size, info.num_train)
  variables, stage, meta = _restore(workdir, step, steps, plan, device)
  model = models.build(config.model, num_classes=info.num_classes, bn_axis_name=None)
  check_model_fits(workdir, step, config, info, model, variables, plan[stage].size,
                   stored=meta.get("config"))
  return Run(
      workdir=workdir, config=config, info=info, model=model, variables=variables,
      step=step, stage=stage, steps=tuple(steps), device=device,
      logits_fn=make_logits_fn(model, tuple(info.mean), tuple(info.std)),
      moments_fn=recalibrate.make_moments_fn(model.apply, tuple(info.mean), tuple(info.std)),
  )


def _shapes(tree, prefix: str = "") -> dict[str, tuple[int, ...]]:
  """`{"a/b/kernel": shape}` of a nested dict of arrays (or `ShapeDtypeStruct`s), in the
  dicts' own order (a model's variables: the order its layers were called in)."""
  shapes = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      shapes.update(_shapes(value, f"{prefix}{key}/"))
    else:
      shapes[f"{prefix}{key}"] = tuple(value.shape)
  return shapes


def check_model_fits(workdir, step: int, config, info: pipeline.DatasetInfo, model,
                     variables: Mapping[str, Any], size: int, *,
                     stored: Mapping[str, Any] | None = None) -> None:
  """`RunError` in one line unless the model `config.json` describes fits the checkpoint
  at `step` (restored as `variables`, trained at `size` px).

  A checkpoint stores the config it was written with (`stored`, from its meta item:
  `checkpoints.save`), and no field of `config.model` may change on resume, so the two
  are compared field by field and the first that differs is named. Then the parameter
  shapes are compared (the only check when the checkpoint holds no config), and the
  first parameter that differs, in the model's order, is named: a model of another
  width, or for another class count (config.json's dataset edited), which would
  otherwise fail with a long flax traceback when first applied.
  """
  where = epath.Path(workdir) / "config.json"
  if stored:
    trained = flatten(config_lib.with_defaults(stored)["model"])
    current = flatten(json.loads(json.dumps(config.model.to_dict())))
    fields = [k for k in sorted(set(trained) | set(current)) if trained.get(k) != current.get(k)]
    if fields:
      more = f" (and config.model.{', config.model.'.join(fields[1:])})" if fields[1:] else ""
      raise RunError(
          f"config.model.{fields[0]} is {current.get(fields[0])!r} in {where} but "
          f"{trained.get(fields[0])!r} in the checkpoint at step {step}{more}: the checkpoint's "
          "parameters fit only the model they were trained as. Put config.json's model back "
          "as the checkpoint has it (its meta item holds the config it was written with)."
      )
  want = {}

  def init(rng, images):  # Shapes read while tracing: eval_shape's output sorts the names.
    variables = model.init(rng, images)
    want.update(_shapes(variables))
    return variables

  jax.eval_shape(init, jax.random.key(0), jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
  have = _shapes({k: v for k, v in variables.items() if k in ("params", "batch_stats")})
  # In the model's order, parameters first; then what only the checkpoint has.
  names = [*sorted(want, key=lambda n: not n.startswith("params/")),
           *(n for n in have if n not in want)]
  for name in names:
    if want.get(name) != have.get(name):
      raise RunError(
          f"The checkpoint at step {step} in {workdir} does not fit the model {where} "
          f"describes ({config.model.name} for {info.num_classes} classes of "
          f"{dataset_name(config.data)}): {name} has shape {have.get(name)} in the checkpoint "
          f"and {want.get(name)} in that model. Put config.json back as the run wrote it."
      )


def dataset_name(data_config: Mapping[str, Any]) -> str:
  """How a report names a run's dataset: `scale_shapes/small`, `cifar10`, `the image
  folder ROOT`."""
  if data_config["name"] == pipeline.FOLDER:
    return f"the image folder {data_config['data_dir']}"
  if data_config["name"] in pipeline.BUILTINS:
    return f"{data_config['name']}/{data_config['builder_config']}"
  return pipeline.tfds_name(data_config)


def check_comparable(run: Run, other: Run) -> None:
  """`RunError` in one line unless `other` was trained on `run`'s dataset (name, builder
  config, class names and count; for an image folder its root too), so that its rows
  can score `run`'s test images. TFDS and built-in datasets are named, not placed: the
  same dataset prepared in another data_dir compares."""
  mine, theirs = run.config.data, other.config.data
  why = None
  for field in ("name", "builder_config"):
    if mine[field] != theirs[field]:
      why = f"data.{field} is {theirs[field]!r} there and {mine[field]!r} here"
      break
  if why is None and mine["name"] == pipeline.FOLDER and (
      os.path.realpath(str(mine["data_dir"])) != os.path.realpath(str(theirs["data_dir"]))):
    why = f"data.data_dir is {theirs['data_dir']!r} there and {mine['data_dir']!r} here"
  if why is None and run.info.num_classes != other.info.num_classes:
    why = f"it has {other.info.num_classes} classes and this run {run.info.num_classes}"
  if why is None and tuple(run.info.class_names) != tuple(other.info.class_names):
    diff = next(i for i, (a, b) in enumerate(zip(run.info.class_names, other.info.class_names))
                if a != b)
    why = (f"its class {diff} is {other.info.class_names[diff]!r} and this run's "
           f"{run.info.class_names[diff]!r}")
  if why is not None:
    raise RunError(
        f"Cannot compare {other.workdir} with {run.workdir}: {why}. Compared runs must be "
        "trained on the same dataset, since their rows score this run's test images."
    )


def _restore(workdir, step: int, steps, plan, device) -> tuple[dict[str, Any], int, dict]:
  """`({"params", "batch_stats"}, stage, meta)` of the checkpoint at `step` (meta: its
  `step`, `stage` and `config`, `{}` if it has none)."""
  if step not in steps:
    raise RunError(f"{workdir} has no checkpoint at step {step}; it has steps {list(steps)}.")
  path = epath.Path(workdir) / "checkpoints" / str(step)
  state = restore_state(path / "state", device)
  meta = _read_json_item(path / "meta") or {}
  if "stage" in meta:
    stage = int(meta["stage"])
  else:  # The stage that step `step - 1`, the last one trained, belongs to.
    stage = schedules.stage_at(plan, max(step - 1, 0)).index
  variables = {"params": state["params"]}
  if state.get("batch_stats"):
    variables["batch_stats"] = state["batch_stats"]
  return variables, stage, meta


def stage_end_steps(run: Run) -> list[int]:
  """Kept checkpoints that end a stage, up to `run.step`, and `run.step` itself."""
  ends = {s.end for s in run.stages()}
  steps = [s for s in run.steps if s in ends and s < run.step]
  return steps + [run.step]


def label(run: Run) -> str:
  """`"<stage size> px (step <n>)"`: a checkpoint's row label in a size matrix."""
  return f"{run.train_size} px (step {run.step})"


def stage_end_runs(run: Run) -> dict[str, Run]:
  """The run at each kept checkpoint that ends a stage (and at `run.step`), by `label`:
  the rows of a train-size by test-size matrix from one progressive run."""
  runs = [run if s == run.step else run.at_step(s) for s in stage_end_steps(run)]
  return {label(r): r for r in runs}


def describe(run: Run) -> str:
  """One line: model, dataset, step, stage and the stage sizes."""
  sizes = " -> ".join(str(s.size) for s in run.stages())
  return (
      f"{run.config.model.name} on {dataset_name(run.config.data)}, "
      f"step {run.step} (stage {run.stage}, {run.train_size} px); stages {sizes} px; "
      f"checkpoints {list(run.steps)}"
  )
