r"""Claims 1, 4 and 7 rerun at CPU scale: train at one size, test at every size, with the
scale controls, size ensembles against seed ensembles, and FixRes's train/test fix.

  progressive sweep --config=configs/train_test_size.py --workdir=/tmp/tts
  progressive sweep --config=configs/train_test_size.py:photos --workdir=/tmp/tts_photos
  progressive sweep --config=configs/train_test_size.py:long --workdir=/tmp/tts_long
  progressive sweep --config=configs/train_test_size.py:px64 --workdir=/tmp/tts_px64
  progressive sweep --config=configs/train_test_size.py:smoke --workdir=/tmp/tts_smoke

The simple CNN on `scale_shapes/sweep32_fresh` (32 px, 4096 train / 1024 test, the test
split drawn afresh: `sweep32`'s was reused across earlier reruns), one stage of 6
epochs at the arm's size (the same steps at every size), seeds 0-4, each arm's
`opt.lr_max` chosen from (0.2, 0.4, 0.8) on the validation slice by accuracy at its own
training size (the mean of two tuning seeds per value). Arms:
- `flip16`, `flip24`, `flip32`: whole images with horizontal flips, trained at 16, 24 or
  32 px (claim 1: which features survive a change of size; claim 4's ensembles);
- `rrc24`, `rrc32`: random-resized-crop (35-100% of the area) and flip at 24 or 32 px,
  so training objects look larger than test objects (claim 7, FixRes);
- on `scale_shapes` only, the dataset controls of claim 1, flip at 32 px on the 32 px
  builder configs (docs/SCALE_SHAPES.md; their `_fresh` test splits): `offladder32` (periods 5, 9, 16: off the 2x
  ladder, some above Nyquist at half size), `object_period32` (the period tied to the
  object: 2, 3 or 4 across it), `one_scale32` (every object at one scale, 0.6).

Every point is tested at 16-48 px (above 32 the stored images are upsampled) with stored
and with recalibrated batch-norm statistics and on a canvas without resampling (the
sweep's controls, `acc@S`, `acc_bn@S`, `acc_canvas@S`); by the size ensemble over the
training size and its neighbours 8 px away (`get_ensemble_sizes`; mean softmax with
stored and recalibrated statistics, mean log-probability), against the seed ensemble of
as many networks at the training size (`acc_seed_ens`); and after FixRes's fine-tune of
the classifier and batch norm at the training size and at 8 px above it (`acc_ft@S`,
one epoch at lr 0.01: a fixed protocol setting, not tuned). `get_comparisons` sets rrc
against flip at each size, and each dataset control against `flip32` (exploratory).

`get_hypotheses` names the primary hypotheses, each claim's own prediction, all with
batch-norm statistics recomputed at the test size (`acc_bn@S`):
- claim 1, an interaction (family x off-scale loss) within `flip32`: the retention
  `acc_bn@S / acc_bn@32` of the fixed-frequency classes (textures; photos: periodic)
  minus that of the self-similar ones (shapes; photos: objects) is negative at 48 and at
  16 px;
- claim 4: the size ensemble with recomputed statistics beats the best of its sizes alone
  (`ens_gain_bn > 0`) for `flip24` and `flip32`;
- claim 7, within a network: `rrc24` and `rrc32` are more accurate 8 px above their
  training size than at it, and for `rrc32` that gain exceeds `flip32`'s (an interaction
  between arms: random-resized crops make training objects look larger).

`:long` is the convergence check: twice the budget (12 epochs) for the four arms the
primary hypotheses name (`flip24`, `flip32`, `rrc24`, `rrc32`), tuned afresh on the same
grid, the same seeds and test split; `experiments/results/` sets its hypotheses beside
the first budget's (`:photos_long` likewise on photographs). `:long_check` is the check
of `:long` in turn: its arms for twice its budget (24 epochs), seeds 0 and 1
(`spec.CHECK_SEEDS`), run with `--tuning_from=<:long's workdir>` at the rates it chose.

`:px64` runs the primary hypotheses at 64 px, every size doubled: the simple CNN on
`scale_shapes/default_fresh` (64 px, 10,000 train / 2,000 test, a test split drawn
afresh), the arms `flip48`, `flip64`, `rrc48` and `rrc64` for 16 epochs (EPOCHS_64: the
budget `configs/convergence.py` measured for the simple CNN at 64 px, within a point of
32 epochs on its validation slice; experiments/results/convergence), `opt.lr_max` tuned
over 0.1-0.4 (`LR_GRID_64`; `flip48` from 0.05 and `flip64` to 0.8, `ARM_GRIDS_64`, as
they chose that grid's edges in a first run; an arm still chosen at an edge is tuned one
value further, `spec.PX64_EXTEND_EDGES`), tested at 32-96 px, the hypotheses and size
ensembles 16 px away where the 32 px sweep looks 8 px away; no dataset controls and no
fine-tune.
`:px64_long` is its check of convergence (RESEARCH.md: within a point of twice the
budget) and its second budget: every arm twice as long (32 epochs), seeds 0-4, run with
`--tuning_from=<px64's workdir>` at the rates `:px64` chose (its check on seeds 0 and 1
found only `flip64` within a point, so the other arms' hypotheses need the longer budget
with every seed). `:px64_long_check` checks that budget in turn: 64 epochs, seeds 0 and 1
(`spec.CHECK_SEEDS`), also `--tuning_from=<px64's workdir>`. `:px64_photos` (and
`:px64_photos_long`, `:px64_photos_long_check`) is the same on real photographs,
`photos/default` (64 px, 10,000 / 2,000; the photographs have no fresh split, and their
ladder, `convergence.py:photos`, checks the 16 epochs on them), RESEARCH.md's replication
of a synthetic result.

`:photos` runs the five flip/rrc arms on real photographs (`photos/sweep32`, 16 grey
classes: periodic, stochastic textures and objects). Reduced for two CPU cores: 32 px
images and the simple CNN, 6 epochs (FixRes and claim 1 are asked at 32 and 48 px; 48 px
is beyond these images).
"""

import ml_collections

from configs import default
from progressive.sweeps import spec

SIZES = (16, 24, 32)
EPOCHS = 6
SIZES_64 = (48, 64)  # `:px64`: the hypotheses' arms, each size doubled.
EPOCHS_64 = 16
LONG_ARMS = ("flip24", "flip32", "rrc24", "rrc32")  # The arms the primary hypotheses name.
SEEDS = (0, 1, 2, 3, 4)
LR_GRID = (0.2, 0.4, 0.8)
# At 64 px: the 32 px sweep chose LR_GRID's lowest value, 0.2, for each flip and rrc arm,
# and on the convergence ladder at 64 px 0.4 trained one seed of two unstably.
LR_GRID_64 = (0.1, 0.2, 0.4)
# On scale_shapes flip48 chose 0.1 and flip64 0.4, the grid's edges (0.974 against 0.940 at
# 0.2; 0.990 against 0.988 at 0.1 on the validation slice): one step beyond each.
ARM_GRIDS_64 = {"flip48": (0.05, *LR_GRID_64), "flip64": (*LR_GRID_64, 0.8)}
CONTROLS = {"offladder32": "small_offladder_fresh", "object_period32": "small_object_period_fresh",
            "one_scale32": "small_one_scale_fresh"}


def _variant(arg: str | None) -> ml_collections.ConfigDict:
  """`photos`, `long` (twice the budget, the hypotheses' arms), `check` (twice that, two
  seeds), `px64`, `smoke`; `photos_long`, `long_check`, `px64_long`, `px64_long_check`,
  `px64_photos`, `px64_photos_long`, `px64_photos_long_check`."""
  presets = {"photos_long": "photos,long", "px64_long": "px64,long",
             "px64_long_check": "px64,long,check", "px64_photos": "px64,photos",
             "px64_photos_long": "px64,photos,long",
             "px64_photos_long_check": "px64,photos,long,check", "long_check": "long,check"}
  return spec.parse_arg(arg, presets=presets, photos=False, long=False, check=False,
                        px64=False, smoke=False)


def _epochs(variant) -> int:
  epochs = EPOCHS_64 if variant.px64 else EPOCHS
  return epochs * (2 if variant.long else 1) * (2 if variant.check else 1)


def _scale(variant) -> int:
  """How many times the 32 px sweep's sizes (1, or 2 at 64 px)."""
  return 2 if variant.px64 else 1


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = _variant(arg)
  config = default.get_config("smoke" if variant.smoke else None)
  # The full variant: sweep32's training images, a test split never used before (the
  # photographs have none); default's at 64 px.
  builder = "default" if variant.px64 else "sweep32"
  config.data.builder_config = "small" if variant.smoke else (
      builder if variant.photos else f"{builder}_fresh")
  if variant.photos:
    config.data.name = "photos"
  config.data.augment = "flip"
  k = _scale(variant)
  config.stages = (dict(size=24, steps=8),) if variant.smoke else (
      dict(size=32 * k, epochs=_epochs(variant)),)
  config.eval_sizes = (16, 24, 32) if variant.smoke else tuple(k * s for s in (16, 24, 32, 40, 48))
  config.progress_bar = False
  return config


def _rrc_sizes(variant) -> tuple[int, ...]:
  """The training sizes with an rrc arm (and a flip arm of the same size)."""
  return SIZES_64 if variant.px64 else SIZES[1:]


def _arms(variant) -> list[dict]:
  if variant.smoke:
    length = {"steps": 8}
    arms = [{"name": "flip16", "stages": (dict(size=16, **length),)},
            {"name": "rrc16", "stages": (dict(size=16, **length),), "data.augment": "rrc_flip"}]
    return arms
  length = {"epochs": _epochs(variant)}
  arms = [{"name": f"flip{s}", "stages": (dict(size=s, **length),)}
          for s in (SIZES_64 if variant.px64 else SIZES)]
  arms += [{"name": f"rrc{s}", "stages": (dict(size=s, **length),), "data.augment": "rrc_flip"}
           for s in _rrc_sizes(variant)]
  if variant.px64:
    return arms
  if variant.long or variant.check:
    return [arm for arm in arms if arm["name"] in LONG_ARMS]
  if not variant.photos:
    arms += [{"name": name, "stages": (dict(size=32, **length),), "data.builder_config": builder}
             for name, builder in CONTROLS.items()]
  return arms


def get_sweep(arg: str | None = None) -> list[dict]:
  variant = _variant(arg)
  seeds = (0, 1) if variant.smoke else spec.CHECK_SEEDS if variant.check else SEEDS
  return spec.with_seeds(_arms(variant), seeds)


def get_tuning(arg: str | None = None) -> dict:
  variant = _variant(arg)
  grid = (0.2, 0.4) if variant.smoke else LR_GRID_64 if variant.px64 else LR_GRID
  arm_grids = ARM_GRIDS_64 if variant.px64 and not variant.photos else {}
  # Edges are extended as they come, on scale_shapes beyond the grids set by hand above
  # (rerun on the machine of 2026-12-07, flip48 did better at 0.2 than at 0.1, its earlier
  # choice).
  extend = spec.PX64_EXTEND_EDGES if variant.px64 else 0
  return {"field": "opt.lr_max", "grid": grid, "metric": "acc@{size}",
          "seeds": spec.TUNING_SEEDS, "arm_grids": arm_grids, "extend_edges": extend}


def get_ensemble_sizes(arg: str | None = None) -> dict[int, tuple[int, ...]]:
  """The size ensemble of each training size: it and its neighbours 8 px away on the
  test grid (16 px at 64 px)."""
  variant = _variant(arg)
  if variant.smoke:
    return {16: (16, 24)}
  if variant.px64:
    return {48: (32, 48, 64), 64: (48, 64, 80)}
  return {16: (16, 24), 24: (16, 24, 32), 32: (24, 32, 40)}


def get_finetune(arg: str | None = None) -> dict | None:
  """FixRes's fine-tune at the training size (a control: what more steps add anyway)
  and 8 px above it, one epoch at lr 0.01; none at 64 px."""
  variant = _variant(arg)
  if variant.px64:
    return None
  sizes = {16: (16, 24)} if variant.smoke else {16: (16, 24), 24: (24, 32), 32: (32, 40)}
  return {"sizes": sizes, "epochs": 0.25 if variant.smoke else 1.0, "lr": 0.01}


def get_comparisons(arg: str | None = None) -> list[tuple[str, str]]:
  """`(arm, baseline)`: rrc against flip at each size; each dataset control against flip32."""
  variant = _variant(arg)
  if variant.smoke:
    return [("rrc16", "flip16")]
  pairs = [(f"rrc{s}", f"flip{s}") for s in _rrc_sizes(variant)]
  if not (variant.photos or variant.long or variant.check or variant.px64):
    pairs += [(name, "flip32") for name in CONTROLS]
  return pairs


# Claim 1's families: fixed-frequency, then self-similar.
FAMILIES = {"scale_shapes": ("texture", "shape"), "photos": ("periodic", "object")}


def _retention(arm: str, family: str, size: int, train_size: int) -> spec.Contrast:
  """Accuracy of `family` at `size` over that at the training size, recomputed statistics."""
  g = spec.group(arm)
  return g[f"acc_bn_{family}@{size}"] / g[f"acc_bn_{family}@{train_size}"]


def _gain_above(arm: str, size: int, step: int = 8) -> spec.Contrast:
  """Within one network: accuracy `step` px above its training size minus at it."""
  g = spec.group(arm)
  return g[f"acc_bn@{size + step}"] - g[f"acc_bn@{size}"]


def get_hypotheses(arg: str | None = None) -> list[dict]:
  """The primary hypotheses of claims 1, 4 and 7, each with its predicted sign (written
  before the run; every other comparison is exploratory)."""
  variant = _variant(arg)
  fixed, similar = FAMILIES["photos" if variant.photos else "scale_shapes"]
  if variant.smoke:  # The smoke arms train at 16 px and test at 16-32 px.
    return [
        dict(claim=1, name="fixed_frequency_retains_less_at_24", predicted="< 0",
             contrast=_retention("flip16", fixed, 24, 16) - _retention("flip16", similar, 24, 16)),
        dict(claim=4, name="size_ensemble_gain_flip16", predicted="> 0",
             contrast=spec.group("flip16")["ens_gain_bn"]),
        dict(claim=7, name="rrc16_gains_above_its_size", predicted="> 0",
             contrast=_gain_above("rrc16", 16)),
    ]
  # At 64 px every size is doubled: arms at 48 and 64 px, tests 16 px away.
  k = _scale(variant)
  small, large, step = 24 * k, 32 * k, 8 * k
  return [
      *(dict(claim=1, name=f"fixed_frequency_retains_less_at_{size}", predicted="< 0",
             contrast=_retention(f"flip{large}", fixed, size, large)
             - _retention(f"flip{large}", similar, size, large))
        for size in (large + 2 * step, large - 2 * step)),
      *(dict(claim=4, name=f"size_ensemble_gain_{arm}", predicted="> 0",
             contrast=spec.group(arm)["ens_gain_bn"]) for arm in (f"flip{small}", f"flip{large}")),
      *(dict(claim=7, name=f"rrc{size}_gains_above_its_size", predicted="> 0",
             contrast=_gain_above(f"rrc{size}", size, step)) for size in (small, large)),
      dict(claim=7, name=f"rrc{large}_gains_more_than_flip{large}", predicted="> 0",
           contrast=_gain_above(f"rrc{large}", large, step)
           - _gain_above(f"flip{large}", large, step)),
  ]
