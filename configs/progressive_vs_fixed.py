r"""Claims 3 and 4: progressive resizing against one fixed size and against zoom
augmentation, at an equal training budget; and the multi-size test-time ensemble.

  progressive sweep --config=configs/progressive_vs_fixed.py --workdir=/tmp/pvf
  progressive sweep --config=configs/progressive_vs_fixed.py:smoke --workdir=/tmp/pvf_smoke

The simple CNN on `scale_shapes`, every point with seeds 0, 1 and 2:
- `progressive_run`: 32 -> 48 -> 64 px (3, 2 and 2 epochs), one one-cycle over the run;
- `progressive_stage`: the same stages, the one-cycle restarted at every stage;
- `fixed64`: every step at 64 px;
- `fixed64_zoom`: every step at 64 px with random-resized-crop and flip (zoom
  augmentation: scales mixed inside every batch rather than one scale per stage).

Equal budget means equal training FLOPs: a convolutional network with a global-pool
head costs in proportion to the pixels of its input, so a fixed-size point trains for
`sum_i epochs_i * (size_i / 64)^2` epochs at 64 px (`equal_budget`). The `train_gflops`
column (XLA's own count of each compiled step, times its steps) checks the match;
`images_seen` shows the fixed points see fewer images. Every point is tested at every
size and by the softmax averaged over the progressive run's sizes (32, 48, 64; the
`acc_ens` and `ens_gain` columns).
"""

import ml_collections

from configs import default
from progressive.sweeps import spec

STAGES = (dict(size=32, epochs=3), dict(size=48, epochs=2), dict(size=64, epochs=2))
SMOKE_STAGES = (dict(size=16, steps=8), dict(size=24, steps=8), dict(size=32, steps=8))
SEEDS = (0, 1, 2)


def equal_budget(stages, size: int) -> dict:
  """One stage at `size` costing the FLOPs of `stages` (pixels per image times images)."""
  key = "steps" if "steps" in stages[0] else "epochs"
  total = sum(s[key] * (s["size"] / size) ** 2 for s in stages)
  return dict(size=size, **{key: round(total) if key == "steps" else round(total, 4)})


def _smoke(arg: str | None) -> bool:
  return spec.parse_arg(arg, smoke=False).smoke


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = _smoke(arg)
  config = default.get_config("smoke" if smoke else None)
  config.stages = SMOKE_STAGES if smoke else STAGES
  config.eval_sizes = (16, 24, 32) if smoke else (24, 32, 40, 48, 56, 64)
  return config


def get_ensemble_sizes(arg: str | None = None) -> tuple[int, ...]:
  return tuple(s["size"] for s in (SMOKE_STAGES if _smoke(arg) else STAGES))


def get_sweep(arg: str | None = None) -> list[dict]:
  smoke = _smoke(arg)
  stages = SMOKE_STAGES if smoke else STAGES
  fixed = (equal_budget(stages, stages[-1]["size"]),)
  largest = stages[-1]["size"]
  points = [
      {"name": "progressive_run", "stages": stages, "opt.cycle": "run"},
      {"name": "progressive_stage", "stages": stages, "opt.cycle": "stage"},
      {"name": f"fixed{largest}", "stages": fixed},
      {"name": f"fixed{largest}_zoom", "stages": fixed, "data.augment": "rrc_flip"},
  ]
  if smoke:
    return spec.with_seeds([points[0], points[2]], (0, 1))
  return spec.with_seeds(points, SEEDS)
