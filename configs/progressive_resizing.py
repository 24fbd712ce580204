r"""Claim 3 rerun at CPU scale: progressive resizing against fixed sizes at equal FLOPs and
at equal steps, against the reverse order, each arm's learning rate tuned, five seeds.

  progressive sweep --config=configs/progressive_resizing.py --workdir=/tmp/pr
  progressive sweep --config=configs/progressive_resizing.py:photos --workdir=/tmp/pr_photos
  progressive sweep --config=configs/progressive_resizing.py:long --workdir=/tmp/pr_long
  progressive sweep --config=configs/progressive_resizing.py:px64 --workdir=/tmp/pr_px64
  progressive sweep --config=configs/progressive_resizing.py:smoke --workdir=/tmp/pr_smoke

The simple CNN on `scale_shapes/sweep32_fresh` (32 px, 4096 train / 1024 test, the test
split drawn afresh: `sweep32`'s was reused across earlier reruns; the 64 px
dataset's arms do not fit five seeds and a tuning grid into 90 minutes on two cores).
Arms, at one budget (7 epochs of the progressive schedule):
- `progressive`: 16 -> 24 -> 32 px for 3, 2 and 2 epochs, one one-cycle over the run;
- `reverse`: the same stages largest first (32 -> 24 -> 16, 2, 2, 3 epochs): the same
  sizes, epochs and FLOPs, so only the order differs (does "small first" matter?);
- `fixed32_flops`: 32 px for the progressive run's training FLOPs (pixels per image times
  images: 3.875 epochs);
- `fixed32_steps`: 32 px for the progressive run's optimizer steps (7 epochs, 1.8x its FLOPs);
- `fixed24_flops`: 24 px, the middle size, for the progressive run's FLOPs (6.89 epochs);
- `fixed32_zoom_flops`: zoom augmentation, `fixed32_flops` trained with random-resized-crop
  (35-100% of the area) and flip: scales mixed inside every batch rather than one scale per
  stage (the claim's contrast; the earlier `progressive_vs_fixed` zoom arm was untuned, 3
  seeds).
`opt.lr_max` is chosen per arm from the grid on a validation slice of the training split
(`train[:90%]` / `train[90%:]`, by accuracy at 32 px, the mean of two tuning seeds per
value), then every arm runs with seeds
0-4 on the full training split and is tested once on the test split. Test sizes 16-48
px; the network's total stride is 16, so 16 and 32 px are on its grid and 24, 40 and 48
are not (the analysis report marks them). `get_comparisons` names the headline
differences; the sweep writes them with 95% intervals and Welch p-values (exploratory).

`get_hypotheses` names claim 3's primary hypotheses, each with its predicted sign (every
variant; the smoke run has no zoom arm, so only the first and third), with batch-norm
statistics recomputed at the test size where the size changes (`acc_bn@S`):
- progressive resizing beats one fixed size at equal FLOPs: `progressive` minus
  `fixed32_flops` in accuracy at 32 px (`acc@32 > 0`);
- it beats zoom augmentation at equal FLOPs: `progressive` minus `fixed32_zoom_flops`
  (`acc@32 > 0`);
- its mechanism, "an ensemble across sizes learnt in one run": the progressive network
  keeps more of its accuracy at the sizes it trained at first than the fixed network
  does, the mean retention `acc_bn@S / acc_bn@32` over S = 16 and 24 px, `progressive`
  minus `fixed32_flops` (> 0: an interaction of arm and test size).

`:photos` runs the same sweep on real photographs, `photos/sweep32` (16 grey classes, 32
px, 4096 / 1024, docs/PHOTOS.md), training with horizontal flips as configs/photos.py does.

`:long` and `:photos_long` are the second budget: every stage twice as long (6, 4 and 4
epochs: 14), the same arms but `reverse` (the order control, answered at the first
budget), so that accuracy against training FLOPs has two points per arm; on
`scale_shapes` it is the first budget's check of convergence (RESEARCH.md: within a
point of twice the budget). The default variant and `:photos_long` tune over
`WIDE_LR_GRID` (0.1-1.6), `:long` over `LONG_LR_GRID` (0.1-0.4), `:photos` over
`LR_GRID` (0.2-0.8); see the grids' comments. The long variants also report claim 4's
size ensemble (`get_ensemble_sizes`: the last training size and its neighbours 8 px
away, mean softmax with stored and recomputed statistics, against the seed ensemble),
for networks that trained at several sizes.

`:px64` asks the primary hypotheses at 64 px with converged networks (RESEARCH.md): the
simple CNN on `scale_shapes/default_fresh` (64 px, 10,000 / 2,000, a test split drawn
afresh, trained with flips as the ladder was: the zoom arm then differs from the others
by its crops alone), `progressive` 32 -> 48 -> 64 px for 12, 8 and 8 epochs
(`PX64_STAGES`), so that `fixed64_flops` trains 15.5 epochs at 64 px, about the 16 that
experiments/results/convergence found within a point of 32; the arms of the hypotheses
only (`progressive`, `fixed64_flops`, `fixed64_zoom_flops`: each point costs about one
converged 64 px run, and the CPU runs them one at a time), tuned over `LR_GRID_64`
(0.1-0.4, where the ladder's 0.2 trained stably and 0.4 did not for one seed of two),
tested at 32-96 px. `:px64_long` is its check of convergence (RESEARCH.md: within a
point of twice the budget): every arm twice as long, seeds 0 and 1 (`spec.CHECK_SEEDS`),
run with `--tuning_from=<px64's workdir>` at the rates `:px64` chose.
"""

import ml_collections

from configs import default
from configs.progressive_vs_fixed import equal_budget
from progressive.sweeps import spec

STAGES = (dict(size=16, epochs=3), dict(size=24, epochs=2), dict(size=32, epochs=2))
# `:px64`: each size doubled, each stage 4x as long (the docstring).
PX64_STAGES = (dict(size=32, epochs=12), dict(size=48, epochs=8), dict(size=64, epochs=8))
PX64_ARMS = ("progressive", "fixed64_flops", "fixed64_zoom_flops")
LR_GRID_64 = (0.1, 0.2, 0.4)
SMOKE_STAGES = (dict(size=16, steps=6), dict(size=24, steps=4), dict(size=32, steps=4))
SEEDS = (0, 1, 2, 3, 4)
LR_GRID = (0.2, 0.4, 0.8)
# The first photographs budget chose an edge of LR_GRID for four of its five arms (0.2
# or 0.8), so the photographs' second budget tunes over a grid twice as wide each way;
# so does the first `scale_shapes` budget, where a check found 0.1 better than LR_GRID's
# choice for three arms (by 1-2.5 points; experiments/results/progressive_resizing_edges).
# The other variants' checks found no value beyond LR_GRID better than its choice by
# more than 2.5 points (HISTORY.md).
WIDE_LR_GRID = (0.1, 0.2, 0.4, 0.8, 1.6)
# The second `scale_shapes` budget: the first (sweep32_fresh) chose 0.1 or 0.2 for every
# arm, 0.4 was worse for each and 0.8-1.6 far worse (experiments/results/
# progressive_resizing_fresh/tuning.csv), so the twice-as-long runs tune around those.
LONG_LR_GRID = (0.1, 0.2, 0.4)


def _variant(arg: str | None) -> ml_collections.ConfigDict:
  """`photos`, `long` (the second budget), `px64`, `smoke`; `photos_long` and `px64_long`
  are two."""
  return spec.parse_arg(arg, presets={"photos_long": "photos,long", "px64_long": "px64,long"},
                        photos=False, long=False, px64=False, smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = _variant(arg)
  config = default.get_config("smoke" if variant.smoke else None)
  # The full variants: sweep32's training images, a test split never used before.
  config.data.builder_config = "small" if variant.smoke else "sweep32" if variant.photos else (
      "default_fresh" if variant.px64 else "sweep32_fresh")
  if variant.photos or variant.px64:  # px64: flips, as the budget's ladder trained.
    config.data.augment = "flip"
  if variant.photos:
    config.data.name = "photos"
  config.stages = _stages(variant)
  config.eval_sizes = (16, 24, 32) if variant.smoke else tuple(
      (2 if variant.px64 else 1) * s for s in (16, 24, 32, 40, 48))
  config.progress_bar = False
  return config


def _stages(variant):
  if variant.smoke:
    return SMOKE_STAGES
  stages = PX64_STAGES if variant.px64 else STAGES
  return tuple(dict(s, epochs=2 * s["epochs"]) for s in stages) if variant.long else stages


def _arms(stages) -> list[dict]:
  key = "steps" if "steps" in stages[0] else "epochs"
  largest, middle = stages[-1]["size"], stages[1]["size"]
  steps_equal = dict(size=largest, **{key: sum(s[key] for s in stages)})
  return [
      {"name": "progressive", "stages": stages},
      {"name": "reverse", "stages": tuple(reversed(stages)), "require_increasing_sizes": False},
      {"name": f"fixed{largest}_flops", "stages": (equal_budget(stages, largest),)},
      {"name": f"fixed{largest}_steps", "stages": (steps_equal,)},
      {"name": f"fixed{middle}_flops", "stages": (equal_budget(stages, middle),)},
      {"name": f"fixed{largest}_zoom_flops", "stages": (equal_budget(stages, largest),),
       "data.augment": "rrc_flip"},
  ]


def get_sweep(arg: str | None = None) -> list[dict]:
  variant = _variant(arg)
  if variant.smoke:
    return spec.with_seeds(_arms(SMOKE_STAGES)[:3], (0, 1))
  arms = _arms(_stages(variant))
  if variant.px64:
    arms = [a for a in arms if a["name"] in PX64_ARMS]
  elif variant.long:
    arms = [a for a in arms if a["name"] != "reverse"]
  return spec.with_seeds(arms, spec.CHECK_SEEDS if variant.px64 and variant.long else SEEDS)


def get_tuning(arg: str | None = None) -> dict:
  variant = _variant(arg)
  largest = _stages(variant)[-1]["size"]
  if variant.smoke:
    grid = (0.2, 0.4)
  elif variant.px64:
    grid = LR_GRID_64
  elif variant.long and not variant.photos:
    grid = LONG_LR_GRID
  elif variant.photos and not variant.long:
    grid = LR_GRID
  else:  # The first budget on scale_shapes and the photographs' second.
    grid = WIDE_LR_GRID
  return {"field": "opt.lr_max", "grid": grid, "metric": f"acc@{largest}",
          "seeds": spec.TUNING_SEEDS, "extend_edges": spec.PX64_EXTEND_EDGES if variant.px64 else 0}


def get_ensemble_sizes(arg: str | None = None) -> dict[int, tuple[int, ...]]:
  """The 32 px long budget's size ensembles, by a point's last training size."""
  variant = _variant(arg)
  return {32: (24, 32, 40), 24: (16, 24, 32)} if variant.long and not variant.px64 else {}


def get_comparisons(arg: str | None = None) -> list[tuple[str, str]]:
  """`(arm, baseline)`: progressive against each other arm (difference: progressive minus it)."""
  return [("progressive", name) for name in spec.arm_names(get_sweep(arg))
          if name != "progressive"]


def _retention(arm: str, sizes, largest: int) -> spec.Contrast:
  """Within one network: the mean over `sizes` of `acc_bn@S / acc_bn@<largest>`."""
  g = spec.group(arm)
  first, *rest = (g[f"acc_bn@{size}"] / g[f"acc_bn@{largest}"] for size in sizes)
  return sum(rest, first) / len(sizes)


def get_hypotheses(arg: str | None = None) -> list[dict]:
  """Claim 3's primary hypotheses, each with its predicted sign (written before the run;
  the comparisons are exploratory)."""
  stages = _stages(_variant(arg))
  largest = stages[-1]["size"]
  earlier = [s["size"] for s in stages[:-1]]
  arms = set(spec.arm_names(get_sweep(arg)))
  progressive, fixed = spec.group("progressive"), spec.group(f"fixed{largest}_flops")
  zoom = f"fixed{largest}_zoom_flops"
  out = [dict(claim=3, name=f"progressive_beats_fixed{largest}_at_equal_flops", predicted="> 0",
              contrast=progressive[f"acc@{largest}"] - fixed[f"acc@{largest}"])]
  if zoom in arms:
    out.append(dict(claim=3, name="progressive_beats_zoom_at_equal_flops", predicted="> 0",
                    contrast=progressive[f"acc@{largest}"] - spec.group(zoom)[f"acc@{largest}"]))
  out.append(dict(claim=3, name="progressive_keeps_its_earlier_sizes", predicted="> 0",
                  contrast=_retention("progressive", earlier, largest)
                  - _retention(f"fixed{largest}_flops", earlier, largest)))
  return out
