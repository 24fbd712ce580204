r"""`progressive bench`: throughput, compile time and stage-switch cost, or the host
input pipeline's rate, printed as a table and written as JSON.

  progressive bench --config=configs/default.py --sizes=32,48,64 --batch_sizes=128
  progressive bench --config=configs/zoo.py:resnet50 --config.model.dtype=bfloat16 \
      --sizes=128,224 --batch_sizes=256 --steps=50 --json=/tmp/bench.json
  progressive bench --config=configs/default.py:smoke --smoke
  progressive bench --pipeline --config=configs/imagenette.py --sizes=128,224 \
      --workers=1,16 --device_rate=128:14000,224:5700

What each column means: `progressive.training.benchmark`.
"""

import json
import os

import jax
from absl import flags
from etils import epath

from progressive import cli
from progressive import config as config_lib
from progressive.training import benchmark


def define_flags(fv: flags.FlagValues) -> None:
  """The flags besides `--config` (which `cli` defines)."""
  flags.DEFINE_list("sizes", None, "Image sizes (default: the config's stage sizes).", flag_values=fv)
  flags.DEFINE_list("batch_sizes", None, "Global batch sizes (default: config.batch_size).",
                    flag_values=fv)
  flags.DEFINE_integer("steps", 50, "Timed steps per size.", flag_values=fv)
  flags.DEFINE_bool("smoke", False, "A few steps per size: checks the bench itself runs.",
                    flag_values=fv)
  flags.DEFINE_bool("e2e", True, "Also time the real training loop (two runs, cold and warm "
                    "cache).", flag_values=fv)
  flags.DEFINE_string("trace", None, "A jax.profiler trace of 5 bare steps of each size in "
                      "this folder (view it in TensorBoard's profile plugin or Perfetto).",
                      flag_values=fv)
  flags.DEFINE_string("json", None, "Where to write the results (default: print only).",
                      flag_values=fv)
  # The host pipeline.
  flags.DEFINE_bool("pipeline", False, "Time the host input pipeline instead of the step: "
                    "training images/s at each size, one core and --workers processes.",
                    flag_values=fv)
  flags.DEFINE_list("workers", ["1", str(os.cpu_count() or 1)],
                    "--pipeline: grain worker process counts.", flag_values=fv)
  flags.DEFINE_string("data_dir", None, "--pipeline: a folder dataset to read (default: JPEGs "
                      "written from the bundled photographs).", flag_values=fv)
  flags.DEFINE_integer("images", 240, "--pipeline: JPEGs to write when --data_dir is unset.",
                       flag_values=fv)
  flags.DEFINE_integer("pipeline_batch", 64, "--pipeline: host batch size.", flag_values=fv)
  flags.DEFINE_float("seconds", 5.0, "--pipeline: seconds timed per measurement.", flag_values=fv)
  flags.DEFINE_list("device_rate", None, "--pipeline: images/s a device step consumes, "
                    "SIZE:RATE pairs (default: measured, on an accelerator).", flag_values=fv)
  flags.DEFINE_integer("device_steps", 20, "--pipeline: bare steps that measure the rate of a "
                       "size --device_rate lacks, on an accelerator (0: none, no compile; its "
                       "need column stays empty).", flag_values=fv)


def _pipeline_main(config, fv: flags.FlagValues) -> None:
  """`--pipeline`: measures the host pipeline, prints the table, writes `--json`."""
  sizes = [int(s) for s in fv.sizes] if fv.sizes else [s["size"] for s in config.stages]
  workers = [int(w) for w in fv.workers]
  if any(w < 1 for w in workers):
    raise cli.Error(f"--workers must be counts >= 1, got {fv.workers}.")
  try:
    rates = benchmark.parse_rates(fv.device_rate)
  except ValueError as e:
    raise cli.Error(str(e)) from None
  report = benchmark.measure_pipeline(config, sizes=sizes, workers=workers, data_dir=fv.data_dir, images=fv.images,
               batch_size=fv.pipeline_batch, seconds=0.5 if fv.smoke else fv.seconds,
               device_rate=rates, device_steps=fv.device_steps)
  print(f"Host pipeline, {report['host']}, batch {report['batch_size']}, "
        f"augment={report['augment']}, JPEGs {report['jpeg_size'] or fv.data_dir}")
  print(benchmark.pipeline_table(report, workers))
  if fv.json:
    epath.Path(fv.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"Wrote {fv.json}")


def _main(fv: flags.FlagValues) -> None:
  """Runs the bench, prints the table, writes `--json`."""
  config = fv.config
  if fv.pipeline:
    _pipeline_main(config, fv)
    return
  config_lib.validate(config, jax.device_count())
  sizes = fv.sizes or [s["size"] for s in config.stages]
  batch_sizes = fv.batch_sizes or [config.batch_size]
  steps = 3 if fv.smoke else fv.steps
  report = benchmark.measure_steps(config, sizes, batch_sizes, steps, e2e=fv.e2e,
                                   trace_dir=fv.trace)
  print(f"{report['device']}, {report['model']} ({report['dtype']}), {steps} timed steps per size")
  print(benchmark.step_table(report["rows"]))
  if report["totals"]:
    t = report["totals"]
    print(
        f"Loop compile time: {t['cold_compile_s']:.2f}s cold, {t['warm_compile_s']:.2f}s with "
        f"the persistent cache ({t['warm_over_cold']:.0%})."
    )
  if fv.json:
    epath.Path(fv.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"Wrote {fv.json}")


# No jax.distributed: one process times the devices it sees, and the loop runs it starts
# (`progressive train`) would join a multi-process run themselves.
COMMAND = cli.Command(
    "bench", __doc__, define_flags, _main, config="Config file, e.g. configs/default.py.",
    distributed=False,
)
