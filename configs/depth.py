r"""Claim 5, "deeper networks are less invariant" (Azulay & Weiss): networks that differ
only in depth, at the same total stride and input size, tested over the whole period.

  progressive sweep --config=configs/depth.py --workdir=/tmp/depth_vgg
  progressive sweep --config=configs/depth.py:resnet --workdir=/tmp/depth_resnet
  progressive sweep --config=configs/depth.py:tuned64 --workdir=/tmp/depth_vgg64
  progressive sweep --config=configs/depth.py:px64 --workdir=/tmp/depth_px64 --canvas_topk=5
  progressive sweep --config=configs/depth.py:smoke --workdir=/tmp/depth_smoke

Azulay & Weiss found VGG16 -> ResNet-50 -> InceptionResNet-V2 less and less invariant,
but those networks differ in more than depth. Here only the number of convolutions
changes: the subsampling sites (where, how many, by what) and the input are the same, so
every arm has the same total stride and the same grid. Families (`family=`):
- `vgg` (default): VGG-11, -13 and -16 stacks (8, 10 and 13 3x3 convs between the same
  max pools; `model.name="vgg"` with their layer lists), width 0.25. At 32 px the last
  pool is dropped (every conv kept: total stride 16, a 2x2 map for the head, as
  `antialias.py`'s `VGG11_32_LAYERS`); at 64 px the published lists (stride 32, 2x2);
- `resnet`: ResNet-18 and -34 (the same four stages of basic blocks, 2-2-2-2 against
  3-4-6-3), width 0.25, the small stem (total stride 8).

A deeper network costs more training FLOPs at equal steps, so each family adds its
shallowest network trained for the deepest one's FLOPs (`<shallow>_at_<deep>_flops`:
its epochs times their ratio of FLOPs per image, `progressive.models.flops`), with its
own tuning: a difference in shift measures that is only a longer training shows there.

The default protocol is the CPU-scale standard of `antialias.py:rerun`: `scale_shapes/
sweep32_fresh` (32 px, 4096 / 1024, a test split never used before) at 32 px for 6
epochs, no augmentation, each arm's `opt.lr_max` chosen on the validation slice from
0.025-0.8 by accuracy at 32 px (the mean of tuning seeds 0 and 1 per value), seeds 0-4
(seed by seed), tested at 24-40 px and over the whole subsampling period on the test
images (`jag_period`, `pred_change`, `prob_change`, `cons_period`). `:tuned64` is the same
at 64 px on `scale_shapes/default_fresh` for 8 epochs (grid 0.05-0.8); `photos` trains on
real photographs (`photos/sweep32` or `photos/default`, with flips). VGG-16 and ResNet-34
are slow on a CPU: these sweeps are sized for a GPU host (`--workers`).

`:px64` is the VGG family sized for the CPU with converged networks, as the other px64
sweeps (RESEARCH.md): width 0.125 (`PX64_WIDTH`: channels 8-64; VGG-11 trains at about
0.8x the simple CNN's images/s here, VGG-16 at 0.5x, where width 0.25 is 0.4x and 0.2x),
64 px on `scale_shapes/default_fresh` with flips for 16 epochs (`PX64_EPOCHS`, the
ladder's budget, experiments/results/convergence), tuned over 0.05-0.2 (`PX64_LR_GRID`),
the arms of the hypotheses only (`vgg11`, `vgg16`, `vgg11_at_vgg16_flops`; VGG-13 is
left out on the CPU); `:px64_long` is its check of convergence (twice the budget, seeds 0
and 1, `spec.CHECK_SEEDS`, run with `--tuning_from=<px64's workdir>`).

`get_hypotheses` names claim 5's primary hypotheses for the family, deepest minus
shallowest at the training size over the whole period: predictions change more under
1-px shifts (`pred_change > 0`), more jagged (`jag_period > 0`), and `pred_change > 0`
against the shallow network at the deep one's FLOPs. `get_comparisons` sets every deeper
arm against the shallowest, and the shallow arm's two budgets against each other
(exploratory).
"""

import functools

import ml_collections

from configs import default
from progressive.data import pipeline
from progressive.models import flops, vgg
from progressive.sweeps import spec

VGG13_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
# Shallowest first; the layer lists at 64 px (at 32 px without their last pool).
VGG_DEPTHS = {"vgg11": vgg.VGG11_LAYERS, "vgg13": VGG13_LAYERS, "vgg16": vgg.VGG16_LAYERS}
RESNET_DEPTHS = ("resnet18", "resnet34")
SEEDS = (0, 1, 2, 3, 4)
EPOCHS = 6
LR_GRID = (0.025, 0.05, 0.1, 0.2, 0.4, 0.8)
TUNED64_EPOCHS = 8
TUNED64_LR_GRID = (0.05, 0.1, 0.2, 0.4, 0.8)
PX64_WIDTH = 0.125
PX64_EPOCHS = 16
PX64_LR_GRID = (0.05, 0.1, 0.2)


def _variant(arg: str | None) -> ml_collections.ConfigDict:
  """`family` (`vgg` or `resnet`), `protocol` (`rerun`: 32 px; `tuned64`: 64 px; `px64`:
  64 px, converged, for the CPU), `long` (`px64`'s twice the budget), `photos`, `smoke`;
  `px64_long` is both."""
  variant = spec.parse_arg(
      arg, presets={"tuned64": "protocol=tuned64", "px64": "protocol=px64",
                    "px64_long": "protocol=px64,long"},
      family=("vgg", ("vgg", "resnet")), protocol=("rerun", ("rerun", "tuned64", "px64")),
      long=False, photos=False, smoke=False)
  if variant.protocol == "px64" and (variant.family != "vgg" or variant.photos):
    raise ValueError(f"depth.py:{arg}: px64 is the VGG family on scale_shapes, sized for "
                     "the CPU; use tuned64 for ResNets or photographs.")
  if variant.long and variant.protocol != "px64":
    raise ValueError(f"depth.py:{arg}: `long` is px64's check of convergence; use px64_long.")
  return variant


def _size(variant) -> int:
  return 64 if variant.protocol in ("tuned64", "px64") and not variant.smoke else 32


def _epochs(variant) -> int:
  if variant.protocol == "px64":
    return PX64_EPOCHS * (2 if variant.long else 1)
  return TUNED64_EPOCHS if _size(variant) == 64 else EPOCHS


def _models(variant) -> dict[str, dict]:
  """Each depth's `config.model` overrides, shallowest first (px64: VGG-11 and -16)."""
  width = 0.125 if variant.smoke else PX64_WIDTH if variant.protocol == "px64" else 0.25
  if variant.family == "resnet":
    return {name: {"model.name": name, "model.width": width, "model.small_stem": True}
            for name in RESNET_DEPTHS}
  depths = {name: layers for name, layers in VGG_DEPTHS.items()
            if variant.protocol != "px64" or name != "vgg13"}  # The hypotheses' arms.
  return {name: {"model.name": "vgg", "model.width": width,
                 "model.vgg_layers": layers if _size(variant) == 64 else layers[:-1]}
          for name, layers in depths.items()}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = _variant(arg)
  config = default.get_config("smoke" if variant.smoke else None)
  size = _size(variant)
  if variant.smoke:
    config.stages = (dict(size=size, steps=4),)
    config.eval_sizes = (32,)
    return config
  builder = "default" if size == 64 else "sweep32"
  if variant.photos:
    config.data.name = "photos"
    config.data.builder_config = builder
    config.data.augment = "flip"
  else:
    config.data.builder_config = builder + "_fresh"
  if variant.protocol == "px64":
    config.data.augment = "flip"  # As the ladder and the other px64 sweeps train.
  config.stages = (dict(size=size, epochs=_epochs(variant)),)
  config.eval_sizes = (48, 64, 80) if size == 64 else (24, 32, 40)
  config.progress_bar = False
  return config


def _names(arg: str | None) -> tuple[str, str, str]:
  """The shallowest and deepest arms and the shallow one at the deep one's FLOPs."""
  names = list(_models(_variant(arg)))
  return names[0], names[-1], f"{names[0]}_at_{names[-1]}_flops"


@functools.cache
def flops_ratio(arg: str | None = None) -> float:
  """The deepest arm's training FLOPs per image over the shallowest's at the training
  size, counted from the architecture (`flops.config_train_flops`)."""
  config = get_config(arg)
  models = _models(_variant(arg))
  num_classes = pipeline.dataset_info(config.data).num_classes
  size = int(config.stages[-1]["size"])
  shallow, deep = (flops.config_train_flops(spec.apply_overrides(config, models[name]).model,
                                            size, num_classes)
                   for name in _names(arg)[:2])
  return deep / shallow


def get_sweep(arg: str | None = None) -> list[dict]:
  """Every depth, and the shallowest at the deepest's FLOPs; seed by seed."""
  variant = _variant(arg)
  models = _models(variant)
  shallow, _, matched = _names(arg)
  arms = [{"name": name, **overrides} for name, overrides in models.items()]
  stage = dict(get_config(arg).stages[-1])
  key = "steps" if "steps" in stage else "epochs"
  budget = stage[key] * flops_ratio(arg)
  stage[key] = round(budget) if key == "steps" else round(budget, 4)
  arms.append({"name": matched, **models[shallow], "stages": (stage,)})
  seeds = (0, 1) if variant.smoke else spec.CHECK_SEEDS if variant.long else SEEDS
  return spec.seed_by_seed(arms, seeds)


def get_tuning(arg: str | None = None) -> dict:
  variant = _variant(arg)
  grid = (0.1, 0.2) if variant.smoke else PX64_LR_GRID if variant.protocol == "px64" else (
      TUNED64_LR_GRID if _size(variant) == 64 else LR_GRID)
  return {"field": "opt.lr_max", "grid": grid, "metric": "acc@{size}", "seeds": spec.TUNING_SEEDS,
          "extend_edges": spec.PX64_EXTEND_EDGES if variant.protocol == "px64" else 0}


def get_comparisons(arg: str | None = None) -> list[tuple[str, str]]:
  """`(arm, baseline)`: each deeper network against the shallowest, the deepest against
  the shallowest at its FLOPs, and that budget against the shallowest's own."""
  shallow, deep, matched = _names(arg)
  deeper = list(_models(_variant(arg)))[1:]
  return [*((name, shallow) for name in deeper), (deep, matched), (matched, shallow)]


def get_hypotheses(arg: str | None = None) -> list[dict]:
  """Claim 5's primary hypotheses: the deepest network minus the shallowest, at equal
  steps and at equal FLOPs, each with its predicted sign."""
  shallow, deep, matched = _names(arg)
  d, s, m = spec.group(deep), spec.group(shallow), spec.group(matched)
  return [
      dict(claim=5, name=f"{deep}_changes_more_than_{shallow}", predicted="> 0",
           contrast=d["pred_change"] - s["pred_change"]),
      dict(claim=5, name=f"{deep}_more_jagged_than_{shallow}", predicted="> 0",
           contrast=d["jag_period"] - s["jag_period"]),
      dict(claim=5, name=f"{deep}_changes_more_than_{shallow}_at_equal_flops", predicted="> 0",
           contrast=d["pred_change"] - m["pred_change"]),
  ]
