r"""Claim 6: what keeps CNN training stable: one-cycle, batch norm, larger batches.

  python -m progressive.sweep --config=configs/stability.py --workdir=/tmp/stability
  python -m progressive.sweep --config=configs/stability.py:smoke --workdir=/tmp/stability_smoke

The simple CNN on `scale_shapes` at 32 px (one stage), recording fastai's activation
statistics every few steps (`activation_stats.jsonl`; plot them with
`python -m progressive.analyze --workdir=DIR/<point>`):
- `no_bn_constant`: no batch norm, a constant LR and momentum (div = div_final = 1);
- `no_bn_one_cycle`: no batch norm, one-cycle LR with inverse momentum;
- `bn_one_cycle`: batch norm and one-cycle;
- `bn_one_cycle_batch512`: the same with 4x the batch size (and 4x fewer steps).
Steps with a non-finite loss are skipped and counted rather than ending the point.
"""

import ml_collections

from configs import default

EPOCHS = 3


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = arg == "smoke"
  config = default.get_config("smoke" if smoke else None)
  config.stages = (dict(size=32, steps=8),) if smoke else (dict(size=32, epochs=EPOCHS),)
  config.eval_sizes = (32,)
  config.activation_stats_every = 2 if smoke else 10
  config.log_every_steps = 2 if smoke else 10
  config.skip_nonfinite = True
  config.opt.lr_max = 0.4
  return config


def get_sweep(arg: str | None = None) -> list[dict]:
  constant = {"opt.div": 1.0, "opt.div_final": 1.0, "opt.moms": (0.9, 0.9, 0.9)}
  big = 256 if arg == "smoke" else 512
  return [
      {"name": "no_bn_constant", "model.batch_norm": False, **constant},
      {"name": "no_bn_one_cycle", "model.batch_norm": False},
      {"name": "bn_one_cycle", "model.batch_norm": True},
      {"name": f"bn_one_cycle_batch{big}", "model.batch_norm": True, "batch_size": big},
  ]
