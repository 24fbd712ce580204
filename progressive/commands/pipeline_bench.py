r"""Host input-pipeline benchmark: training images/s at each stage size, on real JPEGs.

  progressive bench --pipeline --config=configs/folder.py --workers=1,2

Reads a folder of JPEGs of ImageNet's typical size (500x375, written from the
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
  `bench.bare_step` on an accelerator, or given with `--device_rate=128:14000,...`), and
  the cores that rate needs at the measured per-core rate.
"""

import dataclasses
import json
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from etils import epath

from progressive import cli
from progressive.data import folder, pipeline

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
  accelerator with `bench.bare_step` (none on a CPU: the CPU would be its own host)."""
  rates = {size: given[size] for size in sizes if size in given}
  if jax.default_backend() == "cpu":
    return rates
  from progressive.commands import bench  # pylint: disable=import-outside-toplevel

  info = dataclasses.replace(pipeline.dataset_info(config.data), stage_sized=True)
  for size in sizes:
    if size not in rates:
      rates[size] = bench.bare_step(config, info, size, config.batch_size, steps)["bare_img_s"]
  return rates


def run(config, *, sizes: Sequence[int], workers: Sequence[int], data_dir=None, images: int = 240,
        batch_size: int = 64, seconds: float = 5.0, device_rate: Mapping[int, float] | None = None,
        device_steps: int = 20) -> dict[str, Any]:
  """Measures every size with one core, with each worker count and with the old
  fixed-size path; returns the rows, the device rates and the cores they need."""
  with tempfile.TemporaryDirectory() as tmp:
    splits = tuple(folder._split_folder(config.data[f])[0]  # pylint: disable=protected-access
                   for f in ("train_split", "eval_split"))
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


def format_table(report: Mapping[str, Any], workers: Sequence[int]) -> str:
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


def main_report(config, fv) -> dict[str, Any]:
  """What `progressive bench --pipeline` runs: measure, print, write --json."""
  sizes = [int(s) for s in fv.sizes] if fv.sizes else [s["size"] for s in config.stages]
  workers = [int(w) for w in fv.workers]
  if any(w < 1 for w in workers):
    raise cli.Error(f"--workers must be counts >= 1, got {fv.workers}.")
  try:
    rates = parse_rates(fv.device_rate)
  except ValueError as e:
    raise cli.Error(str(e)) from None
  report = run(config, sizes=sizes, workers=workers, data_dir=fv.data_dir, images=fv.images,
               batch_size=fv.pipeline_batch, seconds=0.5 if fv.smoke else fv.seconds,
               device_rate=rates)
  print(f"Host pipeline, {report['host']}, batch {report['batch_size']}, "
        f"augment={report['augment']}, JPEGs {report['jpeg_size'] or fv.data_dir}")
  print(format_table(report, workers))
  if fv.json:
    epath.Path(fv.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"Wrote {fv.json}")
  return report
