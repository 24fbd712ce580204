r"""What `progressive bench` measures: the training step and the host input pipeline.

The step (`measure_steps`), for each (size, batch size):
- `compile_s`: ahead-of-time compile of the bare training step.
- `bare_img_s`: steady throughput of that step on random data already on the device.
- `step_gflop`, `bare_tflop_s`: XLA's count of the floating-point operations of one step
  (forward and backward, all devices) and the rate the bare step achieves with it.
- `model_gflop`, `model_tflop_s`: the same from the traced architecture
  (`progressive.models.flops.train_flops` of each image, times the batch: the convention
  model-FLOP utilisation uses, the same on every backend) and the rate it gives.
- `e2e_img_s`: throughput of the real training loop (`progressive train`, one
  stage per size, the built-in dataset, input pipeline, resizing, metrics and schedule
  included), from its train rows after each stage's first logging interval.
- `switch_s`: the stall at the switch into that stage: from its first step being asked
  for to it being ready (waiting for its compile, building the data iterator, filling
  the device prefetch). `switch_total_s` adds the end-of-stage evaluation and
  checkpoint of the previous stage.
- `cold_compile_s`, `warm_compile_s`: the loop's compile time for that stage in a run
  with an empty persistent compilation cache and in a rerun with the cache it filled.

The host pipeline (`measure_pipeline`): training images/s at each stage size, on real
JPEGs. Reads a folder of JPEGs of ImageNet's typical size (500x375, written from the
photographs bundled with scikit-image unless `--data_dir` names a folder dataset) the
way training does (`pipeline.open_split`, random-resized-crop and flip, batched), and
prints a table and writes JSON:

- `core img/s`: one thread in this process calling the batch function, no grain: the
  host's cost per image at that size, per core;
- `Nw img/s`: grain with N worker processes (what training uses, `data.num_workers`),
  its ratio to N times the per-core rate, and (`scaling`) to N times grain's rate with
  one worker;
- the same per-core rate for the path before stage-size decoding (every image decoded
  in full and cropped to `data.image_size` whatever the stage, the device zooming it);
- `need img/s` and `cores`: the rate a device step at that size consumes (measured with
  `bare_step` on an accelerator, or given with `--device_rate=128:14000,...`), and
  the cores that rate needs at the measured per-core rate.
"""

import dataclasses
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from etils import epath

from progressive import schedules
from progressive.data import folder, pipeline
from progressive.data.splits import folder_and_slice
from progressive.models import flops as flops_lib
from progressive.training import compilation, mixing, parallel, train
from progressive.training.metrics import read_rows


def bare_step(config, info, size: int, batch_size: int, steps: int,
              trace_dir: str | None = None) -> dict:
  """Compile time and steady throughput of the training step on device-resident data;
  with `trace_dir`, then a `jax.profiler` trace of 5 more steps there."""
  stages = [dict(size=size, steps=steps + 3, batch_size=batch_size)]
  plan = schedules.stage_plan(stages, batch_size, info.num_train)
  mesh = parallel.make_mesh()
  state = train.build_state(config, info, plan, mesh)
  step_fn = parallel.make_train_step(mesh, info.mean, info.std,
                                     objective=mixing.Objective.from_config(config))
  sharding = parallel.batch_sharding(mesh)
  host_size = info.train_image_size(size)
  batch_shape = compilation.abstract_batch(batch_size, host_size, sharding)
  start = time.perf_counter()
  compiled = step_fn.lower(state, batch_shape, size).compile()
  compile_s = time.perf_counter() - start
  compilation.check_memory(compiled, f"The benchmark step ({size}px, batch {batch_size})", "--batch_sizes")
  rng = np.random.default_rng(0)
  batch = parallel.shard_batch(
      {
          "image": rng.integers(0, 256, (batch_size, host_size, host_size, 3), np.uint8),
          "label": rng.integers(0, info.num_classes, (batch_size,), np.int32),
      },
      sharding,
  )
  for _ in range(3):  # Warm-up.
    state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, batch)
  jax.block_until_ready((state, metrics))
  seconds = time.perf_counter() - start
  if trace_dir:
    with jax.profiler.trace(trace_dir):
      for _ in range(5):
        state, metrics = compiled(state, batch)
      jax.block_until_ready((state, metrics))
  flops = compilation.program_flops(compiled)
  flops = None if flops is None else flops * mesh.size  # One step over all devices.
  model = flops_lib.config_train_flops(config.model, size, info.num_classes) * batch_size
  return {
      "compile_s": compile_s,
      "bare_img_s": steps * batch_size / seconds,
      "step_gflop": None if flops is None else flops / 1e9,
      "bare_tflop_s": None if flops is None else flops * steps / seconds / 1e12,
      "model_gflop": model / 1e9,
      "model_tflop_s": model * steps / seconds / 1e12,
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
  for cache in ("cold", "warm"):
    command = [
        sys.executable, "-m", "progressive", "train", f"--config={root / 'bench_config.py'}",
        f"--workdir={root / cache}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    if result.returncode:
      raise RuntimeError(f"The training loop failed:\n{result.stderr[-3000:]}")
    rows[cache] = read_rows(root / cache / "metrics.jsonl")
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
    ("step_gflop", "{:.1f}"), ("bare_tflop_s", "{:.2f}"), ("model_tflop_s", "{:.2f}"),
    ("e2e_img_s", "{:.0f}"), ("e2e_vs_bare", "{:.0%}"), ("switch_s", "{:.2f}"),
    ("switch_total_s", "{:.2f}"), ("cold_compile_s", "{:.2f}"), ("warm_compile_s", "{:.2f}"),
)


def step_table(results: list[dict]) -> str:
  """A fixed-width text table of the rows `run_bench` returns."""
  lines = ["  ".join(f"{name:>14}" for name, _ in COLUMNS)]
  for row in results:
    cells = []
    for name, fmt in COLUMNS:
      value = row.get(name)
      cells.append(f"{'-' if value is None else fmt.format(value):>14}")
    lines.append("  ".join(cells))
  return "\n".join(lines)


def measure_steps(config, sizes, batch_sizes, steps: int, *, e2e: bool = True,
                  trace_dir: str | None = None) -> dict:
  """Measures every (size, batch size) pair; returns the device, the rows and totals.
  `trace_dir`: a profiler trace of each pair's bare step in `<trace_dir>/<size>px_<batch>`."""
  info = pipeline.dataset_info(config.data)
  points = [(int(s), int(b)) for s in sizes for b in batch_sizes]
  results = []
  for size, batch_size in points:
    trace = f"{trace_dir}/{size}px_{batch_size}" if trace_dir else None
    results.append({"size": size, "batch": batch_size,
                    **bare_step(config, info, size, batch_size, steps, trace)})
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


BENCH_SIZE = (500, 375)  # ImageNet's typical JPEG, width x height.


def make_folder(root, images: int, splits: tuple[str, str] = ("train", "val")) -> epath.Path:
  """About `images` training JPEGs (and one per class for evaluation) at BENCH_SIZE, in
  the split folders `splits` (training, evaluation)."""
  per_class = max(1, -(-images // len(folder.PHOTO_CLASSES)))
  return folder.write_photo_folder(root, {splits[0]: per_class, splits[1]: 1}, size=BENCH_SIZE)


def _data_config(config, data_dir, num_workers: int):
  data = config.data.copy_and_resolve_references()
  with data.unlocked():
    data.name, data.data_dir, data.num_workers = pipeline.FOLDER, str(data_dir), num_workers
    if data.image_size is None:
      data.image_size = max(s["size"] for s in config.stages)
  return data


def core_rate(split: pipeline.Split, size: int, batch_size: int, seconds: float) -> float:
  """Images/s of one thread making training batches at `size` (no grain, no workers)."""
  batch_fn = split._batch_fn(batch_size, 0, ("label",), size)  # pylint: disable=protected-access
  order = np.random.default_rng(0).permutation(split.num_examples)
  batch_fn(0, order[:batch_size])  # Warm the file cache.
  done, start, b = 0, time.perf_counter(), 0
  while time.perf_counter() - start < seconds or not done:
    lo = (b * batch_size) % max(split.num_examples - batch_size, 1)
    done += len(batch_fn(b, order[lo:lo + batch_size])["label"])
    b += 1
  return done / (time.perf_counter() - start)


def workers_rate(split: pipeline.Split, size: int, batch_size: int, seconds: float) -> float:
  """Images/s delivered by `split.train_iterator` (grain, the split's worker count)."""
  iterator = split.train_iterator(batch_size, seed=0, size=size)
  for _ in range(2 + split._num_workers):  # pylint: disable=protected-access  # Workers start.
    next(iterator)
  done, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds or not done:
    done += len(next(iterator)["label"])
  rate = done / (time.perf_counter() - start)
  del iterator
  return rate


def device_rates(config, sizes: Sequence[int], given: Mapping[int, float], steps: int) -> dict:
  """Images/s a training step consumes at each size: `given`, else measured on an
  accelerator with `steps` of `bare_step` (none on a CPU, where the CPU would be its own
  host, or with `steps` 0)."""
  rates = {size: given[size] for size in sizes if size in given}
  if jax.default_backend() == "cpu" or steps <= 0:
    return rates
  info = dataclasses.replace(pipeline.dataset_info(config.data), stage_sized=True)
  for size in sizes:
    if size not in rates:
      rates[size] = bare_step(config, info, size, config.batch_size, steps)["bare_img_s"]
  return rates


def measure_pipeline(config, *, sizes: Sequence[int], workers: Sequence[int], data_dir=None, images: int = 240,
        batch_size: int = 64, seconds: float = 5.0, device_rate: Mapping[int, float] | None = None,
        device_steps: int = 20) -> dict[str, Any]:
  """Measures every size with one core, with each worker count and with the old
  fixed-size path; returns the rows, the device rates and the cores they need."""
  with tempfile.TemporaryDirectory() as tmp:
    splits = tuple(folder_and_slice(config.data[f])[0] for f in ("train_split", "eval_split"))
    root = epath.Path(data_dir) if data_dir else make_folder(tmp, images, splits)
    rows = []
    for size in sizes:
      data = _data_config(config, root, 0)
      train = pipeline.open_split(data, data.train_split, train=True)
      fixed = pipeline.open_split(data, data.train_split, train=True)
      fixed._stage_sized = False  # pylint: disable=protected-access  # The path before.
      row = {"size": size, "images": train.num_examples,
             "core_img_s": core_rate(train, size, batch_size, seconds),
             "fixed_core_img_s": core_rate(fixed, size, batch_size, seconds),
             "fixed_size": data.image_size}
      for n in workers:
        split = pipeline.open_split(_data_config(config, root, n), data.train_split, train=True)
        rate = workers_rate(split, size, batch_size, seconds)
        row[f"workers_{n}_img_s"] = rate
        row[f"workers_{n}_efficiency"] = rate / (n * row["core_img_s"])
        if "workers_1_img_s" in row:
          row[f"workers_{n}_scaling"] = rate / (n * row["workers_1_img_s"])
      rows.append(row)
  rates = device_rates(config, sizes, device_rate or {}, device_steps)
  for row in rows:
    need = rates.get(row["size"])
    row["device_img_s"] = need
    row["cores_needed"] = None if need is None else math.ceil(need / row["core_img_s"])
  return {
      "host": f"{os.cpu_count()} cores, {jax.default_backend()} backend",
      "date": time.strftime("%Y-%m-%d"),
      "jpeg_size": list(BENCH_SIZE) if not data_dir else None,
      "batch_size": batch_size,
      "augment": config.data.augment,
      "rows": rows,
  }


def pipeline_table(report: Mapping[str, Any], workers: Sequence[int]) -> str:
  fixed = report["rows"][0]["fixed_size"] if report["rows"] else "?"
  head = ["size", "core img/s", *(f"{n}w img/s (per core; scaling)" for n in workers),
          f"before: full decode, crop to {fixed}", "need img/s", "cores"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in report["rows"]:
    cells = [f"{r['size']}", f"{r['core_img_s']:.0f}"]
    cells += [f"{r[f'workers_{n}_img_s']:.0f} ({r[f'workers_{n}_efficiency']:.2f}"
              + (f"; {r[f'workers_{n}_scaling']:.2f})" if f"workers_{n}_scaling" in r else ")")
              for n in workers]
    cells += [f"{r['fixed_core_img_s']:.0f}",
              "-" if r["device_img_s"] is None else f"{r['device_img_s']:.0f}",
              "-" if r["cores_needed"] is None else f"{r['cores_needed']}"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def parse_rates(values: Sequence[str] | None) -> dict[int, float]:
  """`["128:14000", "224:5700"]` -> {128: 14000.0, 224: 5700.0}; `ValueError` naming the
  flag otherwise."""
  rates = {}
  for value in values or ():
    size, sep, rate = value.partition(":")
    try:
      rates[int(size)] = float(rate)
      if not sep or rates[int(size)] <= 0:
        raise ValueError
    except ValueError:
      raise ValueError(
          f"--device_rate={value!r}: give SIZE:IMAGES_PER_SECOND pairs, e.g. 128:14000,224:5700."
      ) from None
  return rates
