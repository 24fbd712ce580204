r"""Claims 2 and 5: strided vs max-pooled vs blurred subsampling, for three model families.

  progressive sweep --config=configs/antialias.py --workdir=/tmp/antialias
  progressive sweep --config=configs/antialias.py:simple_cnn --workdir=/tmp/antialias_cnn
  progressive sweep --config=configs/antialias.py:rerun --workdir=/tmp/aa_rerun
  progressive sweep --config=configs/antialias.py:rerun_photos --workdir=/tmp/aa_photos
  progressive sweep --config=configs/antialias.py:rerun_resnet18 --workdir=/tmp/aa_resnet18 --workers=3
  progressive sweep --config=configs/antialias.py:tuned64_resnet18 --workdir=/tmp/aa64_resnet18
  progressive sweep --config=configs/antialias.py:px64 --workdir=/tmp/aa_px64
  progressive sweep --config=configs/antialias.py:px64_vgg11 --workdir=/tmp/aa_px64_vgg11 --workers=8
  progressive sweep --config=configs/antialias.py:smoke --workdir=/tmp/antialias_smoke

Every point trains one model at 64 px on `scale_shapes` (one stage; the argument picks
the model families, default all three) with `downsample` in stride / max / blur (filter
3 and 5), then reports accuracy at every size, jaggedness along 1-pixel shifts and the
consistency between two random shifts (Azulay & Weiss; Zhang): does blurring before
subsampling make the network more shift invariant, and at what cost? VGG subsamples only
by max pools, so it has no separate `max` point (its `stride` is the published max pool).
The argument is parsed once (`_variant`): a family, `smoke`, a variant named below, or
its parts written out (`protocol=rerun,family=resnet18,photos` is `rerun_resnet18_photos`).

`:rerun` is the CPU-scale rerun with the standard of evidence (RESEARCH.md): the simple
CNN on `scale_shapes/sweep32_fresh` (32 px, 4096 / 1024) at 32 px for a stated budget of 6
epochs, each arm's `opt.lr_max` chosen on the validation slice from 0.025-0.4 by
accuracy at 32 px (the mean of tuning seeds 0 and 1 per grid value), seeds 0-4 (seed by seed, as below), tested at 16-48 px with and
without batch-norm recalibration (`acc@S`, `acc_bn@S`) and over the whole subsampling
period (16 px) on every test image (`jag_period`, `pred_change`, `prob_change`, `cons_period`);
`get_comparisons` sets each subsampling against `stride`. `:rerun_photos` is the same
on real photographs (`photos/sweep32`, trained with flips). What was reduced for two
CPU cores: 32 px instead of 64, a fixed 6-epoch budget instead of "until validation stops
improving". An earlier grid (0.2-0.8) chose its lower edge for every arm, and a
`--tune_only` check below it (0.05, 0.1) found the blurred arms on `scale_shapes` 11
points better there: hence this grid.

`:rerun_vgg11[_photos]` and `:rerun_resnet18[_photos]` are the same for the other two
families, each on the grid 0.025-0.8 (0.0125-0.8 for ResNet-18 on photographs, where
every arm chose 0.025 on the first grid), run side by side on a GPU host
(`experiments/run_side_by_side.sh`) or on the CPU (ResNet-18's points take about 9
minutes of one core): ResNet-18 with width 0.25 and the small stem (total stride 8, so
the whole period is 8 px), and VGG-11 with width 0.25 and its last pool dropped (`vgg`
with `VGG11_32_LAYERS`: every conv kept, total stride 16 like the simple CNN's, a 2x2
map for the head) since VGG-11's total stride, 32, is the whole 32 px canvas. VGG
subsamples only by max pools, so it has `stride` (its max pool), `blur3` and `blur5`.

`:tuned64_<family>` (`simple_cnn`, `vgg11` or `resnet18`) and `:tuned64_<family>_photos`
are the same standard at the config's own 64 px, sized for a GPU: one family on
`scale_shapes/default_fresh` or `photos/default` (64 px, 10,000 / 2,000; photographs trained
with flips), trained at 64 px for a stated budget of 8 epochs, `opt.lr_max` chosen per
arm on the validation slice from 0.05-0.8 by accuracy at 64 px (two tuning seeds per
value), seeds 0-4, tested at 32-96
px with and without recalibration, shifts over the whole period (8 px for ResNet-18 with
its small stem, 16 for the simple CNN, 32 for VGG) on every test image. Points run seed
by seed (every arm's seed 0, then seed 1, ...), so a sweep stopped early still has every
arm at the seeds it reached. One family per sweep, so the six run side by side (each
sweep has its own workdir and tuning choice). A first try on an H200 (docs/BENCHMARKS.md)
found VGG-11 and ResNet-18 at 0.98-1.00 validation accuracy at every rate that finished:
at this budget accuracy separates neither the grid nor the arms, so a harder budget is
needed before these sweeps' accuracy comparisons mean anything.

`:px64` is the simple CNN's `tuned64` sized for the CPU with converged networks
(RESEARCH.md): on `scale_shapes/default_fresh` trained with flips (as the budget's
ladder was) for 16 epochs (`PX64_EPOCHS`: experiments/results/convergence found 16
within a point of 32 at 64 px, where `tuned64`'s 8 were 10 points short), the arms of
the primary hypotheses (`stride`, `max`, `blur3` and the matched `stride_at_max_flops`,
64 epochs; `blur5` is left out: three of the four cost 4x a strided point), tuned over
`PX64_LR_GRID` (0.05-0.2, where the 32 px rerun's arms chose and the ladder trained
stably), tested at 32-96 px and over the whole period (16 px) on every test image.
`:px64_vgg11` and `:px64_resnet18` are the same protocol for the deeper families, sized
for a GPU host (`--workers`): their arms (VGG-11, which has no `max` arm: `stride`,
`blur3`, `blur5`; ResNet-18: as the simple CNN's), tuned over `TUNED64_LR_GRID`
(0.05-0.8: nothing is known of their best rates at 16 epochs), one device kind per arm.
`:px64_long` (and `:px64_<family>_long`) is its check of convergence (RESEARCH.md:
within a point of twice the budget): every arm twice as long, seeds 0 and 1
(`spec.CHECK_SEEDS`), run with `--tuning_from=<px64's workdir>` at the rates `:px64`
chose.

Matched budgets (the `rerun` and `tuned64` protocols): max pooling and blur keep every
convolution before a subsampling at full resolution, so where the family has a `max`
arm they cost more training FLOPs than `stride` at equal steps (4x for the simple CNN,
1.30x for ResNet-18, counted from the architecture; VGG's arms cost the same). Its
`<family>_stride_at_max_flops` arm is `stride` trained for the `max` arm's training
FLOPs (`progressive.models.flops`: its epochs times the ratio of their FLOPs per image),
with its own tuning, so each comparison at equal steps is paired with one at equal FLOPs.

`get_hypotheses` (the `rerun` and `tuned64` protocols) names the primary hypotheses of
the family the sweep trains; `get_comparisons`' pairs are exploratory:
- claim 5, arm minus `stride` at the training size over the whole period: predictions
  change less under 1-px shifts with blur (`pred_change < 0` for `blur3`; for a family
  with a matched arm, also against `stride_at_max_flops`, else for `blur5`), and `blur3`
  is less jagged (`jag_period < 0`);
- claim 2, an interaction (downsampling x family x scale): at 1.5 times the training
  size, the retention (`acc_bn@S / acc_bn@<training size>`, recomputed statistics) of the
  self-similar classes (shapes; photos: objects) minus that of the fixed-frequency ones
  (textures; photos: periodic) is larger with `blur3` (and `max`, where the family has
  it) than with `stride`, and with `max` than with `stride_at_max_flops`.
"""

import functools

import ml_collections

from configs import default
from progressive.data import pipeline
from progressive.models import flops
from progressive.sweeps import spec

MODELS = {
    "simple_cnn": {"model.name": "simple_cnn"},
    "vgg11": {"model.name": "vgg11", "model.width": 0.25},
    "resnet18": {"model.name": "resnet18", "model.width": 0.25, "model.small_stem": True},
}
MODES = (
    {"model.downsample": "stride"},
    {"model.downsample": "max"},
    {"model.downsample": "blur", "model.blur_size": 3},
    {"model.downsample": "blur", "model.blur_size": 5},
)
EPOCHS = 4
# VGG-11 for 32 px inputs: its last pool dropped (every conv kept), so its total stride is
# 16, the simple CNN's, and a 2x2 map is left for the head instead of 1x1.
VGG11_32_LAYERS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512)
RERUN_MODELS = {
    "simple_cnn": MODELS["simple_cnn"],
    "vgg11": {"model.name": "vgg", "model.vgg_layers": VGG11_32_LAYERS, "model.width": 0.25},
    "resnet18": MODELS["resnet18"],
}
RERUN_EPOCHS = 6
SEEDS = (0, 1, 2, 3, 4)
# The simple CNN's reruns: an earlier grid (0.2, 0.4, 0.8) chose its lower edge for every
# arm, and 0.05 beat 0.2 for the blurred arms on scale_shapes; this one brackets them.
LR_GRID = (0.025, 0.05, 0.1, 0.2, 0.4)
# ResNet-18's and VGG-11's reruns: wide, since nothing was known of their best rates.
DEEP_LR_GRID = (0.025, 0.05, 0.1, 0.2, 0.4, 0.8)
# ResNet-18 on photographs chose DEEP_LR_GRID's lower edge for every arm: one step below.
RESNET18_PHOTOS_LR_GRID = (0.0125, *DEEP_LR_GRID)
TUNED64_EPOCHS = 8
# The protocols' scale_shapes builder configs: `sweep32_fresh`, `default_fresh`, the
# training images of `sweep32` and `default` with a test split drawn afresh.
FRESH = "_fresh"
TUNED64_LR_GRID = (0.05, 0.1, 0.2, 0.4, 0.8)
PX64_EPOCHS = 16
PX64_LR_GRID = (0.05, 0.1, 0.2)
# `px64`'s arms: the hypotheses' (stride, max, blur3; VGG's stride is its max pool, and
# its second blur takes max's place, as in `rerun`).
PX64_MODES = MODES[:3]
VGG_PX64_MODES = (MODES[0], *MODES[2:])
# The variants' names: `rerun[_<family>][_photos]` (the simple CNN without a family) and
# `tuned64_<family>[_photos]`.
PRESETS = {
    **{f"rerun{'' if f == 'simple_cnn' else '_' + f}{photos}":
       f"protocol=rerun,family={f}{photos and ',photos'}"
       for f in RERUN_MODELS for photos in ("", "_photos")},
    **{f"tuned64_{f}{photos}": f"protocol=tuned64,family={f}{photos and ',photos'}"
       for f in MODELS for photos in ("", "_photos")},
    "px64": "protocol=px64,family=simple_cnn",
    "px64_long": "protocol=px64,family=simple_cnn,long",
    **{f"px64_{f}{long}": f"protocol=px64,family={f}{long and ',long'}"
       for f in ("vgg11", "resnet18") for long in ("", "_long")},
}


def _variant(arg: str | None) -> ml_collections.ConfigDict:
  """`family` (default: all three), `protocol` (`rerun`: 32 px with the standard of
  evidence; `tuned64`: the same at 64 px; `px64`: the simple CNN's, converged, for the
  CPU), `long` (`px64`'s twice the budget), `photos`, `smoke`."""
  variant = spec.parse_arg(arg, presets=PRESETS, family=("", tuple(MODELS)),
                           protocol=("", ("rerun", "tuned64", "px64")), long=False,
                           photos=False, smoke=False)
  if variant.protocol == "px64" and (not variant.family or variant.photos):
    raise ValueError(f"antialias.py:{arg}: px64 is one family's on scale_shapes (px64, "
                     "px64_vgg11, px64_resnet18); tuned64_<family>_photos for photographs.")
  if variant.long and variant.protocol != "px64":
    raise ValueError(f"antialias.py:{arg}: `long` is px64's check of convergence; use px64_long.")
  return variant


def _budget(variant) -> tuple[int, float]:
  """A protocol's training size and epochs."""
  if variant.protocol == "rerun":
    return 32, RERUN_EPOCHS
  if variant.protocol == "tuned64":
    return 64, TUNED64_EPOCHS
  return 64, PX64_EPOCHS * (2 if variant.long else 1)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = _variant(arg)
  config = default.get_config("smoke" if variant.smoke else None)
  config.stages = (dict(size=32, steps=8),) if variant.smoke else (dict(size=64, epochs=EPOCHS),)
  config.eval_sizes = (24, 32) if variant.smoke else (32, 48, 64)
  if variant.protocol == "rerun":
    config.data.builder_config = "sweep32"
  if variant.photos:
    config.data.name = "photos"
    config.data.augment = "flip"
  elif variant.protocol:  # A test split never used before (photographs have none).
    config.data.builder_config += FRESH
  if variant.protocol == "px64":
    config.data.augment = "flip"
  if variant.protocol:
    size, epochs = _budget(variant)
    config.stages = (dict(size=size, epochs=epochs),)
    config.eval_sizes = tuple(size * k // 4 for k in (2, 3, 4, 5, 6))  # Half to 1.5x, by quarters.
    config.progress_bar = False
  return config


def _families(variant) -> list[str]:
  if variant.family:
    return [variant.family]
  return ["simple_cnn"] if variant.smoke else list(MODELS)


def _name(family: str, mode: dict) -> str:
  return f"{family}_{mode['model.downsample']}{mode.get('model.blur_size', '')}"


MATCHED = "stride_at_max_flops"  # `stride` trained for the `max` arm's training FLOPs.


@functools.cache
def _max_over_stride(arg: str | None, family: str) -> float:
  """The `max` arm's training FLOPs per image over the `stride` arm's at the training
  size, counted from the architecture (`flops.config_train_flops`)."""
  config = get_config(arg)
  models = RERUN_MODELS if _variant(arg).protocol == "rerun" else MODELS
  num_classes = pipeline.dataset_info(config.data).num_classes
  size = int(config.stages[-1]["size"])
  stride, pooled = (flops.config_train_flops(
      spec.apply_overrides(config, {**models[family], **mode}).model, size, num_classes)
      for mode in MODES[:2])
  return pooled / stride


def get_sweep(arg: str | None = None) -> list[dict]:
  variant = _variant(arg)
  models = RERUN_MODELS if variant.protocol == "rerun" else MODELS
  modes = (MODES[0], MODES[2]) if variant.smoke else MODES
  if variant.protocol == "px64":
    modes = VGG_PX64_MODES if variant.family.startswith("vgg") else PX64_MODES
  points = []
  for family in _families(variant):
    for mode in modes:
      if family.startswith("vgg") and mode["model.downsample"] == "max":
        continue  # VGG subsamples only by max pools: "max" is its "stride", the same network.
      points.append({"name": _name(family, mode), **models[family], **mode})
    if variant.protocol and not family.startswith("vgg"):  # The matched budget.
      size, epochs = _budget(variant)
      epochs = round(epochs * _max_over_stride(arg, family), 4)
      points.append({"name": f"{family}_{MATCHED}", **models[family], **MODES[0],
                     "stages": (dict(size=size, epochs=epochs),)})
  if variant.protocol:  # Seed by seed: every arm's seed 0, then every arm's seed 1, ...
    return spec.seed_by_seed(points, spec.CHECK_SEEDS if variant.long else SEEDS)
  return points


def get_tuning(arg: str | None = None) -> dict | None:
  variant = _variant(arg)
  if variant.protocol in ("tuned64", "px64"):
    simple = variant.protocol == "px64" and variant.family == "simple_cnn"
    grid = PX64_LR_GRID if simple else TUNED64_LR_GRID
    return {"field": "opt.lr_max", "grid": grid, "metric": "acc@64", "seeds": spec.TUNING_SEEDS,
            "extend_edges": spec.PX64_EXTEND_EDGES if variant.protocol == "px64" else 0}
  if variant.protocol != "rerun":
    return None  # Only the reruns tune.
  grid = LR_GRID if variant.family == "simple_cnn" else DEEP_LR_GRID
  if variant.family == "resnet18" and variant.photos:
    grid = RESNET18_PHOTOS_LR_GRID
  return {"field": "opt.lr_max", "grid": grid, "metric": "acc@32", "seeds": spec.TUNING_SEEDS}


def get_comparisons(arg: str | None = None) -> list[tuple[str, str]]:
  """`(arm, baseline)`: each subsampling against the strided network (arm minus stride),
  at equal steps and, where the family has the matched arm, at equal FLOPs; and the
  matched arm against `stride` (what the larger budget alone changes)."""
  variant = _variant(arg)
  if not variant.protocol:
    return []
  arms = set(spec.arm_names(get_sweep(arg)))
  pairs = []
  for family in _families(variant):
    baselines = [f"{family}_stride", f"{family}_{MATCHED}"]
    pairs += [(_name(family, mode), baseline) for baseline in baselines if baseline in arms
              for mode in MODES[1:] if _name(family, mode) in arms]
    if f"{family}_{MATCHED}" in arms:
      pairs.append((f"{family}_{MATCHED}", f"{family}_stride"))
  return pairs


# Claim 2's families: self-similar, then fixed-frequency.
FAMILIES = {"scale_shapes": ("shape", "texture"), "photos": ("object", "periodic")}


def _shape_advantage(arm: str, size: int, train_size: int, families) -> spec.Contrast:
  """Within one network: the retention at `size` of the self-similar classes minus that
  of the fixed-frequency ones (recomputed batch-norm statistics)."""
  g = spec.group(arm)
  similar, fixed = families
  return (g[f"acc_bn_{similar}@{size}"] / g[f"acc_bn_{similar}@{train_size}"]
          - g[f"acc_bn_{fixed}@{size}"] / g[f"acc_bn_{fixed}@{train_size}"])


def get_hypotheses(arg: str | None = None) -> list[dict]:
  """The primary hypotheses of claims 5 and 2 for the family of a `rerun` or `tuned64`
  sweep (none for the others, which have no seeds), each with its predicted sign."""
  variant = _variant(arg)
  if not variant.protocol:
    return []
  if not variant.family:
    raise ValueError(f"antialias.py:{arg}: a {variant.protocol} sweep's hypotheses are its "
                     "family's; name one (family=simple_cnn, vgg11 or resnet18).")
  family = variant.family
  train_size = _budget(variant)[0]
  off_scale = train_size * 3 // 2
  families = FAMILIES["photos" if variant.photos else "scale_shapes"]
  arms = set(spec.arm_names(get_sweep(arg)))
  stride, blur3 = spec.group(f"{family}_stride"), spec.group(f"{family}_blur3")
  matched = f"{family}_{MATCHED}" if f"{family}_{MATCHED}" in arms else None
  out = [dict(claim=5, name=f"{family}_blur3_changes_less", predicted="< 0",
              contrast=blur3["pred_change"] - stride["pred_change"])]
  if matched:  # Blur costs the max arm's FLOPs: the same contrast at equal FLOPs.
    out.append(dict(claim=5, name=f"{family}_blur3_changes_less_at_equal_flops", predicted="< 0",
                    contrast=blur3["pred_change"] - spec.group(matched)["pred_change"]))
  else:
    out.append(dict(claim=5, name=f"{family}_blur5_changes_less", predicted="< 0",
                    contrast=spec.group(f"{family}_blur5")["pred_change"] - stride["pred_change"]))
  out.append(dict(claim=5, name=f"{family}_blur3_less_jagged", predicted="< 0",
                  contrast=blur3["jag_period"] - stride["jag_period"]))

  def advantage(arm):
    return _shape_advantage(arm, off_scale, train_size, families)

  for mode in ("blur3", "max"):
    if f"{family}_{mode}" in arms:
      out.append(dict(
          claim=2, name=f"{family}_{mode}_helps_self_similar_off_scale", predicted="> 0",
          contrast=advantage(f"{family}_{mode}") - advantage(f"{family}_stride")))
  if matched and f"{family}_max" in arms:
    out.append(dict(
        claim=2, name=f"{family}_max_helps_self_similar_off_scale_at_equal_flops", predicted="> 0",
        contrast=advantage(f"{family}_max") - advantage(matched)))
  return out
