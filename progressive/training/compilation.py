"""Ahead-of-time compilation of every stage's programs, in the background, the
persistent compilation cache, and the check that a compiled step fits in device memory.

Progressive resizing changes the input shape at each stage, and each new shape is a new
XLA program. `StageCompiler` lowers and compiles the step of every upcoming stage (and
the eval step at every eval size) on abstract shapes in a background thread while the
current stage trains, so a stage switch waits only for whatever compile is unfinished.
With `jax_compilation_cache_dir` set, a resumed or repeated run reads its programs from
disk instead of compiling them.
"""

import concurrent.futures
import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import monitoring
from jax.experimental.compilation_cache import compilation_cache
from jax.sharding import NamedSharding

from progressive import errors

CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"

_thread_state = threading.local()


def _count_cache_hits(event: str, **kwargs) -> None:
  del kwargs
  if event == CACHE_HIT_EVENT and getattr(_thread_state, "hits", None) is not None:
    _thread_state.hits += 1


_listener_lock = threading.Lock()
_listener_installed = []


def _install_listener() -> None:
  """Registers (once per process) the listener that attributes cache hits to a compile."""
  with _listener_lock:
    if not _listener_installed:
      monitoring.register_event_listener(_count_cache_hits)
      _listener_installed.append(True)


def enable_persistent_cache(cache_dir: str | None) -> None:
  """Stores every compiled program in `cache_dir` (none too small or too quick to keep).
  JAX opens its cache once per process, so another directory than the one a run before
  it in this process used (a notebook, a sweep's worker) reopens it there."""
  if not cache_dir:
    return
  if jax.config.jax_compilation_cache_dir != str(cache_dir):
    jax.config.update("jax_compilation_cache_dir", str(cache_dir))
    compilation_cache.reset_cache()
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def abstract(tree):
  """Shape, dtype and sharding of every array in `tree`, for lowering without data."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
      tree,
  )


@dataclasses.dataclass
class CompileResult:
  """A compiled program and what compiling it cost."""

  executable: Any
  seconds: float  # Wall time of lower + compile (in the background thread).
  cache_hit: bool  # Read from the persistent compilation cache.
  flops: float | None  # XLA's count for one call, on one device; None where not reported.


def program_flops(executable) -> float | None:
  """Floating-point operations of one call of a compiled program on one device, as XLA's
  cost analysis counts them (an SPMD program over N devices does N times this)."""
  try:
    cost = executable.cost_analysis()
  except Exception:  # pylint: disable=broad-except  # Backends without a cost model.
    return None
  if isinstance(cost, (list, tuple)):  # Older jax: one dict per program.
    cost = cost[0] if cost else None
  flops = (cost or {}).get("flops")
  return float(flops) if flops is not None and flops >= 0 else None


def _compile(fn: Callable, args: Sequence[Any], static: Any) -> CompileResult:
  _thread_state.hits = 0
  start = time.perf_counter()
  try:
    executable = fn.lower(*args, static).compile()
  finally:
    hits, _thread_state.hits = _thread_state.hits, None
  seconds = time.perf_counter() - start
  return CompileResult(executable, seconds, hits > 0, program_flops(executable))


class StageCompiler:
  """Compiles programs keyed by their static shape arguments, ahead of their use.

  `submit(key, fn, args, static)` queues `fn.lower(*args, static).compile()`; with
  `background=True` one worker thread compiles the queue in order, else each compile
  runs when `get` first asks for it. `get(key)` returns the `CompileResult` and the
  seconds the caller waited for it.
  """

  def __init__(self, *, background: bool = True):
    _install_listener()
    self._background = background
    self._executor = (
        concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="compile")
        if background
        else None
    )
    self._jobs: dict[Any, Any] = {}

  def submit(self, key, fn: Callable, args: Sequence[Any], static: Any) -> None:
    if key in self._jobs:
      return
    if self._executor is not None:
      self._jobs[key] = self._executor.submit(_compile, fn, args, static)
    else:
      self._jobs[key] = (fn, args, static)

  def get(self, key) -> tuple[CompileResult, float]:
    job = self._jobs[key]
    start = time.perf_counter()
    if isinstance(job, concurrent.futures.Future):
      result = job.result()
    elif isinstance(job, CompileResult):
      result = job
    else:
      result = self._jobs[key] = _compile(*job)
    waited = time.perf_counter() - start
    if isinstance(job, concurrent.futures.Future):
      self._jobs[key] = result
    return result, waited

  def close(self) -> None:
    """Stops queued compiles that have not started; waits for the running one."""
    if self._executor is not None:
      self._executor.shutdown(wait=True, cancel_futures=True)


def abstract_batch(batch_size: int, image_size: int, sharding: NamedSharding) -> dict:
  """The shapes of a global batch of uint8 `[B, S, S, 3]` images and int32 labels."""
  return {
      "image": jax.ShapeDtypeStruct((batch_size, image_size, image_size, 3), jnp.uint8, sharding=sharding),
      "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=sharding),
  }


def submit_compiles(
    compiler: StageCompiler,
    train_fn: Callable,
    eval_fn: Callable,
    state,
    stages: Sequence[Any],
    *,
    info,
    eval_sizes: Sequence[int],
    eval_batch_size: int,
    sharding: NamedSharding,
    stats_fn: Callable | None = None,
) -> None:
  """Queues the programs `stages` need, in the order they are needed: each stage's
  train step (and activation-statistics step), then the eval steps its end-of-stage
  evaluation adds. Training batches have `info.train_image_size(stage.size)` pixels,
  evaluation batches `info.image_size` (`info`: the `pipeline.DatasetInfo`)."""
  abstract_state = abstract(state)
  eval_batch = abstract_batch(eval_batch_size, info.image_size, sharding)
  for stage in stages:
    train_batch = abstract_batch(stage.batch_size, info.train_image_size(stage.size), sharding)
    key = (stage.size, stage.batch_size)
    compiler.submit(("train", *key), train_fn, (abstract_state, train_batch), stage.size)
    if stats_fn is not None:
      compiler.submit(("stats", *key), stats_fn, (abstract_state, train_batch), stage.size)
    for size in sorted({stage.size, *eval_sizes}):
      compiler.submit(("eval", size), eval_fn, (abstract_state, eval_batch), size)


class MemoryLimitError(errors.Error, RuntimeError):
  """A compiled step needs more device memory than the device has."""


def device_memory_limit() -> int | None:
  """Bytes of memory on the first local device, where the backend reports it (GPU, TPU)."""
  stats = jax.local_devices()[0].memory_stats()
  return stats.get("bytes_limit") if stats else None


def check_memory(compiled, what: str, fix: str) -> None:
  """Refuses a compiled step that cannot fit in device memory, before it runs.

  `what` names the program (e.g. "Stage 0 (32px, batch 128)") and `fix` the field to
  lower, for the error message.
  """
  limit = device_memory_limit()
  analysis = compiled.memory_analysis()
  if limit is None or analysis is None:
    return
  needed = (
      analysis.argument_size_in_bytes
      + analysis.output_size_in_bytes
      + analysis.temp_size_in_bytes
      - analysis.alias_size_in_bytes
  )
  if needed > limit:
    raise MemoryLimitError(
        f"{what} needs about {needed / 2**30:.2f} GiB per device but the device has "
        f"{limit / 2**30:.2f} GiB. Lower {fix}, or use --config.model.dtype=bfloat16."
    )


class Programs:
  """A run's compiled programs by key (`("train", size, batch)`, `("eval", size)`,
  `("stats", size, batch)`), from a `StageCompiler`. The first use of each is written
  as a `compile` row (kept in `rows`) and a train step is checked against device memory."""

  def __init__(self, compiler: StageCompiler, writer, *, eval_batch_size: int, num_devices: int):
    self._compiler, self._writer = compiler, writer
    self._eval_batch_size, self._num_devices = eval_batch_size, num_devices
    self._logged = set()
    self.rows = []

  def get(self, key, stage, step: int):
    """The executable for `key`, needed at `step` of `stage` (a `schedules.Stage`)."""
    result, waited = self._compiler.get(key)
    if key not in self._logged:
      self._logged.add(key)
      self._log(key, result, waited, stage, step)
    return result.executable

  def _log(self, key, result: CompileResult, waited: float, stage, step: int) -> None:
    kind, size = key[0], key[1]
    batch_size = self._eval_batch_size if kind == "eval" else key[2]
    if kind == "train":
      check_memory(
          result.executable, f"Stage {stage.index} ({size}px, batch {batch_size})",
          f"config.stages[{stage.index}].batch_size",
      )
    self.rows.append(self._writer.write(
        "compile", step=step, stage=stage.index, kind=kind, size=size,
        batch_size=batch_size, seconds=result.seconds, waited=waited,
        cache_hit=result.cache_hit,
        # One call over the whole mesh, XLA's count (a train step's has the backward pass).
        flops=None if result.flops is None else result.flops * self._num_devices,
    ))
    if kind == "train" and jax.process_index() == 0:
      print(
          f"Compiled stage {stage.index} ({size}px, batch {batch_size}) in "
          f"{result.seconds:.1f}s{' (cache hit)' if result.cache_hit else ''}; "
          f"waited {waited:.1f}s for it."
      )

  def close(self) -> None:
    """Stops the compiles still queued."""
    self._compiler.close()
