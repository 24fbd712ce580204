"""Two processes on this machine, coordinating over the loopback address."""

import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from progressive.training.metrics import read_rows

REPO = pathlib.Path(__file__).parents[1]
WORKER = REPO / "tests" / "multiprocess_worker.py"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_all(commands, timeout=300):
  processes = [
      subprocess.Popen(c, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for c in commands
  ]
  outputs = [p.communicate(timeout=timeout)[0] for p in processes]
  for p, out in zip(processes, outputs):
    assert p.returncode == 0, out[-3000:]
  return outputs


@pytest.mark.slow
def test_two_processes_match_one_process_with_two_devices(tmp_path):
  one, two = tmp_path / "one", tmp_path / "two"
  one.mkdir()
  two.mkdir()
  address = f"127.0.0.1:{_free_port()}"
  _run_all(
      [[sys.executable, str(WORKER), str(one), "2"]]
      + [[sys.executable, str(WORKER), str(two), "1", address, "2", str(i)] for i in range(2)]
  )
  a, b = np.load(one / "params.npz"), np.load(two / "params.npz")
  assert sorted(a.files) == sorted(b.files) and len(a.files) > 5
  np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-5)
  assert a["losses"][-1] != a["losses"][0]  # It trained.
  for key in a.files:
    np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-6, err_msg=key)


@pytest.mark.slow
def test_two_process_smoke_run(tmp_path, data_dir):
  workdir = tmp_path / "run"
  address = f"127.0.0.1:{_free_port()}"
  commands = [
      [
          sys.executable, "-m", "progressive", "train", "--config=configs/default.py:smoke",
          f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
          "--config.progress_bar=False", f"--config.distributed.coordinator_address={address}",
          "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}",
          "--config.stages=({'size': 16, 'steps': 8}, {'size': 32, 'steps': 8})",
      ]
      for i in range(2)
  ]
  flags = "XLA_FLAGS=--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0"
  env_commands = [["env", flags, *c] for c in commands]
  outputs = _run_all(env_commands)
  assert "Stage 1 (32px) done at step 16" in outputs[0]  # Two stages: a switch of size.
  assert "Stage 1" not in outputs[1]  # Only the first process reports.
  rows = read_rows(workdir / "metrics.jsonl")
  assert [r["step"] for r in rows if r["event"] == "train"] == [4, 8, 12, 16]
  evals = [r for r in rows if r["event"] == "eval" and r["step"] == 16]
  assert [r["size"] for r in evals] == [16, 32]
  assert all(0 <= r["accuracy"] <= 1 for r in evals)
  assert all(r["examples"] == 256 for r in evals)  # Both processes' shards of the test split.
  assert (workdir / "checkpoints" / "16").exists()
  # Both processes took part in one run: 4 devices over 2 processes, one checkpoint.
  assert "Compiled stage 0 (16px, batch 64)" in outputs[0]
