r"""Claim 6: what keeps CNN training stable: one-cycle, batch norm, larger batches.

  progressive sweep --config=configs/stability.py --workdir=/tmp/stability
  progressive sweep --config=configs/stability.py:rerun --workdir=/tmp/stability_rerun
  progressive sweep --config=configs/stability.py:px64 --workdir=/tmp/stability_px64
  progressive sweep --config=configs/stability.py:smoke --workdir=/tmp/stability_smoke

The simple CNN on `scale_shapes` at 32 px (one stage), recording fastai's activation
statistics every few steps (`activation_stats.jsonl`; plot them with
`progressive analyze --workdir=DIR/<point>`):
- `no_bn_constant`: no batch norm, a constant LR and momentum (div = div_final = 1);
- `no_bn_one_cycle`: no batch norm, one-cycle LR with inverse momentum;
- `bn_one_cycle`: batch norm and one-cycle;
- `bn_one_cycle_batch512`: the same with 4x the batch size (and 4x fewer steps).
Steps with a non-finite loss are skipped and counted rather than ending the point.

`:rerun` (and `:rerun_photos`, on real photographs) is the CPU-scale rerun with the
standard of evidence: on `scale_shapes/sweep32_fresh` at 32 px, 3 epochs at batch 128, the arms
`no_bn_constant`, `no_bn_one_cycle`, `bn_constant`, `bn_one_cycle`,
`bn_one_cycle_batch512`: 4x the batch for 4x the epochs, so the same 96 optimizer steps
(larger batches at equal steps), and its matched budget `bn_one_cycle_at_batch512_images`:
batch 128 for those 4x epochs (384 steps), the images and FLOPs of batch 512, so that
"larger batches" is told from "4x the images". Every arm is trained with tuning seeds 0 and 1 per
learning rate of `LR_GRID` (0.0125 to 3.2, factors of 2) on the validation slice: that
grid is the result for "does batch norm widen the usable range of learning rates?"
(`tuning.csv`: each cell's mean over the two seeds, its std and each seed's value), and
the best mean per arm, whatever it is for batch 512 (a linear scaling
rule would pick 4x batch 128's), runs with seeds 0-4 on the test split. Column
`act_near_zero` is the dead-unit measure: the fraction of ReLU outputs <= 0.05, over
every ReLU and every activation record of the run; `act_near_zero_preact` is fastai's
figure, the same fraction of the convolutions' outputs before batch norm and ReLU (a
bias-free convolution's are about half negative by sign alone), and `act_std` their std
at the last record; `skipped_steps` counts the steps skipped for a non-finite loss.

`get_hypotheses` (the reruns) names claim 6's primary hypotheses: each of its three
remedies makes training healthier as the activation statistics show it (fastbook ch. 13:
fewer activations near zero), i.e. lowers `act_near_zero`, the fraction of ReLU outputs
<= 0.05 over the run, each with the predicted sign "< 0":
- batch norm: `bn_one_cycle` minus `no_bn_one_cycle`;
- one-cycle with inverse momentum, without batch norm (where fastbook showed it):
  `no_bn_one_cycle` minus `no_bn_constant`;
- larger batches at equal images (and FLOPs): `bn_one_cycle_batch512` minus
  `bn_one_cycle_at_batch512_images` (at equal steps batch 512 also sees 4x the images;
  that comparison stays exploratory).
Accuracy and the other comparisons are exploratory (`get_comparisons`).

`:px64` asks all three at 64 px with converged networks (RESEARCH.md): the simple CNN on
`scale_shapes/default_fresh` (64 px, 10,000 / 2,000, a test split drawn afresh) with
flips for 16 epochs (`PX64_EPOCHS`: experiments/results/convergence found 16 epochs
within a point of 32 at 64 px), the arms `no_bn_constant`, `no_bn_one_cycle`,
`bn_one_cycle` and `bn_one_cycle_batch512` (batch 512 for the same 16 epochs: the images
and FLOPs of `bn_one_cycle`, a quarter of its steps), `opt.lr_max` tuned per arm over
`PX64_LR_GRID` (0.025-0.4 for the arms with batch norm: the 32 px rerun's chose 0.1 and
0.2) and `PX64_NO_BN_LR_GRID` (0.0015625-0.4 for those without: at 64 px 0.025 diverged
without batch norm at a constant rate, and both chose 0.00625 when it was the lowest),
two seeds per value, by accuracy at 64 px (a rate at which a tuning seed diverges is
never chosen), seeds 0-4, activation statistics every 16 steps. The larger batch is
asked at equal images only, `bn_one_cycle_batch512` minus `bn_one_cycle` (the rerun's
contrast, whose batch-128 arm at batch 512's images is here `bn_one_cycle` itself): at
equal steps batch 512 would train 64 epochs, four times a point of the other arms, and
so would the rerun's matched budget. `:px64_long` is its check of convergence
(RESEARCH.md: within a point of twice the budget): every arm twice as long, seeds 0 and
1 (`spec.CHECK_SEEDS`), run with `--tuning_from=<px64's workdir>` at the rates `:px64`
chose.
"""

import ml_collections

from configs import default
from progressive.sweeps import spec

EPOCHS = 3
# 0.0125 and 0.025 were added after the first run chose 0.05, the grid's lower edge,
# for both constant-LR arms.
LR_GRID = (0.0125, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
SEEDS = (0, 1, 2, 3, 4)
PX64_EPOCHS = 16
# The arms with batch norm: the 32 px rerun chose 0.1 (bn_one_cycle) and 0.2 (batch 512,
# at 4x these steps; the top of 0.0125-0.2 here then), 0.025 being far worse (0.44
# against 0.58): from 0.025 to 0.4.
PX64_LR_GRID = (0.025, 0.05, 0.1, 0.2, 0.4)
# The arms without batch norm: the first px64 grid started at 0.025, which diverged for
# no_bn_constant (a tuning seed of two; the other barely left chance), so it went down to
# 0.00625; both arms chose that, the lowest rate (no_bn_one_cycle: 0.65 on the validation
# slice, 0.25 at 0.0125), so it goes two steps further down for them.
PX64_NO_BN_LR_GRID = (0.0015625, 0.003125, 0.00625, 0.0125, *PX64_LR_GRID)


def _variant(arg: str | None) -> ml_collections.ConfigDict:
  """`rerun` (the standard of evidence), `px64` (the same at 64 px, converged), `long`
  (`px64`'s twice the budget), `photos`, `smoke`; `rerun_photos` and `px64_long` are both."""
  variant = spec.parse_arg(
      arg, presets={"rerun_photos": "rerun,photos", "px64_long": "px64,long"}, rerun=False,
      px64=False, long=False, photos=False, smoke=False)
  if variant.long and not variant.px64:
    raise ValueError(f"stability.py:{arg}: `long` is px64's check of convergence; use px64_long.")
  return variant


def _px64_epochs(variant) -> int:
  return 2 * PX64_EPOCHS if variant.long else PX64_EPOCHS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = _variant(arg)
  config = default.get_config("smoke" if variant.smoke else None)
  config.stages = (dict(size=32, steps=8),) if variant.smoke else (dict(size=32, epochs=EPOCHS),)
  config.eval_sizes = (32,)
  config.activation_stats_every = 2 if variant.smoke else 10
  config.log_every_steps = 2 if variant.smoke else 10
  config.skip_nonfinite = True
  config.opt.lr_max = 0.4
  if variant.rerun:  # sweep32's training images, a test split never used before.
    config.data.builder_config = "sweep32" if variant.photos else "sweep32_fresh"
    config.activation_stats_every = 16
    config.log_every_steps = 16
    config.progress_bar = False
  if variant.px64:  # default's training images at 64 px, a test split never used before.
    config.data.builder_config = "default_fresh"
    config.stages = (dict(size=64, epochs=_px64_epochs(variant)),)
    config.eval_sizes = (64,)
    config.data.augment = "flip"  # As the budget's ladder trained.
    config.activation_stats_every = 16
    config.log_every_steps = 16
    config.progress_bar = False
  if variant.photos:
    config.data.name = "photos"
    config.data.augment = "flip"
  return config


def get_sweep(arg: str | None = None) -> list[dict]:
  variant = _variant(arg)
  constant = {"opt.div": 1.0, "opt.div_final": 1.0, "opt.moms": (0.9, 0.9, 0.9)}
  arms = [
      {"name": "no_bn_constant", "model.batch_norm": False, **constant},
      {"name": "no_bn_one_cycle", "model.batch_norm": False},
      {"name": "bn_one_cycle", "model.batch_norm": True},
  ]
  if variant.px64:  # Batch 512 at bn_one_cycle's images (the docstring).
    batch512 = {"name": "bn_one_cycle_batch512", "model.batch_norm": True, "batch_size": 512}
    return spec.with_seeds([*arms, batch512], spec.CHECK_SEEDS if variant.long else SEEDS)
  if variant.rerun:
    longer = {"stages": (dict(size=32, epochs=4 * EPOCHS),)}
    return spec.with_seeds([
        *arms[:2],
        {"name": "bn_constant", "model.batch_norm": True, **constant},
        arms[2],
        {"name": "bn_one_cycle_batch512", "model.batch_norm": True, "batch_size": 512, **longer},
        # Batch 128 for batch 512's images (and FLOPs): the matched budget.
        {"name": "bn_one_cycle_at_batch512_images", "model.batch_norm": True, **longer},
    ], SEEDS)
  big = 256 if variant.smoke else 512
  return [*arms, {"name": f"bn_one_cycle_batch{big}", "model.batch_norm": True, "batch_size": big}]


def get_tuning(arg: str | None = None) -> dict | None:
  variant = _variant(arg)
  if variant.px64:  # The arms without batch norm were moved lower by hand as it tuned;
    # an arm still chosen at an edge is tuned one value further before its seeds.
    return {"field": "opt.lr_max", "grid": PX64_LR_GRID, "metric": "acc@64",
            "seeds": spec.TUNING_SEEDS, "extend_edges": spec.PX64_EXTEND_EDGES,
            "arm_grids": {arm: PX64_NO_BN_LR_GRID for arm in ("no_bn_constant", "no_bn_one_cycle")}}
  if not variant.rerun:
    return None
  return {"field": "opt.lr_max", "grid": LR_GRID, "metric": "acc@32", "seeds": spec.TUNING_SEEDS}


def get_comparisons(arg: str | None = None) -> list[tuple[str, str]]:
  """`(arm, baseline)`: batch norm against none, one-cycle against constant, the larger
  batch against batch 128 (the rerun: at equal steps; px64: at equal images) and against
  its matched budget, those the sweep trains."""
  variant = _variant(arg)
  if not (variant.rerun or variant.px64):
    return []
  arms = set(spec.arm_names(get_sweep(arg)))
  pairs = [("bn_one_cycle", "no_bn_one_cycle"), ("bn_constant", "no_bn_constant"),
           ("no_bn_one_cycle", "no_bn_constant"), ("bn_one_cycle", "bn_constant"),
           ("bn_one_cycle_batch512", "bn_one_cycle"),
           ("bn_one_cycle_batch512", "bn_one_cycle_at_batch512_images")]
  return [pair for pair in pairs if set(pair) <= arms]


def get_hypotheses(arg: str | None = None) -> list[dict]:
  """Claim 6's primary hypotheses for the reruns and `px64` (the other variants have no
  seeds), each with its predicted sign: batch norm, one-cycle and larger batches each
  lower the fraction of near-zero ReLU outputs over the run (the larger batch at equal
  images: against its matched budget in the rerun, against `bn_one_cycle` at px64)."""
  variant = _variant(arg)
  if not (variant.rerun or variant.px64):
    return []

  def near_zero(arm):
    return spec.group(arm)["act_near_zero"]

  out = [
      dict(claim=6, name="bn_fewer_near_zero", predicted="< 0",
           contrast=near_zero("bn_one_cycle") - near_zero("no_bn_one_cycle")),
      dict(claim=6, name="one_cycle_fewer_near_zero_without_bn", predicted="< 0",
           contrast=near_zero("no_bn_one_cycle") - near_zero("no_bn_constant")),
  ]
  same_images = "bn_one_cycle" if variant.px64 else "bn_one_cycle_at_batch512_images"
  return [*out, dict(claim=6, name="batch512_fewer_near_zero_at_equal_images", predicted="< 0",
                     contrast=near_zero("bn_one_cycle_batch512") - near_zero(same_images))]


def get_headline(arg: str | None = None) -> list[str]:
  """The dead-unit measure, fastai's figure beside it, and accuracy; aggregation also
  draws the measure over training (`activations.png`)."""
  size = 24 if _variant(arg).smoke else 64 if _variant(arg).px64 else 32
  return ["act_near_zero", "act_near_zero_preact", f"acc@{size}", "skipped_steps"]

