r"""Claim 5, Azulay & Weiss's stride^2 argument: does training on shifted copies make a
strided network shift invariant, and at what cost?

  progressive sweep --config=configs/translation.py --workdir=/tmp/translation
  progressive sweep --config=configs/translation.py:photos --workdir=/tmp/translation_photos
  progressive sweep --config=configs/translation.py:tuned64 --workdir=/tmp/translation64
  progressive sweep --config=configs/translation.py:px64 --workdir=/tmp/translation_px64
  progressive sweep --config=configs/translation.py:smoke --workdir=/tmp/translation_smoke

A network that subsamples by a total stride S computes the same function only for
shifts by multiples of S; to learn invariance to the S^2 phases in between from data it
must see every one of them (Azulay & Weiss 2018: 45^2 = 2,025 copies for their
networks). The arms differ only in `data.augment` (the same model, steps and FLOPs):
- `flip`: horizontal flips, as the other reruns train;
- `shift_flip`: a random integer shift in [-S, S] px on each axis, then flip, S the
  model's total stride at the training size (`data.max_shift`, traced from the
  architecture: 16 for the simple CNN); the uncovered pixels repeat the edge, a
  `scale_shapes` scene's flat background, so objects move over it (and partly out of the
  canvas at the largest shifts);
- `half_shift_flip`: shifts in [-S/2, S/2], the narrowest range that still covers every
  phase of the subsampling grid (S + 1 offsets per axis) while moving objects half as
  far: an exploratory arm that tells "every phase" from "far".

The default variant is the CPU-scale rerun with the standard of evidence, as
`antialias.py:rerun`: the simple CNN on `scale_shapes/sweep32_fresh` (32 px, 4096 /
1024, a test split never used before) at 32 px for 6 epochs, each arm's `opt.lr_max`
chosen on the validation slice from 0.025-0.4 by accuracy at 32 px (the mean of tuning
seeds 0 and 1 per value), seeds 0-4 (seed by seed), tested at 24-40 px and over the whole
subsampling period on the test images (`jag_period`, `pred_change`, `prob_change`,
`cons_period`). `:photos` is the same on `photos/sweep32` (real photographs; no fresh
split). `:tuned64` is the same at 64 px on `scale_shapes/default_fresh` for 8 epochs,
grid 0.05-0.8, sized for a GPU. `:px64` is the same sized for the CPU with converged
networks (RESEARCH.md): 16 epochs at 64 px (`PX64_EPOCHS`, experiments/results/convergence:
within a point of 32, where 8 were 10 points short), tuned over 0.05-0.2 (`PX64_LR_GRID`),
the arms of the hypotheses only (`flip`, `shift_flip`; `half_shift_flip` is left out on
the CPU); `:px64_long` is its check of convergence (twice the budget, seeds 0 and 1,
`spec.CHECK_SEEDS`, run with `--tuning_from=<px64's workdir>`).

`get_hypotheses` names claim 5's primary hypotheses for this sweep, arm minus `flip` at
the training size: predictions change less under 1-px shifts over the whole period with
`shift_flip` (`pred_change < 0`), it is less jagged (`jag_period < 0`), and it pays for
the shifts in accuracy on unshifted test images (`acc@<size> < 0`: the shifted copies
share the same budget). `get_comparisons` sets each shift arm against `flip` and the two
shift ranges against each other (exploratory).
"""

import functools

import ml_collections

from configs import default
from progressive.data import pipeline
from progressive.models import geometry
from progressive.sweeps import spec

SEEDS = (0, 1, 2, 3, 4)
EPOCHS = 6
LR_GRID = (0.025, 0.05, 0.1, 0.2, 0.4)
TUNED64_EPOCHS = 8
TUNED64_LR_GRID = (0.05, 0.1, 0.2, 0.4, 0.8)
PX64_EPOCHS = 16
PX64_LR_GRID = (0.05, 0.1, 0.2)


def _variant(arg: str | None) -> ml_collections.ConfigDict:
  """`protocol` (`rerun`: 32 px; `tuned64`: 64 px; `px64`: 64 px, converged, for the CPU),
  `long` (`px64`'s twice the budget), `photos`, `smoke`; `px64_long` is both."""
  variant = spec.parse_arg(arg, presets={"px64_long": "px64,long"},
                           protocol=("rerun", ("rerun", "tuned64", "px64")), long=False,
                           photos=False, smoke=False)
  if variant.long and variant.protocol != "px64":
    raise ValueError(f"translation.py:{arg}: `long` is px64's check of convergence; use "
                     "px64_long.")
  return variant


def _size(variant) -> int:
  return 64 if variant.protocol in ("tuned64", "px64") and not variant.smoke else 32


def _epochs(variant) -> int:
  if variant.protocol == "px64":
    return PX64_EPOCHS * (2 if variant.long else 1)
  return TUNED64_EPOCHS if _size(variant) == 64 else EPOCHS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = _variant(arg)
  config = default.get_config("smoke" if variant.smoke else None)
  size = _size(variant)
  config.data.augment = "flip"
  if variant.smoke:
    config.stages = (dict(size=size, steps=8),)
    config.eval_sizes = (24, 32)
    return config
  config.data.name = "photos" if variant.photos else "scale_shapes"
  builder = "default" if size == 64 else "sweep32"
  config.data.builder_config = builder if variant.photos else builder + "_fresh"
  config.stages = (dict(size=size, epochs=_epochs(variant)),)
  config.eval_sizes = (48, 64, 80) if size == 64 else (24, 32, 40)
  config.progress_bar = False
  return config


@functools.cache
def total_stride(arg: str | None = None) -> int:
  """The model's total stride at the training size, traced from the architecture: the
  period of its subsampling grid, in pixels of the training images."""
  config = get_config(arg)
  num_classes = pipeline.dataset_info(config.data).num_classes
  table = geometry.layer_table(config.model, int(config.stages[-1]["size"]), num_classes)
  return int(geometry.totals(table)["total_stride"])


def _arms(arg: str | None) -> list[dict]:
  stride = total_stride(arg)
  shift = {"data.augment": "shift_flip"}
  return [
      {"name": "flip"},
      {"name": "shift_flip", **shift, "data.max_shift": stride},
      {"name": "half_shift_flip", **shift, "data.max_shift": max(1, stride // 2)},
  ]


def get_sweep(arg: str | None = None) -> list[dict]:
  """Seed by seed: every arm's seed 0, then every arm's seed 1, ..."""
  variant = _variant(arg)
  arms = _arms(arg)
  if variant.protocol == "px64":  # The hypotheses' arms only (the docstring).
    arms = [arm for arm in arms if arm["name"] != "half_shift_flip"]
  seeds = (0, 1) if variant.smoke else spec.CHECK_SEEDS if variant.long else SEEDS
  return spec.seed_by_seed(arms, seeds)


def get_tuning(arg: str | None = None) -> dict:
  variant = _variant(arg)
  grid = (0.1, 0.2) if variant.smoke else PX64_LR_GRID if variant.protocol == "px64" else (
      TUNED64_LR_GRID if _size(variant) == 64 else LR_GRID)
  return {"field": "opt.lr_max", "grid": grid, "metric": "acc@{size}", "seeds": spec.TUNING_SEEDS,
          "extend_edges": spec.PX64_EXTEND_EDGES if variant.protocol == "px64" else 0}


def get_comparisons(arg: str | None = None) -> list[tuple[str, str]]:
  """`(arm, baseline)`: each shift range against flip, and the full range against half
  (those the sweep trains)."""
  arms = set(spec.arm_names(get_sweep(arg)))
  pairs = [("shift_flip", "flip"), ("half_shift_flip", "flip"), ("shift_flip", "half_shift_flip")]
  return [pair for pair in pairs if set(pair) <= arms]


def get_hypotheses(arg: str | None = None) -> list[dict]:
  """Claim 5's primary hypotheses (stride^2): `shift_flip` minus `flip` at the training
  size, each with its predicted sign."""
  size = _size(_variant(arg))
  shifted, flip = spec.group("shift_flip"), spec.group("flip")
  return [
      dict(claim=5, name="shift_flip_changes_less", predicted="< 0",
           contrast=shifted["pred_change"] - flip["pred_change"]),
      dict(claim=5, name="shift_flip_less_jagged", predicted="< 0",
           contrast=shifted["jag_period"] - flip["jag_period"]),
      dict(claim=5, name="shift_flip_costs_accuracy", predicted="< 0",
           contrast=shifted[f"acc@{size}"] - flip[f"acc@{size}"]),
  ]
