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
`get_comparisons(arg)` (exploratory pairs), and `get_hypotheses(arg)`: the primary
hypotheses, each a `Contrast` of seed groups' measurements (`group("flip32")["acc@40"]`)
with a predicted sign. `parse_arg` turns the file's `arg` into typed values once, so its
hooks test fields instead of strings. This is the only module of `progressive.sweeps` a
config file imports.
"""

import ast
import dataclasses
import itertools
import json
import numbers
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


def seed_by_seed(points: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> list[dict[str, Any]]:
  """`with_seeds` ordered seed by seed (every point's first seed, then every point's
  second, ...), so that a sweep stopped early holds whole seeds of every arm."""
  return [p for seed in seeds for p in with_seeds(points, (seed,))]


def arm_names(points: Sequence[Mapping[str, Any]]) -> list[str]:
  """The arms of `with_seeds` points (their names without `_seed<N>`), in order, once each."""
  return list(dict.fromkeys(p["name"].rsplit("_seed", 1)[0] for p in points))


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


def arm_of(overrides: Mapping[str, Any]) -> str:
  """The seed group (arm) a point belongs to: its `group_name`, or its name without a seed."""
  name = point_name(overrides)
  return group_name(name, overrides["seed"]) if "seed" in overrides else name


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


TUNING_SEEDS = (0, 1)  # Seeds per tuning cell: a cell's metric is their mean.
# A check of convergence (the same arms at twice the budget, at the first budget's rates:
# `progressive sweep --tuning_from`) runs two seeds, as the budget's ladder did.
CHECK_SEEDS = (0, 1)
# The px64 sweeps tune an arm chosen at an edge of its grid one value further before its
# seeds train (`Tuning.extend_edges`): hours of seeds at a rate that may not be the best
# cost far more than two tuning runs.
PX64_EXTEND_EDGES = 1


@dataclasses.dataclass(frozen=True)
class Tuning:
  """`get_tuning(arg)`: each arm (the points that differ only in `seed`) is trained once
  per value of `grid` for `field` and seed of `seeds` on `train_split`, and the value with
  the best mean `metric` over those seeds on `eval_split` (a slice of the training split:
  the test split never chooses) is then the arm's setting for all its seeds. `metric` is
  a column of results.csv; `"acc@{size}"` names the accuracy at the arm's own last stage
  size. A grid cell (arm and value) takes at least two seeds (on a validation slice of a
  few hundred images one seed's accuracy moves by several points); `pilot=True` allows
  one, for a first look whose choice says so. `arm_grids` gives the named arms (seed
  groups) their own grid instead of `grid`, for arms whose usable range lies elsewhere
  (networks without batch norm train at far lower rates). With `extend_edges` = N, an arm
  whose choice is its grid's lowest or highest value gets one more value beyond it (the
  grid's own step there: x2 or /2 for a grid of doubling rates), up to N times, before
  its seeds train (`tuning.extend_at_edges`)."""

  field: str
  grid: tuple
  metric: str
  train_split: str = "train[:90%]"
  eval_split: str = "train[90%:]"
  seeds: tuple[int, ...] = TUNING_SEEDS
  pilot: bool = False
  arm_grids: Mapping[str, tuple] = dataclasses.field(default_factory=dict)
  extend_edges: int = 0

  def grid_of(self, arm: str) -> tuple:
    """The values the arm (a seed group's name) is tuned over."""
    return self.arm_grids.get(arm, self.grid)

  @classmethod
  def from_dict(cls, given: Mapping[str, Any]) -> "Tuning":
    """The spec of `get_tuning`, checked: `ValueError` for one that cannot work, or that
    chooses on one seed per grid cell without `pilot`."""
    missing = {"field", "grid", "metric"} - set(given)
    if missing or not given.get("grid"):
      raise ValueError("get_tuning must give 'field', a non-empty 'grid' and 'metric'; "
                       f"missing {sorted(missing)}.")
    unknown = set(given) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"get_tuning gives unknown keys {sorted(unknown)}.")
    seeds = given.get("seeds", TUNING_SEEDS)
    seeds = (seeds,) if isinstance(seeds, int) else tuple(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or not all(
        isinstance(x, int) and not isinstance(x, bool) for x in seeds):
      raise ValueError(f"get_tuning's seeds must be distinct integers, got {given['seeds']!r}.")
    arm_grids = {arm: tuple(grid) for arm, grid in dict(given.get("arm_grids") or {}).items()}
    if not all(arm_grids.values()):
      raise ValueError(f"get_tuning's arm_grids must give each arm a non-empty grid, got "
                       f"{given['arm_grids']!r}.")
    extend = given.get("extend_edges", 0)
    if not isinstance(extend, int) or isinstance(extend, bool) or extend < 0:
      raise ValueError(f"get_tuning's extend_edges must be a count (0 or more), got {extend!r}.")
    tuning = cls(**{**given, "grid": tuple(given["grid"]), "seeds": seeds,
                    "pilot": bool(given.get("pilot", False)), "arm_grids": arm_grids})
    if len(seeds) < 2 and not tuning.pilot:
      raise ValueError(
          f"get_tuning chooses {tuning.field} on 1 seed per grid cell (seeds {list(seeds)}); a "
          "cell's choice is the mean over at least 2 seeds (one seed's validation accuracy "
          "moves by several points): give 'seeds': (0, 1), or mark a first look 'pilot': True.")
    if tuning.eval_split.split("[")[0] != tuning.train_split.split("[")[0]:
      raise ValueError(
          f"get_tuning's eval_split {tuning.eval_split!r} must be a slice of the training split "
          f"{tuning.train_split!r} (the test split is never used to choose)."
      )
    return tuning


_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


class Contrast:
  """A per-seed expression of seed groups' measurements: `group(name)[metric]` and
  numbers joined by `+`, `-`, `*` and `/`, e.g. the retention of textures minus that of
  shapes at 40 px, within one network:

      flip32 = group("flip32")
      flip32["acc_bn_texture@40"] / flip32["acc_bn_texture@32"]
          - flip32["acc_bn_shape@40"] / flip32["acc_bn_shape@32"]

  `metric` is a column of results.csv. The expression is a sum of terms (`parts`), each of
  one group's measurements (or a number), evaluated seed by seed within its group (the
  same network: a paired contrast); groups are independent samples (arm minus baseline,
  or an interaction between arms). A term that multiplies or divides two groups'
  measurements is refused: it has no per-seed value.
  """

  __slots__ = ("node",)

  def __init__(self, node: tuple):
    self.node = node

  @staticmethod
  def _node(value) -> tuple:
    if isinstance(value, Contrast):
      return value.node
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
      return ("const", float(value))
    raise TypeError(f"A contrast combines contrasts and numbers, not {value!r}.")

  def _op(self, op: str, other, reverse: bool = False) -> "Contrast":
    a, b = self.node, self._node(other)
    return Contrast(("op", op, b, a) if reverse else ("op", op, a, b))

  def __add__(self, other): return self._op("+", other)
  def __radd__(self, other): return self._op("+", other, reverse=True)
  def __sub__(self, other): return self._op("-", other)
  def __rsub__(self, other): return self._op("-", other, reverse=True)
  def __mul__(self, other): return self._op("*", other)
  def __rmul__(self, other): return self._op("*", other, reverse=True)
  def __truediv__(self, other): return self._op("/", other)
  def __rtruediv__(self, other): return self._op("/", other, reverse=True)
  def __neg__(self): return Contrast(("neg", self.node))

  def __str__(self) -> str:
    return _text(self.node)

  def __repr__(self) -> str:
    return f"Contrast({self})"

  def metrics(self) -> list[tuple[str, str]]:
    """`(group, metric)` of every measurement, in the order written (repeats once)."""
    return list(dict.fromkeys(_leaves(self.node)))

  def groups(self) -> list[str]:
    """The seed groups the contrast reads, in the order written."""
    return list(dict.fromkeys(g for g, _ in self.metrics()))

  def parts(self) -> dict[str, list[tuple[int, tuple]]]:
    """`{group: [(sign, term), ...]}`: the additive terms of each group (a term that is
    a number goes with the first group). `ValueError` for a term of two groups."""
    groups = self.groups()
    out = {g: [] for g in groups}
    for sign, term in _terms(self.node, 1):
      mine = list(dict.fromkeys(g for g, _ in _leaves(term)))
      if len(mine) > 1:
        raise ValueError(f"The term {_text(term)} of the contrast {self} combines the seed groups "
                         f"{mine}: groups are independent samples, so only their sums and "
                         "differences have a per-seed value.")
      out[mine[0] if mine else groups[0]].append((sign, term))
    return out

  def part_value(self, group: str, values: Mapping[str, float]) -> float | None:
    """One seed's value of `group`'s share of the contrast, from that point's measurements
    `values` (a results.csv row); None where a measurement is missing or a division is by 0."""
    total = 0.0
    for sign, term in self.parts()[group]:
      value = _evaluate(term, values)
      if value is None:
        return None
      total += sign * value
    return total


class _Group:
  """`group(name)[metric]`: one seed group's measurement in a `Contrast`."""

  def __init__(self, name: str):
    self.name = name

  def __getitem__(self, metric: str) -> Contrast:
    return Contrast(("metric", self.name, str(metric)))


def group(name: str) -> _Group:
  """A seed group (the `spec.group_name` of its points) whose measurements a `Contrast`
  reads: `group("rrc32")["acc_bn@40"] - group("rrc32")["acc_bn@32"]`."""
  return _Group(name)


def _leaves(node: tuple):
  if node[0] == "metric":
    yield node[1], node[2]
  elif node[0] == "neg":
    yield from _leaves(node[1])
  elif node[0] == "op":
    yield from _leaves(node[2])
    yield from _leaves(node[3])


def _terms(node: tuple, sign: int) -> list[tuple[int, tuple]]:
  if node[0] == "neg":
    return _terms(node[1], -sign)
  if node[0] == "op" and node[1] in "+-":
    return _terms(node[2], sign) + _terms(node[3], sign if node[1] == "+" else -sign)
  return [(sign, node)]


def _evaluate(node: tuple, values: Mapping[str, float]) -> float | None:
  kind = node[0]
  if kind == "const":
    return node[1]
  if kind == "metric":
    value = values.get(node[2])
    return float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else None
  if kind == "neg":
    value = _evaluate(node[1], values)
    return None if value is None else -value
  op, a, b = node[1], _evaluate(node[2], values), _evaluate(node[3], values)
  if a is None or b is None or (op == "/" and b == 0):
    return None
  if op == "+":
    return a + b
  if op == "-":
    return a - b
  return a * b if op == "*" else a / b


def _text(node: tuple, outer: int = 0, right_of: str = "") -> str:
  kind = node[0]
  if kind == "metric":
    return f"{node[1]}[{node[2]}]"
  if kind == "const":
    return f"{node[1]:g}"
  if kind == "neg":
    return f"-{_text(node[1], 3)}"
  op = node[1]
  precedence = _PRECEDENCE[op]
  text = f"{_text(node[2], precedence)} {op} {_text(node[3], precedence, op)}"
  # Parentheses where the precedence is lower, or on the right of - and / at the same level.
  if precedence < outer or (precedence == outer and right_of in ("-", "/")):
    return f"({text})"
  return text


@dataclasses.dataclass(frozen=True, eq=False)
class Hypothesis:
  """A primary hypothesis of `get_hypotheses(arg)`: which `claim` (its number in
  RESEARCH.md) it tests, a `name`, the `contrast` and its `predicted` sign (`"> 0"` or
  `"< 0"`), written before the run."""

  claim: int
  name: str
  contrast: Contrast
  predicted: str

  @classmethod
  def from_dict(cls, given: Mapping[str, Any]) -> "Hypothesis":
    """One entry of `get_hypotheses`, checked: `ValueError` for one that cannot work."""
    keys = {f.name for f in dataclasses.fields(cls)}
    if set(given) != keys:
      raise ValueError(f"A hypothesis of get_hypotheses gives {sorted(keys)}; {dict(given)!r} "
                       f"misses {sorted(keys - set(given))} and has {sorted(set(given) - keys)} "
                       "too many.")
    name = str(given["name"])
    if not isinstance(given["contrast"], Contrast) or not given["contrast"].groups():
      raise ValueError(f"Hypothesis {name!r}: its contrast must be built from spec.group(name)"
                       f"[metric], got {given['contrast']!r}.")
    given["contrast"].parts()  # A term of two groups fails here.
    if not isinstance(given["claim"], int) or given["claim"] < 1:
      raise ValueError(f"Hypothesis {name!r}: claim is a claim's number, got {given['claim']!r}.")
    text = str(given["predicted"]).replace(" ", "")
    if text not in (">0", ">", "+", "<0", "<", "-"):
      raise ValueError(f"Hypothesis {name!r}: predicted is '> 0' or '< 0', got "
                       f"{given['predicted']!r}.")
    predicted = "> 0" if text in (">0", ">", "+") else "< 0"
    return cls(claim=given["claim"], name=name, contrast=given["contrast"], predicted=predicted)


def _hypotheses(given, overrides: Sequence[Mapping[str, Any]]) -> tuple[Hypothesis, ...]:
  """`get_hypotheses`'s list checked: names unique, at most three per claim, and every
  seed group it reads one the sweep plans."""
  hypotheses = tuple(Hypothesis.from_dict(h) for h in given or ())
  names = [h.name for h in hypotheses]
  if len(set(names)) != len(names):
    raise ValueError(f"Two hypotheses share a name: {sorted(n for n in set(names) if names.count(n) > 1)}.")
  claims = [h.claim for h in hypotheses]
  crowded = sorted({c for c in claims if claims.count(c) > 3})
  if crowded:
    raise ValueError(f"Claim(s) {crowded} have more than three primary hypotheses; keep one to "
                     "three per claim (the others are exploratory: get_comparisons).")
  planned = {group_name(point_name(o), o["seed"]) for o in overrides if "seed" in o}
  for h in hypotheses:
    missing = [g for g in h.contrast.groups() if g not in planned]
    if missing:
      raise ValueError(f"Hypothesis {h.name!r} reads seed groups {missing} the sweep does not "
                       f"plan; its seed groups are {sorted(planned)}.")
  return hypotheses


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
  size to its own; `comparisons` are `get_comparisons(arg)`'s `(arm, baseline)` seed groups
  (exploratory); `hypotheses` are `get_hypotheses(arg)`'s primary hypotheses; `headline`
  is `get_headline(arg)`'s measures (columns of results.csv; by default those the
  hypotheses read), the ones results.md shows and results.png plots by arm (every column
  and the accuracy curves where there are none).
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
  hypotheses: tuple[Hypothesis, ...] = ()
  headline: tuple[str, ...] = ()

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
    """This sweep with `grid` instead of its tuning grid, for every arm and with no edge
    extension: the values asked for, no others (itself without `grid`)."""
    if not grid or self.tuning is None:
      return self
    return dataclasses.replace(self, tuning=dataclasses.replace(
        self.tuning, grid=tuple(grid), arm_grids={}, extend_edges=0))


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
  tuning = None if (given := hook("get_tuning")) is None else Tuning.from_dict(given)
  arms = {arm_of(o) for o in sweep.overrides}
  if tuning is not None and (unknown := set(tuning.arm_grids) - arms):
    raise ValueError(f"get_tuning's arm_grids names {sorted(unknown)}, not arms of {flag}: "
                     f"its arms are {sorted(arms)}.")
  return dataclasses.replace(
      sweep, tuning=tuning,
      finetune=_finetune(hook("get_finetune")),
      ensemble_sizes=_ensemble_sizes(hook("get_ensemble_sizes", ())),
      comparisons=tuple(tuple(pair) for pair in hook("get_comparisons", ())),
      hypotheses=(hypotheses := _hypotheses(hook("get_hypotheses", ()), sweep.overrides)),
      headline=_headline(hook("get_headline"), hypotheses))


def _headline(names, hypotheses: Sequence[Hypothesis]) -> tuple[str, ...]:
  """`get_headline`'s measures, checked to be column names; without it, the measures the
  primary hypotheses read, in the order written."""
  if names is None:
    return tuple(dict.fromkeys(m for h in hypotheses for _, m in h.contrast.metrics()))
  names = tuple(names)
  if not all(isinstance(n, str) and n for n in names):
    raise ValueError(f"get_headline must return column names (strings), got {names!r}.")
  return names
