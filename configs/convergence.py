r"""How long must a network train to converge at 64 px? A budget ladder, on a validation slice.

  progressive sweep --config=configs/convergence.py --workdir=/tmp/convergence --shift_images=64
  progressive sweep --config=configs/convergence.py:photos --workdir=/tmp/convergence_photos --shift_images=64
  progressive sweep --config=configs/convergence.py:smoke --workdir=/tmp/convergence_smoke

RESEARCH.md's standard: an arm is trained to convergence when its accuracy at its own
training size is within a point of a run with twice the budget. Before the 64 px sweeps
of the claims can be sized, this finds that budget for the simple CNN: one stage at 64 px
on `scale_shapes/default` (10,000 training images; `:photos`: `photos/default`, real
photographs), whole images with flips, for E = 4, 8, 16 and 32 epochs (arms `e4` ...
`e32`, each twice the last), seeds 0 and 1, at `opt.lr_max` 0.2 (not tuned per budget:
the ladder sizes the sweeps, which tune their own rates; 0.2 is what train_test_size's
tuning chose for each of its fixed-size arms at 16-32 px. At the default job's 0.4, one
seed of two trained unstably at 64 px, its loss jumping back up mid-run: 0.77 against
0.99 on the validation slice at 8 epochs, which would have measured the rate, not the
budget). The budget is a choice,
so it is made on a validation slice: each point trains on `train[:90%]` and is evaluated
on `train[90%:]`, never on the test split.

Reading it: `comparisons.csv` holds each budget against the one before
(`acc@64` of `e8` minus `e4`, ...; exploratory, with Welch intervals over the two seeds);
the converged budget is the first E whose next budget gains less than a point. There are
no primary hypotheses: this sweep tests no claim.
"""

import itertools

import ml_collections

from configs import default
from progressive.sweeps import spec

EPOCHS = (4, 8, 16, 32)
SEEDS = (0, 1)
SIZE = 64
LR_MAX = 0.2


def _variant(arg: str | None) -> ml_collections.ConfigDict:
  """`photos`, `smoke`."""
  return spec.parse_arg(arg, photos=False, smoke=False)


def _size(variant) -> int:
  return 32 if variant.smoke else SIZE


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = _variant(arg)
  config = default.get_config("smoke" if variant.smoke else None)
  if variant.photos:
    config.data.name = "photos"
  config.data.builder_config = "small" if variant.smoke else "default"
  config.data.augment = "flip"
  config.opt.lr_max = LR_MAX
  # The budget is chosen here: a validation slice of the training split, not the test split.
  config.data.train_split = "train[:90%]"
  config.data.eval_split = "train[90%:]"
  config.stages = (dict(size=_size(variant), epochs=EPOCHS[0]),)
  config.eval_sizes = (_size(variant),)
  config.progress_bar = False
  return config


def _budgets(variant) -> tuple[int, ...]:
  return (1, 2) if variant.smoke else EPOCHS


def get_sweep(arg: str | None = None) -> list[dict]:
  variant = _variant(arg)
  arms = [{"name": f"e{epochs}", "stages": (dict(size=_size(variant), epochs=epochs),)}
          for epochs in _budgets(variant)]
  return spec.with_seeds(arms, SEEDS)


def get_comparisons(arg: str | None = None) -> list[tuple[str, str]]:
  """Each budget against the one before it (half of it)."""
  budgets = _budgets(_variant(arg))
  return [(f"e{longer}", f"e{shorter}") for shorter, longer in itertools.pairwise(budgets)]


def get_headline(arg: str | None = None) -> list[str]:
  return [f"acc@{_size(_variant(arg))}", "images_seen", "train_gflops"]
