r"""`progressive lr-find`: fastai's learning-rate range test (`Learner.lr_find`).

  progressive lr-find --config=configs/default.py --workdir=/tmp/progressive/lr_find
  progressive lr-find --config=configs/default.py:smoke --workdir=/tmp/lr_smoke \
      --start_lr=1e-4 --end_lr=1e6 --num_steps=30

From the config's initial state, the LR grows exponentially from `--start_lr` to
`--end_lr` over `--num_steps` steps of the real training step
(`progressive.training.lr_find`). Writes only `lr_find.json` and `lr_find.png` into the
workdir and prints fastai's suggestions. See docs/LR_FIND.md.
"""

from typing import Any

import ml_collections
from absl import flags
from etils import epath

from progressive import cli
from progressive.analysis import plots
from progressive.training import lr_find, parallel
from progressive.training import workdir as workdir_lib


def find_and_report(config: ml_collections.ConfigDict, workdir: str, **kwargs) -> dict[str, Any]:
  """`lr_find.lr_find(config, workdir, **kwargs)`, then `lr_find.png` and the summary."""
  result = lr_find.lr_find(config, workdir, **kwargs)
  if parallel.is_primary():
    figure = plots.lr_find(result, skip_end=lr_find.SKIP_END, recommended=lr_find.RECOMMENDED)
    workdir_lib.write_atomically(epath.Path(workdir) / "lr_find.png",
                                 lambda p: figure.savefig(str(p), format="png", dpi=120))
  parallel.log(lr_find.summary(result, workdir))
  return result


def define_flags(fv: flags.FlagValues) -> None:
  """The flags besides `--config` (which `cli` defines)."""
  define = {"flag_values": fv}
  flags.DEFINE_string("workdir", None, "For lr_find.json and lr_find.png (not a training run's).",
                      required=True, **define)
  flags.DEFINE_float("start_lr", 1e-7, "LR of the first step.", **define)
  flags.DEFINE_float("end_lr", 10.0, "LR of the last step.", **define)
  flags.DEFINE_integer("num_steps", 100, "Steps from start_lr to end_lr (fastai: 100).", **define)
  flags.DEFINE_integer("size", None, "Image size (default: the first stage's).", **define)
  flags.DEFINE_integer("batch_size", None, "Global batch size (default: the first stage's).",
                       **define)
  flags.DEFINE_bool("stop_div", True, "Stop once the smoothed loss exceeds 4x its minimum.",
                    **define)
  flags.DEFINE_float("smoothing", 0.98, "fastai's beta: weight of the past in the smoothed loss.",
                     **define)


def _main(fv: flags.FlagValues) -> None:
  """Runs the range test into `--workdir`."""
  find_and_report(
      fv.config, fv.workdir, start_lr=fv.start_lr, end_lr=fv.end_lr, num_steps=fv.num_steps,
      size=fv.size, batch_size=fv.batch_size, stop_div=fv.stop_div, beta=fv.smoothing,
  )


COMMAND = cli.Command(
    "lr-find", __doc__, define_flags, _main, config="Config file, e.g. configs/default.py[:smoke]."
)
