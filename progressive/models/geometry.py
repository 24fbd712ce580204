r"""Architecture arithmetic: what every layer of a model sees at a given input size
(`progressive arch` prints it).

`layer_table` traces the model that `progressive.models.build` returns (no hand-kept
layer list): every conv, pool, blur, global pool and dense call is recorded with its
attributes and its real input and output shapes while `jax.eval_shape` runs `init`. Per
layer, with the input at `n = size, j = 1, rf = 1`:

    n_out = floor((n_in + pad_before + pad_after - k_eff) / s) + 1,  k_eff = k + (k - 1)(d - 1)
    j_out = j_in * s
    rf_out = rf_in + (k_eff - 1) * j_in

and `n_out` is checked against the traced shape. A ceil-mode pool (XResNet's shortcut)
is the same formula with the padding after that its last, clipped window needs. A
global pool (or the flatten head) is a window over the whole map: `rf_out = rf_in +
(n_in - 1) * j_in`. So is the adaptive pool of the `"adaptive"` head, whose dense layers
read all of its `grid x grid` cells: its row has `n = grid` and the whole map's rf; its
cells are not one window slid by one stride (they overlap or repeat pixels unless `grid`
divides `n_in`), so `kernel` is the largest cell, in positions of its input, and
`stride` and `j` are None. Receptive fields follow the graph through residual blocks:
the shortcut starts from the block input and the sum takes the larger receptive field of
its two branches.
"""

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from progressive import models
from progressive.models import layers, xresnet

KINDS = ("conv", "max_pool", "avg_pool", "blur", "gap", "flatten", "adaptive_pool", "dense")
HEAD_KINDS = ("gap", "flatten", "adaptive_pool", "dense")  # Read the whole feature map.


@dataclasses.dataclass(frozen=True)
class _Geometry:
  """Output size `n`, jump `j` and receptive field `rf` of a feature map, in input pixels
  (`j` is None after an adaptive pool)."""

  n: int
  j: int | None
  rf: int


@dataclasses.dataclass
class _Frame:
  """A module call in progress: the geometry flowing through its branches."""

  input: _Geometry
  residual: bool
  main: _Geometry | None = None
  shortcut: _Geometry | None = None

  def _branch(self, child: str | None) -> str:
    return "shortcut" if self.residual and (child or "").startswith("shortcut") else "main"

  def current(self, child: str | None) -> _Geometry:
    return getattr(self, self._branch(child)) or self.input

  def update(self, child: str | None, geometry: _Geometry) -> None:
    setattr(self, self._branch(child), geometry)

  def output(self, name: str) -> _Geometry:
    main = self.main or self.input
    if not self.residual:
      return main
    short = self.shortcut or self.input
    if (main.n, main.j) != (short.n, short.j):
      raise AssertionError(f"{name}: branches disagree: main {main}, shortcut {short}.")
    return _Geometry(main.n, main.j, max(main.rf, short.rf))


def _pair(value) -> int:
  """One side of a square kernel, stride or dilation given as an int or a tuple."""
  if value is None:
    return 1
  if isinstance(value, int):
    return value
  if len(set(value)) != 1:
    raise ValueError(f"Only square kernels, strides and dilations are supported, got {value}.")
  return int(value[0])


def _conv_pads(conv: nn.Conv) -> tuple[int, int]:
  padding = conv.padding
  if padding == "VALID":
    return 0, 0
  if isinstance(padding, str) or isinstance(padding, int):
    raise ValueError(f"{conv.name}: give explicit padding pairs, not {padding!r}.")
  pads = {tuple(p) for p in padding}
  if len(pads) != 1:
    raise ValueError(f"{conv.name}: only equal padding on both axes is supported, got {padding}.")
  return pads.pop()


def _geometry(module: nn.Module, n: int) -> tuple[str, int, int, tuple[int, int], int]:
  """`(kind, kernel, stride, (pad_before, pad_after), dilation)` of a spatial layer."""
  if isinstance(module, nn.Conv):
    kernel = _pair(module.kernel_size)
    return "conv", kernel, _pair(module.strides), _conv_pads(module), _pair(module.kernel_dilation)
  if isinstance(module, layers.MaxPool):
    return "max_pool", module.window, module.stride, (module.padding,) * 2, 1
  if isinstance(module, xresnet.CeilAvgPool):
    return "avg_pool", module.window, module.stride, module.pads(n), 1
  if isinstance(module, layers.AvgPool):
    return "avg_pool", module.window, module.stride, (module.padding,) * 2, 1
  if isinstance(module, layers.BlurPool):
    return "blur", module.size, module.stride, layers.blur_pads(module.size), 1
  if isinstance(module, layers.GlobalAvgPool):
    return "gap", n, n, (0, 0), 1
  if isinstance(module, layers.Flatten):
    return "flatten", n, n, (0, 0), 1
  raise TypeError(f"Not a spatial layer: {type(module).__name__}.")


SPATIAL = (
    nn.Conv, layers.MaxPool, layers.AvgPool, layers.BlurPool, layers.GlobalAvgPool, layers.Flatten,
    layers.AdaptiveAvgPool, xresnet.CeilAvgPool,
)


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def trace_table(model: nn.Module, size: int, channels: int = 3) -> list[dict[str, Any]]:
  """Rows for every conv, pool, blur, global pool and dense layer of `model` at `size`.

  The model is initialised abstractly on a `[1, size, size, channels]` input. Each
  row: `name` (module path), `kind` (one of `KINDS`), `kernel`, `stride`, `padding` (an
  int, or `[before, after]` when they differ), `dilation`, `n`, `j`, `rf`, `channels`,
  `params` (kernel and bias) and `norm_params` (scale and bias of the batch norm that
  follows). Raises if a formula disagrees with a traced shape or a parameter is not
  accounted for.
  """
  rows: list[dict[str, Any]] = []
  # id(array) -> (array, geometry): holding the array keeps its id from being reused.
  seen: dict[int, tuple[Any, _Geometry]] = {}
  producers: dict[int, tuple[Any, dict[str, Any]]] = {}  # id(output) -> (output, row).
  stack: list[_Frame] = []

  def geometry_of(x, child: str | None) -> _Geometry:
    if id(x) in seen and seen[id(x)][0] is x:
      return seen[id(x)][1]
    return stack[-1].current(child) if stack else _Geometry(size, 1, 1)

  def spatial_row(module, x, out, geo: _Geometry) -> tuple[dict[str, Any], _Geometry]:
    name = "/".join(module.path)
    if x.ndim != 4 or x.shape[1] != geo.n or x.shape[2] != geo.n:
      raise AssertionError(f"{name}: input shape {x.shape} but the table has n={geo.n}.")
    if isinstance(module, layers.AdaptiveAvgPool):
      kind, stride, (lo, hi), dilation, n = "adaptive_pool", None, (0, 0), 1, module.grid
      kernel = max(end - start for start, end in layers.adaptive_cells(geo.n, n))
      new = _Geometry(n, None, geo.rf + (geo.n - 1) * geo.j)
    else:
      kind, kernel, stride, (lo, hi), dilation = _geometry(module, geo.n)
      k_eff = kernel + (kernel - 1) * (dilation - 1)
      n = (geo.n + lo + hi - k_eff) // stride + 1
      new = _Geometry(n, geo.j * stride, geo.rf + (k_eff - 1) * geo.j)
    spatial_out = out.shape[1:3] if out.ndim == 4 else (1, 1)
    if spatial_out != (n, n):
      raise AssertionError(f"{name}: formula gives n={n} but the layer outputs {out.shape}.")
    row = dict(
        name=name, kind=kind, kernel=kernel, stride=stride, padding=lo if lo == hi else [lo, hi],
        dilation=dilation, n=new.n, j=new.j, rf=new.rf, channels=int(out.shape[-1]),
        params=_count(module.variables.get("params", {})), norm_params=0,
    )
    return row, new

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != "__call__" or not args:
      return next_fun(*args, **kwargs)
    x = args[0]
    geo = geometry_of(x, module.name)
    if isinstance(module, SPATIAL):
      out = next_fun(*args, **kwargs)
      row, geo = spatial_row(module, x, out, geo)
      rows.append(row)
      producers[id(out)] = (out, row)
    elif isinstance(module, nn.Dense):
      out = next_fun(*args, **kwargs)
      row = dict(
          name="/".join(module.path), kind="dense", kernel=None, stride=None, padding=None,
          dilation=None, n=geo.n, j=geo.j, rf=geo.rf, channels=int(out.shape[-1]),
          params=_count(module.variables.get("params", {})), norm_params=0,
      )
      rows.append(row)
      producers[id(out)] = (out, row)
    elif isinstance(module, nn.BatchNorm):
      out = next_fun(*args, **kwargs)
      producer = producers.get(id(x))
      if producer is None or producer[0] is not x:
        raise AssertionError(f"{'/'.join(module.path)}: a batch norm after no conv or dense.")
      producer[1]["norm_params"] += _count(module.variables.get("params", {}))
    else:
      frame = _Frame(geo, residual=bool(getattr(type(module), "residual", False)))
      stack.append(frame)
      try:
        out = next_fun(*args, **kwargs)
      finally:
        stack.pop()
      geo = frame.output("/".join(module.path) or type(module).__name__)
    if stack:
      stack[-1].update(module.name, geo)
    seen[id(out)] = (out, geo)
    return out

  with nn.intercept_methods(interceptor):
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, channels)))
  total = _count(variables.get("params", {}))
  counted = sum(r["params"] + r["norm_params"] for r in rows)
  if counted != total:
    raise AssertionError(f"The table accounts for {counted} parameters, the model has {total}.")
  return rows


def layer_table(
    model_config: Mapping[str, Any], size: int, num_classes: int = 10
) -> list[dict[str, Any]]:
  """`trace_table` of the model `config.model` builds, at input side `size`. Remembered
  per model and size (a sweep's measures ask again for every point; `models.build` gives
  one module per architecture)."""
  model = models.build(model_config, num_classes=num_classes)
  return [dict(row) for row in _remembered_table(model, int(size))]


@functools.lru_cache(maxsize=64)
def _remembered_table(model: nn.Module, size: int) -> tuple[dict[str, Any], ...]:
  return tuple(trace_table(model, size))


def totals(table: Sequence[Mapping[str, Any]]) -> dict[str, int]:
  """Total parameters (with norms), the last layer's rf, the rf of the feature map and
  the total stride.

  `features_rf` is the receptive field of one position of the map the head receives
  (before the global, adaptive or flatten pool); `rf` is the last layer's, which spans
  the input.
  `total_stride` is the jump of that map: input pixels between neighbouring positions,
  the period of the network's subsampling grid (test sizes that are not multiples of it
  shift the grid against the image).
  """
  spatial = [r for r in table if r["kind"] not in HEAD_KINDS]
  return {
      "params": sum(r["params"] + r["norm_params"] for r in table),
      "rf": table[-1]["rf"] if table else 1,
      "features_rf": spatial[-1]["rf"] if spatial else 1,
      "total_stride": spatial[-1]["j"] if spatial else 1,
  }


def covering_layer(
    table: Sequence[Mapping[str, Any]], object_px: int
) -> Mapping[str, Any] | None:
  """The first row whose receptive field is at least `object_px`, or None."""
  return next((r for r in table if r["rf"] >= object_px), None)


def format_table(
    table: Sequence[Mapping[str, Any]], size: int, object_px: int | None = None
) -> str:
  """The table as aligned text, with totals (and the covering layer) at the end."""
  columns = (
      "name", "kind", "kernel", "stride", "padding", "dilation", "n", "j", "rf", "channels",
      "params", "norm_params",
  )
  headers = ("layer", "kind", "k", "s", "p", "d", "n", "j", "rf", "ch", "params", "norm")

  def cell(value):
    if value is None:
      return "-"
    if isinstance(value, list):
      return ",".join(map(str, value))
    return f"{value:,}" if isinstance(value, int) and value >= 10000 else str(value)

  cells = [headers] + [tuple(cell(r[c]) for c in columns) for r in table]
  widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
  lines = [
      "  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))
      for row in cells
  ]
  total = totals(table)
  lines.append(
      f"input {size} px; parameters {total['params']:,}; receptive field {total['rf']} px "
      f"(one position of the head's input: {total['features_rf']} px)"
  )
  if object_px is not None:
    row = covering_layer(table, object_px)
    where = f"from {row['name']} (rf {row['rf']}) on" if row else "by no layer"
    lines.append(f"an object of {object_px} px is covered {where}")
  return "\n".join(lines)
