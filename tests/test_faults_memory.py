"""Programs too large for memory where the backend reports no limit (the CPU): the compiled
program's own estimate against the host's available memory, for the train, statistics and
evaluation programs alike, refused in one line before the first step and any data read.

The in-process runs shrink the available memory (`host_memory_available`) rather than
grow the program, so that nothing large is ever allocated, even by a broken check.
"""

import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from etils import epath

from progressive.training import compilation, parallel, train
from progressive.training.compilation import MemoryLimitError
from progressive.training.metrics import read_rows

REPO = epath.Path(__file__).parents[1]
GiB = 2**30


def _events(workdir, event):
  path = epath.Path(workdir) / "metrics.jsonl"
  return [r for r in read_rows(path) if r["event"] == event] if path.exists() else []


# The estimate.


def test_the_estimate_of_programs_sized_by_hand():
  x = jax.ShapeDtypeStruct((1000, 250), jnp.float32)  # 1,000,000 bytes.
  column_sums = jax.jit(lambda x: (2 * x).sum(0)).lower(x).compile()
  assert compilation.memory_needed(column_sums) == 1_000_000 + 1_000  # In, and 250 floats out.
  in_place = jax.jit(lambda x: x + 1, donate_argnums=0).lower(x).compile()
  assert compilation.memory_needed(in_place) == 1_000_000  # Its output reuses the argument.


def test_the_cpu_devices_share_the_host_s_memory(monkeypatch, capsys):
  """Each of the 4 CPU devices holds a quarter of `x` (0.25 GiB) and of `2 * x`: 2 GiB
  of the host's memory in all, compiled but never allocated."""
  sharding = parallel.batch_sharding(parallel.make_mesh())
  x = jax.ShapeDtypeStruct((GiB // 16, 4), jnp.float32, sharding=sharding)  # 1 GiB.
  double = jax.jit(lambda x: 2 * x).lower(x).compile()
  assert compilation.memory_needed(double) == GiB // 2  # Per device.
  monkeypatch.setattr(compilation, "host_memory_available", lambda: 1.5 * GiB)
  with pytest.raises(MemoryLimitError) as error:
    compilation.check_memory(double, "Doubling", "x")
  assert str(error.value) == ("Doubling needs about 2.00 GiB of host memory (4 CPU devices) but the "
                              "host has 1.50 GiB available. Lower x.")
  monkeypatch.setattr(compilation, "host_memory_available", lambda: 2 * GiB)
  compilation.check_memory(double, "Doubling", "x")  # Fits, with a warning: over half.
  assert capsys.readouterr().err == (
      "Warning: Doubling needs about 2.00 GiB of host memory (4 CPU devices), over half of the "
      "2.00 GiB available, and the CPU's convolutions can need as much again; if the run is "
      "killed, lower x.\n")
  monkeypatch.setattr(compilation, "host_memory_available", lambda: 4 * GiB + 1)
  compilation.check_memory(double, "Doubling", "x")
  assert capsys.readouterr().err == ""


def test_available_memory_is_meminfo_s_or_a_cgroup_s_headroom(tmp_path):
  proc, cgroup = tmp_path / "proc", tmp_path / "cgroup"
  (proc / "self").mkdir(parents=True)
  (proc / "meminfo").write_text("MemTotal:       16777216 kB\nMemAvailable:    8388608 kB\n")
  (proc / "self" / "cgroup").write_text("0::/job\n")
  assert compilation.host_memory_available(str(proc), str(cgroup)) == 8 * GiB
  job = cgroup / "job"
  job.mkdir(parents=True)
  (job / "memory.max").write_text("max\n")
  (job / "memory.current").write_text(f"{3 * GiB}\n")
  assert compilation.host_memory_available(str(proc), str(cgroup)) == 8 * GiB  # No limit.
  # A job limited to 4 GiB that uses 3, one of which is file cache the kernel drops first.
  (job / "memory.max").write_text(f"{4 * GiB}\n")
  (job / "memory.stat").write_text(f"anon {2 * GiB}\ninactive_file {GiB}\n")
  assert compilation.host_memory_available(str(proc), str(cgroup)) == 2 * GiB
  # A container on cgroup v1: its own group is the root of the memory hierarchy it sees.
  (proc / "self" / "cgroup").write_text("4:memory:/docker/abc\n0::/\n")
  v1 = cgroup / "memory"
  v1.mkdir()
  (v1 / "memory.limit_in_bytes").write_text(f"{6 * GiB}\n")
  (v1 / "memory.usage_in_bytes").write_text(f"{5 * GiB}\n")
  assert compilation.host_memory_available(str(proc), str(cgroup)) == GiB
  # This host's own figure: within what it has.
  total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  assert 0 < compilation.host_memory_available() <= total


# Training: every program of a stage checked before its first step and any data read.


def test_a_train_step_over_the_host_s_memory_stops_before_its_first_step(smoke_config, tmp_path, monkeypatch):
  monkeypatch.setattr(compilation, "host_memory_available", lambda: 2**20)  # 1 MiB.
  opened = []
  monkeypatch.setattr(train.pipeline, "open_split", lambda *a, **k: opened.append(a))
  with pytest.raises(MemoryLimitError) as error:
    train.train_and_evaluate(smoke_config, str(tmp_path))
  assert re.fullmatch(
      r"Stage 0 \(16px, batch 64\) needs about \d+\.\d\d GiB of host memory \(4 CPU devices\) "
      r"but the host has 0\.00 GiB available\. Lower config\.batch_size\.", str(error.value))
  assert not _events(tmp_path, "train") and not _events(tmp_path, "compile") and not opened


def test_an_evaluation_over_the_host_s_memory_stops_before_the_first_step(smoke_config, tmp_path, monkeypatch):
  """The train steps (batch 64) need under 8 MiB; the evaluation (batch 8192) over 64."""
  monkeypatch.setattr(compilation, "host_memory_available", lambda: 64 * 2**20)
  smoke_config.eval_batch_size = 8192
  with pytest.raises(MemoryLimitError) as error:
    train.train_and_evaluate(smoke_config, str(tmp_path))
  assert re.fullmatch(
      r"Evaluation at 16px, batch 8192 needs about (\d+\.\d\d) GiB of host memory \(4 CPU devices\) "
      r"but the host has 0\.06 GiB available\. Lower config\.eval_batch_size\.", str(error.value))
  assert not _events(tmp_path, "train") and not _events(tmp_path, "eval")
  assert [r["kind"] for r in _events(tmp_path, "compile")] == ["train"]  # Checked, not logged.


def test_every_program_of_a_stage_is_checked_by_name_before_its_first_step(smoke_config, tmp_path, monkeypatch):
  """Stage 0 sets its own batch size; its train, statistics and evaluation programs are
  each checked, with the field to lower, before it trains (the last one stops the run)."""
  smoke_config.stages = (dict(size=16, steps=8, batch_size=32), *smoke_config.stages[1:])
  smoke_config.activation_stats_every = 4
  checked = []

  def check_memory(compiled, what, fix):
    checked.append((what, fix, len(_events(tmp_path, "train"))))
    if what.startswith("Evaluation at 32px"):
      raise MemoryLimitError(what)

  monkeypatch.setattr(compilation, "check_memory", check_memory)
  with pytest.raises(MemoryLimitError):
    train.train_and_evaluate(smoke_config, str(tmp_path))
  assert checked == [
      ("Stage 0 (16px, batch 32)", "config.stages[0].batch_size", 0),
      ("The activation statistics of stage 0 (16px, batch 32)",
       "config.stages[0].batch_size (or set config.activation_stats_every=0)", 0),
      ("Evaluation at 16px, batch 128", "config.eval_batch_size", 0),
      ("Evaluation at 32px, batch 128", "config.eval_batch_size", 0),
  ]
  assert not _events(tmp_path, "train")


@pytest.mark.slow
def test_progressive_train_over_the_host_s_memory_is_one_line(data_dir, tmp_path):
  """The real command on this host's real memory: batch 1024 at 4096 px needs about 900 GiB
  on the CPU (XLA's estimate; compiled in about 2 s, never allocated)."""
  script = pathlib.Path(sys.executable).with_name("progressive")
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  result = subprocess.run(
      [str(script), "train", f"--config={REPO / 'configs' / 'default.py'}:smoke", "--workdir=run",
       f"--config.data.data_dir={data_dir}", "--config.progress_bar=False",
       "--config.stages=({'size': 4096, 'steps': 1},)", "--config.batch_size=1024"],
      cwd=tmp_path, env=dict(env, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=300,
  )
  assert result.returncode == 2, result.stderr[-3000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr[-3000:]
  needed, available = map(float, re.fullmatch(
      r"Error: Stage 0 \(4096px, batch 1024\) needs about (\d+\.\d\d) GiB of host memory "
      r"\(4 CPU devices\) but the host has (\d+\.\d\d) GiB available\. Lower config\.batch_size\.",
      lines[0]).groups())
  assert needed > 500 and needed > available
  assert not _events(tmp_path / "run", "train")
