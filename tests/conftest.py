"""Test setup: a fake 4-device CPU host, set before jax is first imported.

The tests compile far more than they run (a few steps per model, stage and size), so
XLA's CPU backend skips LLVM's optimisation passes (`--xla_backend_optimization_level=0`,
about half the time of a model's smoke test on two cores) unless `XLA_FLAGS` sets a
level: what is compiled is the same HLO, only its machine code is less tuned.

Most tests compile the same few smoke programs, in this process or in the `progressive`
processes they start, so every process of one test run shares one persistent compilation
cache (JAX's environment variables, inherited by xdist's workers and every subprocess),
made afresh for the run and removed after it (where `JAX_COMPILATION_CACHE_DIR` is set
already, that one is used and kept; set empty, no cache). A test that counts XLA's
compiles or expects a cold cache turns it off (`fresh_compiles`; test_train's
module-wide smoke run does the same itself); one that tests the cache gives its run
`compilation_cache_dir` of its own.
"""

import os
import shutil
import sys
import tempfile

_flags = os.environ.get("XLA_FLAGS", "")
if "--xla_backend_optimization_level" not in _flags:
  _flags += " --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The controller makes the run's cache; xdist's workers inherit the variable.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="progressive-tests-cache-")
SHARED_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"]
# Every program, as a run with `compilation_cache_dir` caches them: the small eager
# operations too, which every process would otherwise compile afresh (a smoke run's 36
# programs, 26 of them under 0.1 s to compile; from a warm cache it took 6.5 CPU-seconds
# instead of 7.3 with only the others cached, 2026-12-07). The quick tier leaves about
# 1,600 files, removed in seconds.
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"

import pytest  # noqa: E402  (after XLA_FLAGS on purpose)


# The modules that take longest (summed durations, measured 2026-12-07), handed to xdist's
# workers first: `--dist loadscope` gives out whole modules in collection order, and one
# of these started last would leave the other workers idle for minutes at the end.
LONGEST_FIRST = ("test_reliability.py", "test_experiments.py", "test_gpu_bench.py",
                 "test_models.py", "test_sweep.py", "test_own_images.py", "test_pretrained.py")


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  # A stable sort: each module's tests keep their order.
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_unconfigure(config):
  if _OWN_CACHE and not hasattr(config, "workerinput"):
    shutil.rmtree(SHARED_CACHE, ignore_errors=True)


def _use_cache(cache_dir: str | None) -> None:
  jax = sys.modules.get("jax")
  if jax is None:
    return
  if jax.config.jax_compilation_cache_dir != cache_dir:
    from jax.experimental.compilation_cache import compilation_cache

    jax.config.update("jax_compilation_cache_dir", cache_dir)
    compilation_cache.reset_cache()
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


@pytest.fixture(autouse=True)
def _shared_cache_after_each_test():
  """A run given a cache (`compilation_cache_dir`) keeps it in this process, and caches
  every program from then on: the shared cache and its threshold are back after each
  test."""
  yield
  _use_cache(SHARED_CACHE)


@pytest.fixture
def fresh_compiles(monkeypatch):
  """No persistent cache, in this process and the processes the test starts: every
  program is compiled by XLA."""
  import jax  # noqa: F401  (so that `_use_cache` finds it)

  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  _use_cache(None)


@pytest.fixture(scope="session")
def compilation_cache():
  """The persistent compilation cache every test shares, for a config's
  `compilation_cache_dir`: a sweep compiles the same programs for every seed and
  learning rate, and reads them from here after the first."""
  return SHARED_CACHE


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
