"""experiments/gpu_bench.sh: its CPU smoke run end to end, the peers kept equal to
../shared/gpu/, and the report's targets."""

import json
import os
import pathlib
import subprocess
import sys
import tarfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
GPU = ROOT / "experiments" / "gpu"
sys.path.insert(0, str(GPU))

import report  # pylint: disable=wrong-import-position


@pytest.mark.skipif(not (ROOT.parent / "shared" / "gpu").is_dir(), reason="no ../shared/gpu")
@pytest.mark.parametrize("name", ["peer_flax_resnet50.py", "peer_torch_resnet.py"])
def test_the_peers_are_the_shared_scripts_byte_for_byte(name):
  assert (GPU / name).read_bytes() == (ROOT.parent / "shared" / "gpu" / name).read_bytes()


def test_a_changed_peer_is_refused_a_smoke_variant(tmp_path):
  changed = tmp_path / "peer_flax_resnet50.py"
  changed.write_text((GPU / "peer_flax_resnet50.py").read_text().replace("(128, 256)", "(160, 256)"))
  result = subprocess.run([sys.executable, str(GPU / "run_peer.py"), str(changed), "--smoke"],
                          capture_output=True, text=True, check=False)
  assert result.returncode == 1
  assert "expected '[(224, 256), (128, 256)]' once" in result.stderr


def test_peer_lines_parse():
  text = ("flax resnet50 size 224 bs 256: compile 41.2s step 88.1 ms 2906 img/s\n"
          "2.11.0 NVIDIA H100 80GB HBM3\n"
          "torch resnet50 size 224 bs 256: 120.5 ms/step 2124 img/s\n"
          "torch resnet18 size 128 bs 512: 40.0 ms/step 12800 img/s\n")
  assert report.parse_peers(text) == {
      ("flax", "resnet50", 224, 256): {"img_s": 2906.0, "step_ms": 88.1, "compile_s": 41.2},
      ("torch", "resnet50", 224, 256): {"img_s": 2124.0, "step_ms": 120.5},
      ("torch", "resnet18", 128, 512): {"img_s": 12800.0, "step_ms": 40.0},
  }
  assert report.peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
  assert report.peak_tflops("NVIDIA H100 PCIe") == 756.0
  assert report.peak_tflops("cpu") is None


def _data(bare, flax, torch, loop, stall, warm):
  rows = [{"size": s, "batch": 256, "bare_img_s": b, "compile_s": 30.0, "model_gflop": 256 * g,
           "model_tflop_s": 256 * g * b / 256 / 1e3, "e2e_vs_bare": loop, "switch_s": stall}
          for s, b, g in ((128, bare[0], 8.0), (224, bare[1], 24.5))]
  peers = {("flax", "resnet50", 128, 256): {"img_s": flax[0]}, ("flax", "resnet50", 224, 256): {"img_s": flax[1]},
           ("torch", "resnet50", 224, 256): {"img_s": torch}}
  return {"machine": {"device_kind": "NVIDIA H200"}, "peers": peers,
          "resnet50": {"rows": rows, "totals": {"cold_compile_s": 100.0, "warm_compile_s": 100.0 * warm,
                                                  "warm_over_cold": warm}}}


def test_targets_are_judged_from_the_figures():
  data = _data(bare=(8000, 3000), flax=(7900, 2990), torch=2000, loop=0.96, stall=0.4, warm=0.05)
  checks = report.targets(data, report.resnet50_rows(data))
  assert [met for _, met, _ in checks] == [True] * 7
  # Each target missed by a little.
  data = _data(bare=(7800, 2980), flax=(7900, 2990), torch=2000, loop=0.94, stall=1.2, warm=0.12)
  checks = report.targets(data, report.resnet50_rows(data))
  assert [met for _, met, _ in checks] == [False] * 7
  assert checks[2] == ("bare step >= 1.5x PyTorch eager at 224 px", False, "1.49x")
  rows = report.resnet50_rows(data)
  assert rows[1]["share_of_peak"] == pytest.approx(24.5 * 2980 / 1e3 / 989.4)


@pytest.mark.slow  # The whole script at tiny sizes on the CPU: about 100 s.
def test_smoke_run_measures_every_step_and_writes_the_report(tmp_path):
  out, work = tmp_path / "out", tmp_path / "work"
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  # One CPU device, as on a laptop; XLA's machine code unoptimised, as in every test here
  # (tests/conftest.py): the smoke compiles far more than it runs.
  env.update(OUT=str(out), WORK=str(work), PYTHON=sys.executable,
             XLA_FLAGS="--xla_backend_optimization_level=0")
  result = subprocess.run(["bash", str(ROOT / "experiments" / "gpu_bench.sh"), "--smoke"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  # Five files at most (a lent machine returns eight), everything else in the tarballs.
  assert sorted(p.name for p in out.iterdir()) == [
      "log.txt", "report.md", "results.tar.gz", "summary.json", "trace.tar.gz"]
  summary = json.loads((out / "summary.json").read_text())
  status = {s["step"]: s["status"] for s in summary["steps"]}
  assert status == {"prepare": "ok", "resnet50": "ok", "peer_flax": "ok",
                    "peer_torch": "skipped (no CUDA torch)", "small_resnet18": "ok",
                    "small_cnn": "ok", "pipeline": "ok", "default": "ok", "trace": "ok"}
  with tarfile.open(out / "results.tar.gz") as tar:
    assert {"./resnet50.json", "./resnet50.out", "./peer_flax.out", "./steps.jsonl",
            "./machine.json"} <= set(tar.getnames())
    bench = json.load(tar.extractfile("./resnet50.json"))
    printed = tar.extractfile("./resnet50.out").read().decode()
  # ResNet-50's slot (the simple CNN at 16 and 24 px here): `progressive bench` printed
  # its table and wrote every figure: bare step, loop (cold, then warm from the cache).
  assert "bare_img_s" in printed and "Loop compile time" in printed
  assert [(r["size"], r["batch"]) for r in bench["rows"]] == [(16, 8), (24, 8)]
  for row in bench["rows"]:
    assert row["compile_s"] > 0 and row["bare_img_s"] > 0 and row["e2e_img_s"] > 0
    assert row["warm_cache_hit"]  # The rerun read every program from the cache.
    assert row["bare_tflop_s"] > 0 and row["model_tflop_s"] > 0
  # The 24 px step does more work than the 16 px one, by XLA's count and by the model's.
  assert bench["rows"][1]["step_gflop"] > bench["rows"][0]["step_gflop"] > 0
  assert bench["rows"][1]["model_gflop"] > bench["rows"][0]["model_gflop"] > 0
  r16, r24 = summary["resnet50"]
  assert r24["switch_s"] is not None and r24["flax_img_s"] > 0 and r24["over_flax"] > 0
  assert r16["flax_img_s"] is None and r24["torch_img_s"] is None
  targets = {t["target"]: t["met"] for t in summary["targets"]}
  assert targets["bare step >= 1.5x PyTorch eager at 224 px"] is None
  assert {(r["network"], r["size"]) for r in summary["small"]} == {
      ("ResNet-18 x0.25, small stem", 16), ("simple CNN", 16)}
  (row,) = summary["pipeline"]["rows"]
  assert row["size"] == 24 and row["workers_2_img_s"] > 0
  assert row["device_img_s"] == pytest.approx(r24["bare_img_s"], rel=0.01)
  assert summary["default"]["accuracy"] and summary["default"]["steps"] > 0
  text = (out / "report.md").read_text()
  assert text.startswith("**Smoke run**")
  assert "| 24 | 8 |" in text and "Targets:" in text and "The default job (`configs/default.py:smoke`)" in text
  assert text in result.stdout
  with tarfile.open(out / "trace.tar.gz") as tar:
    assert any(n.endswith(".xplane.pb") for n in tar.getnames())
