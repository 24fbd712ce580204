"""Networks trained elsewhere, named into the zoo: torchvision, timm and antialiased-cnns.

    imported = convert(weights.read("resnet50-0676ba61.pth"), ARCHS["resnet50"],
                       config.default_config().model.to_dict())

The zoo computes what these libraries compute, so importing is naming: every zoo
variable is filled from one tensor of the source's state dict, transposed from torch's
layout (`OIHW` convolutions, `[out, in]` linear layers) to Flax's (`HWIO`, `[in, out]`).
Besides the names, three things are converted:

- a convolution's bias before batch norm (torchvision's `vgg16_bn`) is folded into the
  norm's running mean (`BN(conv(x) + b)` with mean `m` is `BN(conv(x))` with mean
  `m - b`, in training and in evaluation), since the zoo's convolutions before a norm
  have none;
- VGG's first classifier layer reads torch's `(C, 7, 7)` flattening; the zoo flattens
  `(7, 7, C)` (`head="adaptive"`), so its rows are permuted;
- antialiased-cnns' BlurPool filters (`*.filt` buffers) are checked to be the binomial
  filter of one size, which becomes `model.blur_size`.

An architecture fixes the design: block type and depth, the VGG layer pattern, batch
norm, where anti-aliasing goes. The width (the stem's channels over 64), the class count
and VGG's classifier widths are read from the file, so a narrower network of the same
design (the tests' fixtures, a network trained at another width) imports too and says so.
A file that does not fit is refused with one line naming the first mismatch and the
architecture the file looks like (`identify`).
"""

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from progressive import errors, models
from progressive.models import layers

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ResNet-18/34/50/101/152 by block type and blocks per stage.
RESNET_DEPTHS = {
    ("basic", (2, 2, 2, 2)): "resnet18",
    ("basic", (3, 4, 6, 3)): "resnet34",
    ("bottleneck", (3, 4, 6, 3)): "resnet50",
    ("bottleneck", (3, 4, 23, 3)): "resnet101",
    ("bottleneck", (3, 8, 36, 3)): "resnet152",
}
VGG_CONVS = {8: "vgg11", 10: "vgg13", 13: "vgg16", 16: "vgg19"}


class MismatchError(errors.Error, ValueError):
  """A weights file whose names or shapes do not fit the architecture asked for."""


@dataclasses.dataclass(frozen=True)
class Arch:
  """A published architecture: the zoo model it is, and how its source preprocesses.

  `model` holds the `config.model` fields that differ from the defaults (width, class
  count and classifier widths come from the file). `resize_px`, `crop_px` and
  `interpolation` are the source's standard evaluation view: the shorter side resized,
  then the centre cropped (`progressive.data.views.standard_view`).
  """

  name: str
  library: str
  model: Mapping[str, Any]
  file_format: str = ".pth"
  resize_px: int = 256
  crop_px: int = 224
  interpolation: str = "bilinear"
  mean: tuple[float, float, float] = IMAGENET_MEAN
  std: tuple[float, float, float] = IMAGENET_STD
  note: str = ""

  @property
  def family(self) -> str:
    return "vgg" if self.model["name"].startswith("vgg") else "resnet"


def _resnet(name: str, **model) -> dict[str, Any]:
  return {"name": name, "batch_norm": True, "head": "gap", "downsample": "stride", **model}


def _vgg(name: str, batch_norm: bool) -> dict[str, Any]:
  return dict(name=name, batch_norm=batch_norm, head="adaptive", head_grid=7,
              downsample="stride")


def _antialiased(name: str) -> dict[str, Any]:
  # Zhang's ResNets with pool_only=True: BlurPool after every strided conv and shortcut,
  # and in the stem pool (a 2x2 max at stride 1, then BlurPool); the stem conv keeps its
  # stride. blur_size comes from the file.
  return _resnet(name, downsample="blur", blur_padding="reflect", max_blur_pool="zhang",
                 subsample_stem=False)


ARCHS = {
    **{n: Arch(n, "torchvision", _resnet(n)) for n in ("resnet18", "resnet34", "resnet50")},
    "vgg11": Arch("vgg11", "torchvision", _vgg("vgg11", False)),
    "vgg16": Arch("vgg16", "torchvision", _vgg("vgg16", False)),
    "vgg16_bn": Arch("vgg16_bn", "torchvision", _vgg("vgg16", True)),
    # timm's resnet50 checkpoints (a1_in1k and the like) share torchvision's names; their
    # standard view is timm's pretrained_cfg for resnet50.a1_in1k: crop_pct 0.95, bicubic.
    "timm_resnet50": Arch(
        "timm_resnet50", "timm", _resnet("resnet50"), file_format=".safetensors",
        resize_px=235, interpolation="bicubic",
        note="timm's resnet50.a1_in1k view (crop_pct 0.95, bicubic); other tags differ",
    ),
    **{f"aa_{n}": Arch(f"aa_{n}", "antialiased-cnns", _antialiased(n))
       for n in ("resnet18", "resnet34", "resnet50")},
}


# --- What a state dict looks like ---


def _resnet_blocks(state: Mapping[str, np.ndarray]) -> tuple[int, ...]:
  """Blocks per stage of a torchvision-style ResNet state dict (`layer<i>.<b>.`)."""
  counts = {}
  for key in state:
    match = re.match(r"layer(\d+)\.(\d+)\.", key)
    if match:
      stage, block = int(match[1]), int(match[2])
      counts[stage] = max(counts.get(stage, 0), block + 1)
  return tuple(counts[i] for i in sorted(counts))


def _vgg_convs(state: Mapping[str, np.ndarray]) -> list[int]:
  """Indices in `features` of a torchvision VGG's convolutions (4-D weights), ascending."""
  return sorted(int(m[1]) for key, value in state.items()
                if (m := re.fullmatch(r"features\.(\d+)\.weight", key)) and np.ndim(value) == 4)


def identify(state: Mapping[str, np.ndarray]) -> str:
  """What architecture a state dict looks like, in a few words ("resnet50",
  "vgg16_bn", "an anti-aliased resnet50 (filter size 4)", "a ResNet with a deep stem
  (timm's resnet*d)")."""
  if "conv1.0.weight" in state or "conv1.weight" not in state and "layer1.0.conv1.weight" in state:
    return "a ResNet with a deep stem (timm's resnet*d), which the zoo does not have"
  if "layer1.0.conv1.weight" in state:
    kind = "bottleneck" if any(k.startswith("layer1.0.conv3") for k in state) else "basic"
    blocks = _resnet_blocks(state)
    name = RESNET_DEPTHS.get((kind, blocks), f"a ResNet of {kind} blocks {list(blocks)}")
    filters = [v for k, v in state.items() if k.endswith(".filt")]
    if filters:
      return f"an anti-aliased {name} (antialiased-cnns, filter size {filters[0].shape[-1]})"
    return name
  if "features.0.weight" in state:
    convs = _vgg_convs(state)
    name = VGG_CONVS.get(len(convs), f"a VGG of {len(convs)} convolutions")
    return f"{name}_bn" if f"features.{convs[0] + 1}.running_mean" in state else name
  some = ", ".join(list(state)[:3])
  return f"no architecture the importer knows (its first names: {some})"


# --- From torch's layout to the zoo's ---


def _conv(w):  # OIHW -> HWIO
  return np.transpose(w, (2, 3, 1, 0))


def _dense(w):  # [out, in] -> [in, out]
  return np.transpose(w)


def _same(w):
  return w


@dataclasses.dataclass(frozen=True)
class _Source:
  """Where a zoo variable comes from: a tensor's name and a transform of it."""

  key: str
  transform: Callable[[np.ndarray], np.ndarray] = _same
  fold_bias: str | None = None  # The conv bias folded into this running mean.


def _norm(prefix: str, leaf: str, conv_bias: str | None = None) -> _Source:
  """A zoo batch-norm variable (`scale`, `bias`, `mean`, `var`) from torch's `prefix`."""
  key = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}[leaf]
  return _Source(f"{prefix}.{key}", fold_bias=conv_bias if leaf == "mean" else None)


def _blurred(state, prefix: str) -> str:
  """`prefix` of a conv, or `prefix.1` where antialiased-cnns put a BlurPool before it
  (`prefix.0.filt`)."""
  return f"{prefix}.1" if f"{prefix}.0.filt" in state else prefix


def _resnet_source(path: tuple[str, ...], state) -> _Source:
  """The torch tensor behind one zoo ResNet variable, by its path
  (`("params", "stage2_block0", "conv1", "conv", "kernel")`)."""
  collection, module, *rest = path
  if module == "head":
    return _Source("fc.weight", _dense) if rest[-1] == "kernel" else _Source("fc.bias")
  if module == "stem":
    conv, norm = "conv1", "bn1"
  else:
    stage, block = re.fullmatch(r"stage(\d+)_block(\d+)", module).groups()
    prefix = f"layer{stage}.{block}"
    if rest[0] == "shortcut":  # torchvision: downsample.0 conv, .1 norm; Zhang: .0 BlurPool first.
      first = 1 if f"{prefix}.downsample.0.filt" in state else 0
      conv, norm = f"{prefix}.downsample.{first}", f"{prefix}.downsample.{first + 1}"
    else:
      k = rest[0][len("conv"):]
      conv, norm = _blurred(state, f"{prefix}.conv{k}"), f"{prefix}.bn{k}"
  del collection
  if rest[-2] == "conv":
    return _Source(f"{conv}.weight", _conv)
  return _norm(norm, rest[-1])


def _vgg_indices(spec, batch_norm: bool) -> list[int]:
  """Indices in torchvision's `features` of each conv of a VGG layer list
  (`make_layers`: a conv is conv (+ norm) + ReLU, a pool one module)."""
  indices, i = [], 0
  for item in spec:
    if item == "M":
      i += 1
    else:
      indices.append(i)
      i += 3 if batch_norm else 2
  return indices


def _vgg_source(path: tuple[str, ...], state, model_config) -> _Source:
  _, module, *rest = path
  if module == "head":
    layer = {"hidden0": 0, "hidden1": 3, "dense": 6}[rest[0]]
    if rest[-1] == "bias":
      return _Source(f"classifier.{layer}.bias")
    if layer == 0:
      grid = model_config["head_grid"]
      return _Source("classifier.0.weight", _flatten_rows(grid))
    return _Source(f"classifier.{layer}.weight", _dense)
  k = int(module[len("conv"):])
  index = _vgg_indices(models.vgg_layers(model_config), model_config["batch_norm"])[k]
  if rest[0] == "conv":
    return _Source(f"features.{index}.{'weight' if rest[1] == 'kernel' else 'bias'}",
                   _conv if rest[1] == "kernel" else _same)
  return _norm(f"features.{index + 1}", rest[-1], conv_bias=f"features.{index}.bias")


def _flatten_rows(grid: int) -> Callable[[np.ndarray], np.ndarray]:
  """torch's first classifier weight `[out, C * g * g]` (flattened `C, g, g`) to the
  zoo's kernel `[g * g * C, out]` (flattened `g, g, C`)."""

  def transform(w):
    out = w.shape[0]
    channels = w.shape[1] // (grid * grid)
    return w.reshape(out, channels, grid, grid).transpose(2, 3, 1, 0).reshape(-1, out)

  return transform


# --- The conversion ---


def _dims(state, arch: Arch) -> dict[str, Any]:
  """The dimensions an architecture leaves to the file: width, classes, VGG's classifier."""
  if arch.family == "resnet":
    stem, last = state.get("conv1.weight"), state.get("fc.weight")
    if stem is None or last is None:
      raise _mismatch(arch, state, "conv1.weight" if stem is None else "fc.weight", "is missing")
    dims = {"width": stem.shape[0] / 64, "num_classes": int(last.shape[0])}
  else:
    names = ("features.0.weight", "classifier.0.weight", "classifier.3.weight", "classifier.6.weight")
    for name in names:
      if name not in state:
        raise _mismatch(arch, state, name, "is missing")
    dims = {"width": state[names[0]].shape[0] / 64, "num_classes": int(state[names[3]].shape[0]),
            "head_hidden": (int(state[names[1]].shape[0]), int(state[names[2]].shape[0]))}
  filters = {k: v for k, v in state.items() if k.endswith(".filt")}
  if arch.model.get("downsample") == "blur":
    if not filters:
      raise _mismatch(arch, state, "a BlurPool filter (*.filt)", "is missing")
    size = next(iter(filters.values())).shape[-1]
    want = layers.blur_filter(size) if size in layers.BLUR_SIZES else None
    for key, value in filters.items():
      if want is None or value.shape[-2:] != want.shape or not np.allclose(value[:, 0], want, atol=1e-6):
        raise _mismatch(arch, state, key, f"is not the binomial filter of size {size}")
    dims["blur_size"] = int(size)
  elif filters:
    raise _mismatch(arch, state, next(iter(filters)), "is a BlurPool filter this architecture lacks")
  return dims


def _arch_named(looks: str) -> str | None:
  """The `ARCHS` name of an `identify` description, if the importer has that architecture."""
  name = "aa_" + looks.split()[2] if looks.startswith("an anti-aliased ") else looks
  return name if name in ARCHS else None


def _mismatch(arch: Arch, state, name: str, what: str) -> MismatchError:
  looks = identify(state)
  other = _arch_named(looks)
  fix = (f"pass --arch={other}" if other and other != arch.name else
         f"pass the --arch the file was saved from (one of {', '.join(ARCHS)})")
  return MismatchError(
      f"The weights do not fit {arch.name} ({arch.library}): {name} {what}; the file looks "
      f"like {looks}: {fix}."
  )


def _variable_paths(model, size: int) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Every variable of `model` (`params`, `batch_stats`) by path, with its shape."""
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
  flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
  return {tuple(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


@dataclasses.dataclass(frozen=True)
class Imported:
  """A state dict as a zoo model: its `config.model` fields, class count and variables."""

  model: dict[str, Any]  # Every config.model field.
  num_classes: int
  variables: dict[str, Any]  # {"params", "batch_stats"} of float32 numpy arrays.


def convert(state: Mapping[str, np.ndarray], arch: Arch, defaults: Mapping[str, Any]) -> Imported:
  """`state` (a source library's state dict, `weights.read`) as the zoo's `arch`;
  `defaults` is a whole `config.model` (`config.default_config().model`) for the fields
  the architecture leaves alone.

  `MismatchError` names the first zoo variable whose tensor is missing or of another
  shape, or a tensor left over, and what the file looks like.
  """
  dims = _dims(state, arch)
  fields = {**arch.model, **{k: v for k, v in dims.items() if k != "num_classes"}}
  model_config = {**dict(defaults), **fields}
  model = models.build(model_config, num_classes=dims["num_classes"])
  used, tree = set(), {}
  for path, shape in _variable_paths(model, arch.crop_px).items():
    source = (_resnet_source(path, state) if arch.family == "resnet"
              else _vgg_source(path, state, model_config))
    where = f"the zoo's {'/'.join(path)}"
    if source.key not in state:
      raise _mismatch(arch, state, source.key, f"is missing (for {where})")
    value = source.transform(np.asarray(state[source.key], np.float32))
    if value.shape != shape:
      raise _mismatch(arch, state, source.key,
                      f"has shape {tuple(state[source.key].shape)}, where {arch.name} at width "
                      f"{dims['width']:g} needs {shape} after transposing (for {where})")
    if source.fold_bias in state:  # None, or a conv bias (vgg16_bn) into the running mean.
      value = value - np.asarray(state[source.fold_bias], np.float32)
      used.add(source.fold_bias)
    used.add(source.key)
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  extra = [k for k in state if k not in used and not k.endswith(("num_batches_tracked", ".filt"))]
  if extra:
    raise _mismatch(arch, state, extra[0], "is not part of it")
  return Imported(model=model_config, num_classes=dims["num_classes"], variables=tree)
