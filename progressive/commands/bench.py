r"""Throughput, compile time and stage-switch cost, printed as a table and JSON.

  progressive bench --config=configs/default.py --sizes=32,48,64 --batch_sizes=128
  progressive bench --config=configs/zoo.py:resnet50 --config.model.dtype=bfloat16 \
      --sizes=128,224 --batch_sizes=256 --steps=50 --json=/tmp/bench.json
  progressive bench --config=configs/default.py:smoke --smoke
  progressive bench --pipeline --config=configs/imagenette.py --sizes=128,224 \
      --workers=1,16 --device_rate=128:14000,224:5700

The last times the host input pipeline instead (`progressive.commands.pipeline_bench`).
For each (size, batch size):
- `compile_s`: ahead-of-time compile of the bare training step.
- `bare_img_s`: steady throughput of that step on random data already on the device.
- `step_gflop`, `bare_tflop_s`: XLA's count of the floating-point operations of one step
  (forward and backward, all devices) and the rate the bare step achieves with it.
- `e2e_img_s`: throughput of the real training loop (`progressive train`, one
  stage per size, the built-in dataset, input pipeline, resizing, metrics and schedule
  included), from its train rows after each stage's first logging interval.
- `switch_s`: the stall at the switch into that stage: from its first step being asked
  for to it being ready (waiting for its compile, building the data iterator, filling
  the device prefetch). `switch_total_s` adds the end-of-stage evaluation and
  checkpoint of the previous stage.
- `cold_compile_s`, `warm_compile_s`: the loop's compile time for that stage in a run
  with an empty persistent compilation cache and in a rerun with the cache it filled.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
from absl import flags
from etils import epath

from progressive import cli, schedules
from progressive.training import compilation, parallel, train
from progressive.commands import pipeline_bench
from progressive import config as config_lib
from progressive.data import pipeline
from progressive.training.metrics import read_rows


def bare_step(config, info, size: int, batch_size: int, steps: int) -> dict:
  """Compile time and steady throughput of the training step on device-resident data."""
  stages = [dict(size=size, steps=steps + 3, batch_size=batch_size)]
  plan = schedules.stage_plan(stages, batch_size, info.num_train)
  mesh = parallel.make_mesh()
  state = train.build_state(config, info, plan, mesh)
  step_fn = parallel.make_train_step(mesh, info.mean, info.std)
  sharding = parallel.batch_sharding(mesh)
  rng = np.random.default_rng(0)
  host_size = info.train_image_size(size)
  batch = parallel.shard_batch(
      {
          "image": rng.integers(0, 256, (batch_size, host_size, host_size, 3), np.uint8),
          "label": rng.integers(0, info.num_classes, (batch_size,), np.int32),
      },
      sharding,
  )
  start = time.perf_counter()
  compiled = step_fn.lower(state, batch, size).compile()
  compile_s = time.perf_counter() - start
  for _ in range(3):  # Warm-up.
    state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, batch)
  jax.block_until_ready((state, metrics))
  seconds = time.perf_counter() - start
  flops = compilation.program_flops(compiled)
  flops = None if flops is None else flops * mesh.size  # One step over all devices.
  return {
      "compile_s": compile_s,
      "bare_img_s": steps * batch_size / seconds,
      "step_gflop": None if flops is None else flops / 1e9,
      "bare_tflop_s": None if flops is None else flops * steps / seconds / 1e12,
  }


BENCH_CONFIG = '''
import json
import ml_collections

def get_config(arg=None):
  with open({path!r}) as f:
    return ml_collections.ConfigDict(json.load(f))
'''


def loop_runs(config, points, steps: int, root: epath.Path) -> dict:
  """Runs the real training loop twice (cold, then warm compilation cache) in fresh
  processes, one stage per (size, batch size); returns per-stage figures."""
  config = config.copy_and_resolve_references()
  config.stages = [dict(size=s, steps=steps, batch_size=b) for s, b in points]
  config.require_increasing_sizes = False
  config.eval_sizes = ()
  config.log_every_steps = max(1, steps // 5)
  config.checkpoint_every_steps = 0
  config.progress_bar = False
  config.compilation_cache_dir = str(root / "cache")
  (root / "config.json").write_text(config.to_json())
  (root / "bench_config.py").write_text(BENCH_CONFIG.format(path=str(root / "config.json")))
  rows = {}
  for run in ("cold", "warm"):
    command = [
        sys.executable, "-m", "progressive.commands.train", f"--config={root / 'bench_config.py'}",
        f"--workdir={root / run}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    if result.returncode:
      raise RuntimeError(f"The training loop failed:\n{result.stderr[-3000:]}")
    rows[run] = read_rows(root / run / "metrics.jsonl")
  figures = {}
  for index in range(len(points)):
    train_rows = [r for r in rows["cold"] if r["event"] == "train" and r["stage"] == index]
    stage_row = next(r for r in rows["cold"] if r["event"] == "stage" and r["stage"] == index)

    def compile_s(run):
      return sum(
          r["seconds"] for r in rows[run]
          if r["event"] == "compile" and r["stage"] == index and r["kind"] == "train"
      )

    steady = train_rows[1:] or train_rows  # The first interval includes the warm-up.
    images = sum(r["num_steps"] * points[index][1] for r in steady)
    seconds = sum(r["num_steps"] * points[index][1] / r["images_per_sec"] for r in steady)
    figures[index] = {
        "e2e_img_s": images / seconds,
        "switch_s": stage_row["setup_seconds"],
        "switch_total_s": stage_row["switch_seconds"],
        "cold_compile_s": compile_s("cold"),
        "warm_compile_s": compile_s("warm"),
        "warm_cache_hit": all(
            r["cache_hit"] for r in rows["warm"] if r["event"] == "compile" and r["stage"] == index
        ),
    }
  return figures


COLUMNS = (
    ("size", "{:d}"), ("batch", "{:d}"), ("compile_s", "{:.2f}"), ("bare_img_s", "{:.0f}"),
    ("step_gflop", "{:.1f}"), ("bare_tflop_s", "{:.2f}"),
    ("e2e_img_s", "{:.0f}"), ("e2e_vs_bare", "{:.0%}"), ("switch_s", "{:.2f}"),
    ("switch_total_s", "{:.2f}"), ("cold_compile_s", "{:.2f}"), ("warm_compile_s", "{:.2f}"),
)


def format_table(results: list[dict]) -> str:
  """A fixed-width text table of the rows `run_bench` returns."""
  lines = ["  ".join(f"{name:>14}" for name, _ in COLUMNS)]
  for row in results:
    cells = []
    for name, fmt in COLUMNS:
      value = row.get(name)
      cells.append(f"{'-' if value is None else fmt.format(value):>14}")
    lines.append("  ".join(cells))
  return "\n".join(lines)


def run_bench(config, sizes, batch_sizes, steps: int, *, e2e: bool = True) -> dict:
  """Measures every (size, batch size) pair; returns the device, the rows and totals."""
  info = pipeline.dataset_info(config.data)
  points = [(int(s), int(b)) for s in sizes for b in batch_sizes]
  results = []
  for size, batch_size in points:
    results.append({"size": size, "batch": batch_size, **bare_step(config, info, size, batch_size, steps)})
  if e2e:
    with tempfile.TemporaryDirectory() as tmp:
      figures = loop_runs(config, points, steps, epath.Path(tmp))
    for index, row in enumerate(results):
      row.update(figures[index])
      row["e2e_vs_bare"] = row["e2e_img_s"] / row["bare_img_s"]
  totals = {}
  if e2e:
    cold = sum(r["cold_compile_s"] for r in results)
    warm = sum(r["warm_compile_s"] for r in results)
    totals = {"cold_compile_s": cold, "warm_compile_s": warm, "warm_over_cold": warm / cold}
  device = jax.devices()[0]
  return {
      "device": f"{jax.device_count()} x {device.device_kind} ({device.platform})",
      "model": config.model.name,
      "dtype": config.model.dtype,
      "steps": steps,
      "date": time.strftime("%Y-%m-%d"),
      "rows": results,
      "totals": totals,
  }


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
  flags.DEFINE_string("json", None, "Where to write the results (default: print only).",
                      flag_values=fv)
  # The host pipeline (progressive.commands.pipeline_bench).
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


def _run(fv: flags.FlagValues) -> None:
  """Runs the bench, prints the table, writes `--json`."""
  config = fv.config
  if fv.pipeline:
    pipeline_bench.main_report(config, fv)
    return
  config_lib.validate(config, jax.device_count())
  sizes = fv.sizes or [s["size"] for s in config.stages]
  batch_sizes = fv.batch_sizes or [config.batch_size]
  steps = 3 if fv.smoke else fv.steps
  report = run_bench(config, sizes, batch_sizes, steps, e2e=fv.e2e)
  print(f"{report['device']}, {report['model']} ({report['dtype']}), {steps} timed steps per size")
  print(format_table(report["rows"]))
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
# (`progressive.commands.train`) would join a multi-process run themselves.
COMMAND = cli.Command(
    "bench", __doc__, define_flags, _run, config="Config file, e.g. configs/default.py.",
    distributed=False,
)


def main(argv=None):
  cli.run(COMMAND, argv)


if __name__ == "__main__":
  main()
