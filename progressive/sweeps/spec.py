"""A sweep file, loaded once into a `Sweep`, and the language its points are written in.

    from progressive.sweeps import spec
    sweep = spec.load("configs/antialias.py:smoke", common={"data.data_dir": "/data"})
    for point in sweep.expand():  # Point(name, overrides, config)
      ...

A sweep file is a config file that defines `get_sweep(arg)` beside `get_config(arg)`: a
list of override dicts, one per point, whose keys are dotted config fields
(`{"model.downsample": "blur", "model.blur_size": 3}`) and an optional `"name"`
(`point_name`). `product`, `zip_axes` and `with_seeds` build such lists. It may also
define `get_tuning(arg)` (`Tuning`), `get_ensemble_sizes(arg)`, `get_finetune(arg)` and
`get_comparisons(arg)`. `parse_arg` turns the file's `arg` into typed values once, so its
hooks test fields instead of strings. This is the only module of `progressive.sweeps` a
config file imports.
"""

import ast
import dataclasses
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import ml_collections
from etils import epath

from progressive import config_files


def product(**axes: Sequence[Any]) -> list[dict[str, Any]]:
  """Every combination of the axes: `product(a=[1, 2], b=[3])` -> `[{a: 1, b: 3}, {a: 2, b: 3}]`."""
  keys = list(axes)
  return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


def zip_axes(**axes: Sequence[Any]) -> list[dict[str, Any]]:
  """Axes walked together: `zip_axes(a=[1, 2], b=[3, 4])` -> `[{a: 1, b: 3}, {a: 2, b: 4}]`."""
  lengths = {len(v) for v in axes.values()}
  if len(lengths) != 1:
    lengths = {k: len(v) for k, v in axes.items()}
    raise ValueError(f"zip_axes needs axes of one length, got {lengths}.")
  return [dict(zip(axes, values)) for values in zip(*axes.values())]


def with_seeds(points: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> list[dict[str, Any]]:
  """Every point once per seed: `seed` set and `_seed<N>` added to its name. Aggregation
  then also reports the mean and standard deviation over the seeds of each point (the
  points whose overrides differ only in `seed`: a seed group)."""
  out = []
  for point in points:
    for seed in seeds:
      named = {"name": f"{point['name']}_seed{seed}"} if "name" in point else {}
      out.append({**point, "seed": seed, **named})
  return out


def _to_bool(text: str) -> bool:
  lowered = text.lower()
  if lowered not in ("true", "1", "yes", "false", "0", "no"):
    raise ValueError(f"{text!r} is not a boolean (True or False)")
  return lowered in ("true", "1", "yes")


def _converter(default):
  """`(default, convert)` of one `parse_arg` option: `convert` is a function of the text
  or a tuple of the values allowed; a bare default converts by its type."""
  if isinstance(default, tuple):
    default, kind = default
  else:
    kind = _to_bool if isinstance(default, bool) else type(default)
  if isinstance(kind, (tuple, list)):
    allowed = tuple(kind)

    def kind(text, allowed=allowed):  # pylint: disable=function-redefined
      if text not in allowed:
        raise ValueError(f"{text!r} is not one of {list(allowed)}")
      return text

  return default, kind


def parse_arg(arg: str | None, *, presets: Mapping[str, str] | None = None,
              **options) -> ml_collections.ConfigDict:
  """A config file's `arg` as typed values, parsed once (big_vision's `parse_arg`).

  `options` name each switch and its default, or `(default, convert)` where `convert`
  turns the text into the value (a type, a function, or a tuple of the strings allowed):
  `parse_arg("smoke,lr=0.1", family=("", ("vgg11", "resnet18")), smoke=False, lr=0.4)`
  gives `family="", smoke=True, lr=0.1`. `arg` is comma-separated `name=value` parts; a
  bare `name` sets a boolean switch, and a bare word that names no switch is the value of
  the first option (`"resnet18"` -> `family="resnet18"` above). `presets` name whole
  variants: `{"rerun_photos": "protocol=rerun,photos"}` expands a part `rerun_photos`.
  `ValueError` names an unknown part or a value its option refuses.
  """
  kinds = {name: _converter(default) for name, default in options.items()}
  presets = dict(presets or {})
  parts = []
  for part in (arg or "").split(","):
    part = part.strip()
    parts += [p.strip() for p in presets[part].split(",")] if part in presets else [part]
  first = next(iter(kinds), None)
  where = "" if arg == parts[0] else f" in {arg!r}"
  values = {}
  for part in filter(None, parts):
    name, sep, text = part.partition("=")
    if not sep and name in kinds:
      if not isinstance(kinds[name][0], bool):
        raise ValueError(f"Config variant {part!r}{where} needs a value: {name}=...")
      text = "True"
    elif not sep and first is not None and not isinstance(kinds[first][0], bool):
      name, text = first, part
    unknown = (f"Unknown config variant {part!r}{where}; use name=value parts of {sorted(kinds)}"
               + (f", one of {sorted(presets)}" if presets else "") + " or nothing")
    if name not in kinds:
      raise ValueError(unknown + ".")
    try:
      values[name] = kinds[name][1](text)
    except ValueError as e:
      bad = f"{unknown} ({name}: {e})." if not sep else f"Bad config variant {part!r}{where}: {e}."
      raise ValueError(bad) from e
  return ml_collections.ConfigDict({name: values.get(name, default)
                                    for name, (default, _) in kinds.items()})


def split_flag(flag: str) -> tuple[str, str | None]:
  """`"configs/x.py:smoke"` -> `("configs/x.py", "smoke")`."""
  path, _, arg = flag.partition(":")
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


def check_point_name(name: str) -> None:
  """`ValueError` unless `name` is a plain folder name, so that its point trains inside
  the sweep folder (`DIR/<name>/`): not empty, not `.` or `..`, no path separator."""
  if not name:
    rule = "it is empty"
  elif name == ".":
    rule = "it names the sweep folder itself"
  elif name == "..":
    rule = "it names the folder above"
  elif "/" in name or "\\" in name:
    rule = "it holds a path separator"
  elif "\0" in name:
    rule = "it holds a NUL character"
  else:
    return
  raise ValueError(f"Sweep point name {name!r} is not a plain folder name: {rule}; a point "
                   "trains into <sweep folder>/<name>/, so give it a plain folder name.")


def arm_key(overrides: Mapping[str, Any]) -> str:
  """What a point is without its seed: its other overrides (the arm tuning chooses for)."""
  return json.dumps({k: v for k, v in overrides.items() if k not in ("seed", "name")},
                    sort_keys=True, default=str)


def seed_group(overrides: Mapping[str, Any]) -> str | None:
  """The seed group of a point with a `seed` override, its `arm_key` (None without a
  seed): points that differ only in `seed` share it, whatever their names."""
  return arm_key(overrides) if "seed" in overrides else None


def group_name(name: str, seed: int) -> str:
  """A seed group's name: its first point's `name` without its `seed` part (the
  `_seed<N>` of `with_seeds`, or the `seed=<N>` of a `field=value` name), else the name."""
  for part in (f"_seed{seed}", f"_seed={seed}"):
    if name.endswith(part) and name != part:
      return name[:-len(part)]
  if name.startswith(f"seed={seed}_"):
    return name[len(f"seed={seed}_"):]
  return name.replace(f"_seed={seed}_", "_", 1)


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]):
  """A copy of `config` with dotted-key overrides applied (unknown keys are a `KeyError`)."""
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


class Point(NamedTuple):
  """One point of a sweep: its folder name, its overrides and its config."""
  name: str
  overrides: dict[str, Any]
  config: ml_collections.ConfigDict


@dataclasses.dataclass(frozen=True)
class Tuning:
  """`get_tuning(arg)`: each arm (the points that differ only in `seed`) is trained once
  per value of `grid` for `field` on `train_split`, and the value with the best `metric`
  on `eval_split` (a slice of the training split: the test split never chooses) is then
  the arm's setting for all its seeds. `metric` is a column of results.csv;
  `"acc@{size}"` names the accuracy at the arm's own last stage size."""

  field: str
  grid: tuple
  metric: str
  train_split: str = "train[:90%]"
  eval_split: str = "train[90%:]"

  @classmethod
  def from_dict(cls, given: Mapping[str, Any]) -> "Tuning":
    """The spec of `get_tuning`, checked: `ValueError` for one that cannot work."""
    missing = {"field", "grid", "metric"} - set(given)
    if missing or not given.get("grid"):
      raise ValueError("get_tuning must give 'field', a non-empty 'grid' and 'metric'; "
                       f"missing {sorted(missing)}.")
    unknown = set(given) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"get_tuning gives unknown keys {sorted(unknown)}.")
    tuning = cls(**{**given, "grid": tuple(given["grid"])})
    if tuning.eval_split.split("[")[0] != tuning.train_split.split("[")[0]:
      raise ValueError(
          f"get_tuning's eval_split {tuning.eval_split!r} must be a slice of the training split "
          f"{tuning.train_split!r} (the test split is never used to choose)."
      )
    return tuning


def _ensemble_sizes(sizes) -> tuple[int, ...] | dict[int, tuple[int, ...]]:
  if isinstance(sizes, Mapping):
    return {int(k): tuple(int(s) for s in v) for k, v in sizes.items()}
  return tuple(int(s) for s in sizes or ())


def _finetune(given: Mapping[str, Any] | None) -> dict[str, Any] | None:
  if given is None:
    return None
  missing = {"sizes", "epochs", "lr"} - set(given)
  if missing:
    raise ValueError(
        f"get_finetune must give 'sizes', 'epochs' and 'lr'; missing {sorted(missing)}.")
  if not float(given["epochs"]) > 0 or not float(given["lr"]) > 0:
    raise ValueError("get_finetune's epochs and lr must be positive, got "
                     f"{given['epochs']} and {given['lr']}.")
  return dict(given)


@dataclasses.dataclass(frozen=True, eq=False)
class Sweep:
  """A sweep file loaded once (`load`): every hook it defines, called with its `arg`.

  `base` is `get_config(arg)` with the `common` overrides (`--set`) applied; `overrides`
  are `get_sweep(arg)`'s points (`expand` makes their configs); `tuning` is
  `get_tuning(arg)` or None; `ensemble_sizes` (`get_ensemble_sizes`) and the FixRes
  fine-tune's `sizes` are a tuple for every point or a mapping from a point's last stage
  size to its own; `comparisons` are `get_comparisons(arg)`'s `(arm, baseline)` seed groups.
  """

  flag: str
  path: str
  arg: str | None
  base: ml_collections.ConfigDict
  overrides: tuple[dict[str, Any], ...]
  common: dict[str, Any] = dataclasses.field(default_factory=dict)
  tuning: Tuning | None = None
  ensemble_sizes: tuple[int, ...] | dict[int, tuple[int, ...]] = ()
  finetune: dict[str, Any] | None = None
  comparisons: tuple[tuple[str, str], ...] = ()

  @property
  def absolute_flag(self) -> str:
    """`--config` with the file's absolute path: a command that runs from any directory."""
    return self.path + (f":{self.arg}" if self.arg else "")

  def expand(self, choice: Mapping[str, Any] | None = None) -> list[Point]:
    """Every point, its config made afresh. A tuning `choice` (`tuning.choose`) sets its
    field per arm; a point that sets the field itself keeps its own. A point whose name
    is not a plain folder name (`check_point_name`) or is another's is a `ValueError`."""
    points = []
    for overrides in self.overrides:
      name = point_name(overrides)
      check_point_name(name)
      if any(name == p.name for p in points):
        raise ValueError(f"Two sweep points share the name {name!r}; give each its own 'name'.")
      config = apply_overrides(self.base, overrides)
      chosen = (choice or {}).get("values", {}).get(arm_key(overrides))
      if chosen is not None and choice["field"] not in overrides:
        config = apply_overrides(config, {choice["field"]: chosen})
      points.append(Point(name, dict(overrides), config))
    return points

  def with_grid(self, grid: Sequence[Any] | None) -> "Sweep":
    """This sweep with `grid` instead of its tuning grid (itself without `grid`)."""
    if not grid or self.tuning is None:
      return self
    return dataclasses.replace(self, tuning=dataclasses.replace(self.tuning, grid=tuple(grid)))


def load(flag: str, common: Mapping[str, Any] | None = None) -> Sweep:
  """The sweep file of `flag` (`"configs/x.py[:arg]"`) loaded once, `common` overrides
  applied to every point first; a `ValueError` or `KeyError` for a file, point or spec
  that cannot work, before anything runs."""
  path, arg = split_flag(flag)
  module = config_files.load_module(path, f"_sweep_config_{epath.Path(path).stem}")
  if not hasattr(module, "get_sweep"):
    raise ValueError(f"{path} defines no get_sweep(arg); it is a single run: use progressive "
                     "train.")

  def hook(name: str, default=None):
    return getattr(module, name)(arg) if hasattr(module, name) else default

  common = dict(common or {})
  sweep = Sweep(flag=flag, path=str(epath.Path(path).resolve()), arg=arg,
                base=apply_overrides(module.get_config(arg), common),
                overrides=tuple(dict(o) for o in module.get_sweep(arg)), common=common)
  sweep.expand()  # Bad overrides, names and shared names fail here.
  tuning = hook("get_tuning")
  return dataclasses.replace(
      sweep, tuning=None if tuning is None else Tuning.from_dict(tuning),
      finetune=_finetune(hook("get_finetune")),
      ensemble_sizes=_ensemble_sizes(hook("get_ensemble_sizes", ())),
      comparisons=tuple(tuple(pair) for pair in hook("get_comparisons", ())))
