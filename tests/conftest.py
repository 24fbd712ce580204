"""Test setup: a fake 4-device CPU host, set before jax is first imported.

The tests compile far more than they run (a few steps per model, stage and size), so
XLA's CPU backend skips LLVM's optimisation passes (`--xla_backend_optimization_level=0`,
about half the time of a model's smoke test on two cores) unless `XLA_FLAGS` sets a
level: what is compiled is the same HLO, only its machine code is less tuned.
"""

import os
import sys

_flags = os.environ.get("XLA_FLAGS", "")
if "--xla_backend_optimization_level" not in _flags:
  _flags += " --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402  (after XLA_FLAGS on purpose)


@pytest.fixture(autouse=True)
def _persistent_cache_off_after_each_test():
  """JAX's persistent compilation cache stays on in a process once a run turns it on:
  turned off after each test, so no test reads what another compiled unless it says so."""
  yield
  jax = sys.modules.get("jax")
  if jax is not None and jax.config.jax_compilation_cache_dir is not None:
    from jax.experimental.compilation_cache import compilation_cache

    jax.config.update("jax_compilation_cache_dir", None)
    compilation_cache.reset_cache()


@pytest.fixture(scope="session")
def compilation_cache(tmp_path_factory):
  """A persistent compilation cache the sweep tests share (`compilation_cache_dir`): a
  sweep compiles the same programs for every seed and learning rate, and reads them from
  here after the first, as a researcher's sweep with a cache does."""
  return str(tmp_path_factory.mktemp("compilation_cache"))


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
