r"""The markdown for docs/BENCHMARKS.md from one `experiments/gpu_bench.sh` run's folder,
and its figures as JSON:

  python experiments/gpu/report.py RESULTS [--command="bash experiments/gpu_bench.sh"]
  python experiments/gpu/report.py RESULTS --targets_met   # exit 0 only if every
                                                          # ResNet-50 target is met

RESULTS holds what the script wrote: machine.json, steps.jsonl, resnet50.json,
peer_flax.out, peer_torch.out, small_resnet18.json, small_cnn.json, pipeline.json,
default_metrics.jsonl. A step that did not finish leaves its rows out, and the table says
which step and why. Writes RESULTS/summary.json beside the markdown it prints.
"""

import argparse
import json
import pathlib
import re
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

# Dense bfloat16 tensor-core peaks (TFLOP/s, without sparsity), from NVIDIA's datasheets;
# the first name contained in jax's device_kind wins.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4),
    ("GH200", 989.4), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("B200", 2250.0),
)
FLAX_LINE = re.compile(r"flax resnet50 size (\d+) bs (\d+): compile ([\d.]+)s step ([\d.]+) ms (\d+) img/s")
TORCH_LINE = re.compile(r"torch (\w+) size (\d+) bs (\d+): ([\d.]+) ms/step (\d+) img/s")

# The targets of issue 32, on the ResNet-50 rows.
TARGET_FLAX = 1.0  # Our bare step over the plain-jit peer's, at each size.
TARGET_TORCH = 1.5  # Over PyTorch eager at 224 px.
TARGET_LOOP = 0.95  # The loop over the bare step, at each size.
TARGET_SWITCH_S = 1.0  # The stall at the switch into the 224 px stage.
TARGET_WARM = 0.10  # Warm-cache compile over cold.


def peak_tflops(device_kind: str) -> float | None:
  return next((peak for name, peak in PEAK_BF16_TFLOPS if name in device_kind), None)


def _json(path: pathlib.Path):
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return None


def parse_peers(text: str) -> dict:
  """{("flax"|"torch", arch, size, batch): {"img_s": .., "step_ms": .., "compile_s": ..}}."""
  found = {}
  for m in FLAX_LINE.finditer(text):
    size, batch, compile_s, ms, rate = m.groups()
    found[("flax", "resnet50", int(size), int(batch))] = {
        "img_s": float(rate), "step_ms": float(ms), "compile_s": float(compile_s)}
  for m in TORCH_LINE.finditer(text):
    arch, size, batch, ms, rate = m.groups()
    found[("torch", arch, int(size), int(batch))] = {"img_s": float(rate), "step_ms": float(ms)}
  return found


def _fmt(value, spec: str = "{:.0f}") -> str:
  return "-" if value is None else spec.format(value)


def _ratio(a, b):
  return None if a is None or not b else a / b


def load(results: pathlib.Path) -> dict:
  """Everything the run left, parsed."""
  steps = {}
  if (results / "steps.jsonl").exists():
    for line in (results / "steps.jsonl").read_text().splitlines():
      if line.strip():
        row = json.loads(line)
        steps[row["step"]] = row
  peers_text = "".join((results / f"{n}.out").read_text()
                       for n in ("peer_flax", "peer_torch") if (results / f"{n}.out").exists())
  default_rows = []
  if (results / "default_metrics.jsonl").exists():
    default_rows = [json.loads(l) for l in (results / "default_metrics.jsonl").read_text().splitlines()
                    if l.strip()]
  def config(step, default):
    path = results / f"{step}_config.txt"
    return path.read_text().strip() if path.exists() else default

  return {
      "default_config": config("default", "configs/default.py"),
      "resnet50_config": config("resnet50", "configs/zoo.py:resnet50,width=1,small_stem=False"),
      "machine": _json(results / "machine.json") or {},
      "steps": steps,
      "resnet50": _json(results / "resnet50.json"),
      "peers": parse_peers(peers_text),
      "small": {name: _json(results / f"small_{name}.json") for name in ("resnet18", "cnn")},
      "pipeline": _json(results / "pipeline.json"),
      "default_rows": default_rows,
  }


def resnet50_rows(data: dict) -> list[dict]:
  """Our ResNet-50 rows beside the peers' figures at the same size and batch."""
  report, peers = data["resnet50"], data["peers"]
  if not report:
    return []
  peak = peak_tflops(data["machine"].get("device_kind", ""))
  rows = []
  for r in report["rows"]:
    flax = peers.get(("flax", "resnet50", r["size"], r["batch"]), {}).get("img_s")
    torch = peers.get(("torch", "resnet50", r["size"], r["batch"]), {}).get("img_s")
    per_image = r.get("model_gflop") and r["model_gflop"] / r["batch"]
    rows.append({
        **r,
        "flax_img_s": flax, "torch_img_s": torch,
        "over_flax": _ratio(r["bare_img_s"], flax), "over_torch": _ratio(r["bare_img_s"], torch),
        "flax_tflop_s": None if not (per_image and flax) else per_image * flax / 1e3,
        "torch_tflop_s": None if not (per_image and torch) else per_image * torch / 1e3,
        "share_of_peak": _ratio(r.get("model_tflop_s"), peak),
    })
  return rows


def targets(data: dict, rows: list[dict]) -> list[tuple[str, bool | None, str]]:
  """(target, met or None when unmeasured, the figures) for each of issue 32's targets."""
  out = []
  for r in rows:
    ratio = r["over_flax"]
    out.append((f"bare step >= plain-jit peer at {r['size']} px", None if ratio is None else ratio >= TARGET_FLAX,
                _fmt(ratio, "{:.2f}x")))
  at224 = next((r for r in rows if r["size"] == 224), None)
  ratio = at224 and at224["over_torch"]
  out.append(("bare step >= 1.5x PyTorch eager at 224 px", None if ratio is None else ratio >= TARGET_TORCH,
              _fmt(ratio, "{:.2f}x")))
  for r in rows:
    ratio = r.get("e2e_vs_bare")
    out.append((f"loop >= 95% of the bare step at {r['size']} px",
                None if ratio is None else ratio >= TARGET_LOOP, _fmt(ratio, "{:.0%}")))
  if at224 and len(rows) > 1:
    stall = at224.get("switch_s")
    out.append((f"{rows[0]['size']} -> 224 px switch stalls < 1 s",
                None if stall is None else stall < TARGET_SWITCH_S, f"{_fmt(stall, '{:.2f}')} s"))
  totals = (data["resnet50"] or {}).get("totals") or {}
  warm = totals.get("warm_over_cold")
  out.append(("warm-cache compile < 10% of cold", None if warm is None else warm < TARGET_WARM,
              (f"{_fmt(totals.get('warm_compile_s'), '{:.1f}')} s of "
               f"{_fmt(totals.get('cold_compile_s'), '{:.1f}')} s ({_fmt(warm, '{:.0%}')})")))
  return out


def small_rows(data: dict) -> list[dict]:
  rows = []
  for name, report in data["small"].items():
    for r in (report or {}).get("rows", []):
      step_ms = 1e3 * r["batch"] / r["bare_img_s"]
      loop_ms = 1e3 * r["batch"] / r["e2e_img_s"] if r.get("e2e_img_s") else None
      rows.append({"network": {"resnet18": "ResNet-18 x0.25, small stem", "cnn": "simple CNN"}[name],
                   "size": r["size"], "batch": r["batch"], "bare_img_s": r["bare_img_s"],
                   "loop_img_s": r.get("e2e_img_s"), "step_ms": step_ms, "loop_ms": loop_ms,
                   "share": _ratio(step_ms, loop_ms)})
  return rows


def default_job(data: dict) -> dict | None:
  rows = data["default_rows"]
  if not rows:
    return None
  train = [r for r in rows if r["event"] == "train"]
  last_step = max(r["step"] for r in rows)
  final = [r for r in rows if r["event"] == "eval" and r["step"] == last_step and r.get("split") == "test"]
  top = max((r["size"] for r in final), default=None)
  by_stage = {}
  for r in train[1:]:  # The first interval includes the warm-up.
    by_stage.setdefault(r["size"], []).append(r["images_per_sec"])
  return {
      "config": data["default_config"],
      "seconds": data["steps"].get("default", {}).get("seconds"),
      "steps": last_step,
      "train_img_s": {size: sorted(v)[len(v) // 2] for size, v in by_stage.items()},
      "accuracy": {r["size"]: r["accuracy"] for r in final},
      "top_size": top,
  }


def markdown(data: dict, command: str, smoke: bool = False) -> str:
  m = data["machine"]
  lines = [
      *([("**Smoke run**: tiny networks, sizes and step counts on whatever device is here; "
          "it checks the script and measures nothing."), ""] if smoke else []),
      (f"{m.get('devices', '?')} x {m.get('device_kind', '?')} ({m.get('platform', '?')}), "
       f"{m.get('host_cores', '?')} host cores, driver {m.get('driver') or '-'}; "
       f"Python {m.get('python', '?')}, jax {m.get('jax', '?')}, flax {m.get('flax', '?')}; "
       f"{m.get('date', '?')}."),
      "",
      f"    {command}",
      "",
      "Steps: " + ", ".join(f"{s['step']} {s['status']}"
                            + (f" ({s['seconds']:.0f} s)" if s.get("seconds") else "")
                            for s in data["steps"].values()) + ".",
      "",
  ]
  rows = resnet50_rows(data)
  peak = peak_tflops(m.get("device_kind", ""))
  if rows:
    r50 = data["resnet50"]
    lines += [
        (f"ResNet-50 (`{data['resnet50_config']}`, {r50['model']}, {r50['dtype']}), "
        f"{r50['steps']} timed steps; peers from the same run. Model TFLOP/s count the "
        f"architecture's convolutions and dense layers, forward and backward (3x the "
        f"forward's multiply-adds, 2 FLOPs each); the chip's dense bfloat16 peak is "
        f"{_fmt(peak)} TFLOP/s; the peers' are that count per image times their images/s "
        f"(their 1,000-class head adds under 0.1%)."),
        "",
        ("| size | batch | bare img/s | plain-jit peer | PyTorch eager | over peer | over eager "
         "| model TFLOP/s (of peak) | peer / eager TFLOP/s | XLA TFLOP/s | loop img/s "
         "| loop / bare | compile s | loop compile cold / warm s | switch stall s (with eval) |"),
        "| ---: " * 15 + "|",
    ]
    for r in rows:
      lines.append(
          f"| {r['size']} | {r['batch']} | {_fmt(r['bare_img_s'])} | {_fmt(r['flax_img_s'])} "
          f"| {_fmt(r['torch_img_s'])} | {_fmt(r['over_flax'], '{:.2f}x')} | {_fmt(r['over_torch'], '{:.2f}x')} "
          f"| {_fmt(r.get('model_tflop_s'), '{:.3g}')} ({_fmt(r['share_of_peak'], '{:.0%}')}) "
          f"| {_fmt(r['flax_tflop_s'], '{:.3g}')} / {_fmt(r['torch_tflop_s'], '{:.3g}')} "
          f"| {_fmt(r.get('bare_tflop_s'), '{:.3g}')} "
          f"| {_fmt(r.get('e2e_img_s'))} | {_fmt(r.get('e2e_vs_bare'), '{:.0%}')} "
          f"| {_fmt(r['compile_s'], '{:.1f}')} | {_fmt(r.get('cold_compile_s'), '{:.1f}')} / "
          f"{_fmt(r.get('warm_compile_s'), '{:.1f}')} | {_fmt(r.get('switch_s'), '{:.2f}')} "
          f"({_fmt(r.get('switch_total_s'), '{:.2f}')}) |")
    lines += ["", "Targets:"]
    for name, met, figures in targets(data, rows):
      verdict = "not measured" if met is None else ("met" if met else "**missed**")
      lines.append(f"- {name}: {verdict} ({figures})")
    torch18 = sorted((k, v) for k, v in data["peers"].items() if k[0] == "torch" and k[1] == "resnet18")
    if torch18:
      lines.append("- PyTorch eager ResNet-18 (for scale): " + ", ".join(
          f"{k[2]} px batch {k[3]} {v['img_s']:.0f} img/s" for k, v in torch18))
    lines.append("")
  else:
    lines += ["ResNet-50: not measured (see the resnet50 step's output).", ""]
  small = small_rows(data)
  if small:
    lines += [
        ("The sweeps' regime: one process, batch 128, `scale_shapes` in memory, activation "
        "statistics off. `step ms` is the bare step; `ms per loop step` the real loop's time "
        "between dispatches (batch over its images/s); the step's share of it says how much "
        "of the loop the device is busy."),
        "",
        "| network | size | bare img/s | loop img/s | step ms | ms per loop step | step's share |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in small:
      lines.append(f"| {r['network']} | {r['size']} | {_fmt(r['bare_img_s'])} | {_fmt(r['loop_img_s'])} "
                   f"| {_fmt(r['step_ms'], '{:.2f}')} | {_fmt(r['loop_ms'], '{:.2f}')} "
                   f"| {_fmt(r['share'], '{:.0%}')} |")
    shares = [r["share"] for r in small if r["share"] is not None]
    if shares:
      worst = min(shares)
      lines += ["", f"Host-bound: the device is busy {worst:.0%} of the loop at worst "
                    f"(the loop is {1 / worst:.1f}x the bare step's time)." if worst < 0.9 else
                    f"Not host-bound: the step fills at least {worst:.0%} of the loop."]
    lines.append("")
  pipe = data["pipeline"]
  if pipe and pipe.get("rows"):
    from progressive.training import benchmark  # pylint: disable=import-outside-toplevel
    workers = sorted({int(k.split("_")[1]) for r in pipe["rows"] for k in r
                      if k.startswith("workers_") and k.endswith("_img_s")})
    lines += [(f"Host pipeline ({pipe['host']}, batch {pipe['batch_size']}, JPEGs "
               f"{'x'.join(map(str, pipe['jpeg_size'] or []))}; `need` is the ResNet-50 bare "
               f"step above):"), "", benchmark.pipeline_table(pipe, workers), ""]
  job = default_job(data)
  if job:
    rates = ", ".join(f"{s} px {v:.0f}" for s, v in sorted(job["train_img_s"].items()))
    acc = ", ".join(f"{s} px {a:.3f}" for s, a in sorted(job["accuracy"].items()))
    lines += [(f"The default job (`{job['config']}`): {_fmt(job['seconds'])} s end to end, "
               f"{job['steps']} steps; training img/s (median) {rates}; test accuracy after "
               f"the last stage {acc}."), ""]
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("results", type=pathlib.Path)
  parser.add_argument("--command", default="bash experiments/gpu_bench.sh")
  parser.add_argument("--smoke", action="store_true", help="Say the run was the smoke run.")
  parser.add_argument("--targets_met", action="store_true",
                      help="Exit 0 only if every ResNet-50 target was measured and met.")
  args = parser.parse_args()
  data = load(args.results)
  rows = resnet50_rows(data)
  checks = targets(data, rows) if rows else []
  if args.targets_met:
    sys.exit(0 if checks and all(met for _, met, _ in checks) else 1)
  summary = {"machine": data["machine"], "steps": list(data["steps"].values()), "resnet50": rows,
             "targets": [{"target": t, "met": met, "figures": f} for t, met, f in checks],
             "small": small_rows(data), "pipeline": data["pipeline"], "default": default_job(data)}
  (args.results / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
  print(markdown(data, args.command, args.smoke))


if __name__ == "__main__":
  main()
