"""Weights files read without running their code: real files made by torch 1.13 and
safetensors (tests/make_weights_fixtures.py) read to the arrays torch saved, hostile and
damaged files raise one-line errors, and torch's own loader gives the same arrays."""

import ast
import json
import os
import pathlib
import pickle
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from progressive import errors
from progressive.models import weights

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "weights"
REAL = ["plain.pth", "plain_legacy.pth", "wrapped.pth", "wrapped_legacy.pth", "plain.safetensors"]
HOSTILE = ["hostile.pth", "hostile_legacy.pth"]
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
  return dict(np.load(FIXTURES / "expected.npz"))


def _assert_same(arrays, expected):
  assert sorted(arrays) == sorted(expected)
  for name, want in expected.items():
    got = arrays[name]
    assert (got.dtype, got.shape) == (want.dtype, want.shape) and got.flags.c_contiguous, name
    np.testing.assert_array_equal(got, want, err_msg=name)


def _one_line(error: Exception, path) -> str:
  message = str(error)
  assert "\n" not in message and str(path) in message
  return message


def _torch_zip(path, pickled: bytes, data: dict[str, bytes] | None = None):
  """A zip laid out as torch.save's (`archive/data.pkl`, `archive/data/KEY`), by hand."""
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("archive/data.pkl", pickled)
    for key, raw in (data or {}).items():
      archive.writestr(f"archive/data/{key}", raw)
  return path


def _ints(values) -> bytes:
  return b"(" + b"".join(b"I%d\n" % v for v in values) + b"t"


def _tensor_pickle(size, stride, offset=0, numel=4) -> bytes:
  """`{"w": torch._utils._rebuild_tensor_v2(FloatStorage '0' of numel, offset, size, stride,
  False, None)}` in pickle protocol 0, as torch writes it (protocol 2) but hand-made."""
  storage = b"(S'storage'\nctorch\nFloatStorage\nS'0'\nS'cpu'\nI%d\ntQ" % numel
  tensor = (b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage + b"I%d\n" % offset + _ints(size)
            + _ints(stride) + b"I00\nNtR")
  return b"(dS'w'\n" + tensor + b"s."


@pytest.mark.parametrize("name", REAL)
def test_real_files_read_to_the_arrays_torch_saved(name, expected):
  _assert_same(weights.read(FIXTURES / name, use_torch=False), expected)


def test_the_fixtures_hold_views_and_a_wrapper(expected):
  """The files test what they say: non-contiguous views, a checkpoint dict, `module.`."""
  assert not expected["fc.weight"].flags.c_contiguous  # saved transposed: strides (1, 6)
  np.testing.assert_array_equal(expected["shared.part"], expected["shared.whole"][4:16]
                                .reshape(3, 4)[:, 1:])
  with zipfile.ZipFile(FIXTURES / "wrapped.pth") as archive:
    pickled = archive.read("wrapped/data.pkl")
  assert b"module.conv1.weight" in pickled and b"epoch" in pickled


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_torch_files_are_refused_before_their_code_runs(name, tmp_path, monkeypatch):
  path = FIXTURES / name
  raw = path.read_bytes()
  if name == "hostile.pth":
    with zipfile.ZipFile(path) as archive:
      raw = archive.read("hostile/data.pkl")
  assert b"cposix\nsystem\n" in raw and b'touch "$PROGRESSIVE_WEIGHTS_MARKER"' in raw  # GLOBAL
  marker = tmp_path / "pwned"
  monkeypatch.setenv("PROGRESSIVE_WEIGHTS_MARKER", str(marker))
  with pytest.raises(weights.UnsafeWeightsError) as caught:
    weights.read(path, use_torch=False)
  assert "would call posix.system" in _one_line(caught.value, path)
  assert isinstance(caught.value, errors.Error) and not marker.exists()


@pytest.mark.parametrize("module, name", [
    ("builtins", "eval"), ("subprocess", "Popen"), ("torch.storage", "_load_from_bytes"),
    ("torch", "Tensor"),
])
def test_callables_tensors_never_need_are_refused(module, name, tmp_path):
  pickled = f"(dS'w'\nc{module}\n{name}\n(S'print(1)'\ntRs.".encode()
  path = _torch_zip(tmp_path / "model.pth", pickled)
  with pytest.raises(weights.UnsafeWeightsError, match=f"would call {module}.{name},"):
    weights.read(path, use_torch=False)


def test_hand_made_tensor_pickle_reads(tmp_path):
  """The hand-made pickle of the next test is right: in bounds, it reads."""
  data = {"0": np.arange(4, dtype="<f4").tobytes()}
  path = _torch_zip(tmp_path / "model.pth", _tensor_pickle((2,), (2,), offset=1), data)
  np.testing.assert_array_equal(weights.read(path, use_torch=False)["w"], [1.0, 3.0])


@pytest.mark.parametrize("size, stride, offset", [
    ((1000,), (1,), 0), ((2,), (4,), 0), ((4,), (1,), 1), ((2,), (-1,), 1), ((-2,), (1,), 0),
])
def test_tensor_outside_its_storage_is_refused(size, stride, offset, tmp_path):
  data = {"0": np.arange(4, dtype="<f4").tobytes()}
  path = _torch_zip(tmp_path / "model.pth", _tensor_pickle(size, stride, offset), data)
  with pytest.raises(weights.WeightsError, match="damaged") as caught:
    weights.read(path, use_torch=False)
  _one_line(caught.value, path)


@pytest.mark.parametrize("name", ["plain.pth", "plain_legacy.pth", "plain.safetensors"])
def test_truncated_file_gives_one_line(name, tmp_path):
  data = (FIXTURES / name).read_bytes()
  path = tmp_path / name
  path.write_bytes(data[: len(data) * 2 // 3])
  with pytest.raises(weights.WeightsError) as caught:
    weights.read(path, use_torch=False)
  assert type(caught.value) is weights.WeightsError
  _one_line(caught.value, path)


@pytest.mark.parametrize("content", [
    np.random.default_rng(0).bytes(4096), b"", b"\x80\x02K\x03.", json.dumps([1]).encode(),
])
def test_not_a_weights_file_gives_one_line(content, tmp_path):
  path = tmp_path / "model.pth"
  path.write_bytes(content)
  with pytest.raises(weights.WeightsError) as caught:
    weights.read(path, use_torch=False)
  _one_line(caught.value, path)


def test_missing_file_and_file_without_tensors(tmp_path):
  with pytest.raises(weights.WeightsError, match="check the path"):
    weights.read(tmp_path / "missing.pth")
  path = _torch_zip(tmp_path / "epoch.pth", pickle.dumps({"epoch": 3}, protocol=2))
  with pytest.raises(weights.WeightsError, match="holds no tensors"):
    weights.read(path, use_torch=False)


@pytest.mark.parametrize("name", ["bfloat16.pth", "bfloat16.safetensors"])
def test_bfloat16_is_refused_in_one_line(name):
  with pytest.raises(weights.WeightsError, match="bfloat16") as caught:
    weights.read(FIXTURES / name, use_torch=False)
  _one_line(caught.value, FIXTURES / name)


def test_imports_only_the_standard_library_numpy_and_errors():
  """So that it loads by file path in a python without JAX (the top-level imports)."""
  tree = ast.parse(pathlib.Path(weights.__file__).read_text())
  names = {alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
  names |= {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
  assert names - set(sys.stdlib_module_names) == {"numpy", "progressive"}
  assert [node.names[0].name for node in tree.body
          if isinstance(node, ast.ImportFrom) and node.module == "progressive"] == ["errors"]


TORCH_CHECK = """
import importlib.util, os, pickle, sys, types
try:
  import torch
except ImportError:
  sys.exit(print("no torch"))
import numpy as np

def by_path(name, path):
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module

package = sys.modules["progressive"] = types.ModuleType("progressive")
package.errors = by_path("progressive.errors", "progressive/errors.py")
weights = by_path("weights", "progressive/models/weights.py")
loads = []
torch_load = torch.load
torch.load = lambda *args, **kwargs: loads.append(args) or torch_load(*args, **kwargs)
fixtures = "tests/fixtures/weights/"
expected = dict(np.load(fixtures + "expected.npz"))
for name in REAL:
  by_torch = weights.read(fixtures + name, use_torch=True)
  built_in = weights.read(fixtures + name, use_torch=False)
  assert sorted(by_torch) == sorted(built_in) == sorted(expected), name
  for key, want in expected.items():
    for got in by_torch[key], built_in[key]:
      assert (got.dtype, got.shape) == (want.dtype, want.shape) and np.array_equal(got, want)
assert len(loads) == len(REAL), loads
for name in HOSTILE:
  try:
    torch_load(fixtures + name, map_location="cpu", weights_only=True)
    raise AssertionError("torch read " + name)
  except pickle.UnpicklingError as error:
    assert "posix.system" in str(error), error
  try:
    weights.read(fixtures + name, use_torch=True)
    raise AssertionError("read " + name)
  except weights.UnsafeWeightsError as error:
    assert "would call posix.system" in str(error)
try:
  weights.read(fixtures + "bfloat16.pth", use_torch=True)
  raise AssertionError("read bfloat16")
except weights.WeightsError as error:
  assert "bfloat16" in str(error)
assert not os.path.exists(os.environ["PROGRESSIVE_WEIGHTS_MARKER"])
assert "jax" not in sys.modules
print("same arrays")
"""


def test_torch_and_the_built_in_reader_agree(tmp_path):
  """Under the system python (torch 1.13), weights.py loaded by file path, without JAX."""
  if not os.access(SYSTEM_PYTHON, os.X_OK):
    pytest.skip(f"no {SYSTEM_PYTHON}")
  real = [name for name in REAL if name.endswith(".pth")]
  script = f"REAL = {real!r}\nHOSTILE = {HOSTILE!r}\n" + textwrap.dedent(TORCH_CHECK)
  marker = tmp_path / "pwned"
  result = subprocess.run(
      [SYSTEM_PYTHON, "-c", script], check=False, capture_output=True, text=True, timeout=120,
      cwd=pathlib.Path(__file__).parent.parent,
      env={"PATH": "/usr/bin:/bin", "PROGRESSIVE_WEIGHTS_MARKER": str(marker)})
  assert result.returncode == 0, result.stderr[-3000:]
  if result.stdout.strip() == "no torch":
    pytest.skip(f"{SYSTEM_PYTHON} cannot import torch")
  assert result.stdout.strip() == "same arrays" and not marker.exists()
