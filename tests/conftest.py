"""Test setup: a fake 4-device CPU host, set before jax is first imported.

The tests compile far more than they run (a few steps per model, stage and size), so
XLA's CPU backend skips LLVM's optimisation passes (`--xla_backend_optimization_level=0`,
about half the time of a model's smoke test on two cores) unless `XLA_FLAGS` sets a
level: what is compiled is the same HLO, only its machine code is less tuned.
"""

import os

_flags = os.environ.get("XLA_FLAGS", "")
if "--xla_backend_optimization_level" not in _flags:
  _flags += " --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402  (after XLA_FLAGS on purpose)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """A TFDS data_dir holding the prepared `scale_shapes/small`, shared by all tests."""
  from progressive.data import scale_shapes

  path = tmp_path_factory.mktemp("tensorflow_datasets")
  scale_shapes.prepare("small", str(path))
  return str(path)


@pytest.fixture
def smoke_config(data_dir):
  """The smoke config reading the session's prepared dataset, quiet."""
  from configs import default

  config = default.get_config("smoke")
  config.data.data_dir = data_dir
  config.progress_bar = False
  return config
