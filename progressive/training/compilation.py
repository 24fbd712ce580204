"""Ahead-of-time compilation of every stage's programs, in the background, the
persistent compilation cache, and the check that each compiled program fits in memory.

Progressive resizing changes the input shape at each stage, and each new shape is a new
XLA program. `StageCompiler` lowers and compiles the step of every upcoming stage (and
the eval step at every eval size) on abstract shapes in a background thread while the
current stage trains, so a stage switch waits only for whatever compile is unfinished.
With `jax_compilation_cache_dir` set, a resumed or repeated run reads its programs from
disk instead of compiling them. Every program is checked against the device's memory (on
the CPU, the host's available memory) before the stage that needs it takes its first step.
"""

import concurrent.futures
import dataclasses
import os
import sys
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
LOWERING_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"

_thread_state = threading.local()


def _count_cache_hits(event: str, **kwargs) -> None:
  del kwargs
  if event == CACHE_HIT_EVENT and getattr(_thread_state, "hits", None) is not None:
    _thread_state.hits += 1


def _count_lowerings(event: str, duration: float, **kwargs) -> None:
  del duration, kwargs
  if event == LOWERING_EVENT and getattr(_thread_state, "lowerings", None) is not None:
    _thread_state.lowerings += 1


_listener_lock = threading.Lock()
_listener_installed = []


def _install_listener() -> None:
  """Registers (once per process) the listeners that attribute cache hits and lowerings
  to a compile."""
  with _listener_lock:
    if not _listener_installed:
      monitoring.register_event_listener(_count_cache_hits)
      monitoring.register_event_duration_secs_listener(_count_lowerings)
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
  # Already compiled in this process (a sweep's earlier run): nothing traced, lowered or
  # compiled. The step functions, the model and the optimiser are made once per process
  # (`parallel`, `models.build`, `train.build_state`), so JAX's caches serve it.
  reused: bool = False


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
  _thread_state.hits = _thread_state.lowerings = 0
  start = time.perf_counter()
  try:
    executable = fn.lower(*args, static).compile()
  finally:
    hits, _thread_state.hits = _thread_state.hits, None
    lowerings, _thread_state.lowerings = _thread_state.lowerings, None
  seconds = time.perf_counter() - start
  return CompileResult(executable, seconds, hits > 0, program_flops(executable),
                       reused=not lowerings)


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
) -> dict[int, list]:
  """Queues the programs `stages` need, in the order they are needed: each stage's
  train step (and activation-statistics step), then the eval steps its end-of-stage
  evaluation adds. Training batches have `info.train_image_size(stage.size)` pixels,
  evaluation batches `info.image_size` (`info`: the `pipeline.DatasetInfo`). Returns the
  keys of the programs each stage uses, by stage index."""
  abstract_state = abstract(state)
  eval_batch = abstract_batch(eval_batch_size, info.image_size, sharding)
  stage_keys = {}
  for stage in stages:
    train_batch = abstract_batch(stage.batch_size, info.train_image_size(stage.size), sharding)
    key = (stage.size, stage.batch_size)
    keys = stage_keys[stage.index] = [("train", *key)]
    compiler.submit(("train", *key), train_fn, (abstract_state, train_batch), stage.size)
    if stats_fn is not None:
      keys.append(("stats", *key))
      compiler.submit(("stats", *key), stats_fn, (abstract_state, train_batch), stage.size)
    for size in sorted({stage.size, *eval_sizes}):
      keys.append(("eval", size))
      compiler.submit(("eval", size), eval_fn, (abstract_state, eval_batch), size)
  return stage_keys


class MemoryLimitError(errors.Error, RuntimeError):
  """A compiled program needs more memory than the device (or, on the CPU, the host) has."""


def device_memory_limit() -> int | None:
  """Bytes of memory on the first local device, where the backend reports it (GPU, TPU)."""
  stats = jax.local_devices()[0].memory_stats()
  return stats.get("bytes_limit") if stats else None


def _read_int(path: str) -> int | None:
  try:
    with open(path) as f:
      return int(f.read().split()[0])
  except (OSError, ValueError, IndexError):  # Missing, "max" (no limit), or empty.
    return None


def _read_fields(path: str) -> dict[str, int]:
  """`name value` lines (`/proc/meminfo`, a cgroup's `memory.stat`) as a dict."""
  fields = {}
  try:
    with open(path) as f:
      for line in f:
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[1].isdigit():
          fields[parts[0]] = int(parts[1]) * (1024 if parts[2:] == ["kB"] else 1)
  except OSError:
    pass
  return fields


def _cgroup_headroom(proc: str, cgroup: str) -> int | None:
  """Bytes this process's memory cgroup (a container's, a batch job's) can still take
  before its limit: the limit less the usage, not counting inactive file pages (which the
  kernel reclaims first); None where no limit is set or none can be read."""
  paths = {}
  try:
    with open(os.path.join(proc, "self/cgroup")) as f:
      for line in f:
        _, controllers, path = line.rstrip("\n").split(":", 2)
        if controllers == "":
          paths["v2"] = path
        elif "memory" in controllers.split(","):
          paths["v1"] = path
  except (OSError, ValueError):
    pass
  layouts = [
      ("v2", cgroup, "memory.max", "memory.current", "inactive_file"),
      ("v1", os.path.join(cgroup, "memory"), "memory.limit_in_bytes", "memory.usage_in_bytes",
       "total_inactive_file"),
  ]
  headrooms = []
  for version, root, limit_file, usage_file, inactive in layouts:
    # Its own group where it is visible here, and the root (a container's own group).
    for folder in {os.path.normpath(os.path.join(root, paths.get(version, "/").lstrip("/"))), root}:
      limit, usage = (_read_int(os.path.join(folder, name)) for name in (limit_file, usage_file))
      if limit is None or usage is None or limit >= 2**60:  # v1 writes "no limit" as ~2**63.
        continue
      usage -= _read_fields(os.path.join(folder, "memory.stat")).get(inactive, 0)
      headrooms.append(max(limit - usage, 0))
  return min(headrooms, default=None)


def host_memory_available(proc: str = "/proc", cgroup: str = "/sys/fs/cgroup") -> int | None:
  """Bytes the host can still give this process without swapping: `MemAvailable` of
  /proc/meminfo (free memory and reclaimable caches), or less where a cgroup limits the
  process to less; None where the system reports neither."""
  available = _read_fields(os.path.join(proc, "meminfo")).get("MemAvailable")
  if available is None:
    try:
      available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # Not Linux.
      available = None
  headroom = _cgroup_headroom(proc, cgroup)
  if available is None or headroom is None:
    return headroom if available is None else available
  return min(available, headroom)


def memory_needed(compiled) -> int | None:
  """Bytes one device holds while running `compiled`, as XLA's buffer assignment counts
  them: arguments + outputs + temporaries, less the outputs written into a donated
  argument's buffer; None where the backend does not report it."""
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None
  return (
      analysis.argument_size_in_bytes
      + analysis.output_size_in_bytes
      + analysis.temp_size_in_bytes
      - analysis.alias_size_in_bytes
  )


def _local_devices(compiled) -> int:
  """How many of this process's devices `compiled` runs on (one copy of its buffers each)."""
  shardings = jax.tree.leaves((compiled.input_shardings, compiled.output_shardings))
  devices = set().union(*(s.device_set for s in shardings))
  return sum(d.process_index == jax.process_index() for d in devices) or 1


def check_memory(compiled, what: str, fix: str) -> None:
  """Refuses a compiled program that cannot fit in memory, before it runs.

  `what` names the program (e.g. "Stage 0 (32px, batch 128)") and `fix` the field to
  lower, for the error message. A GPU or TPU reports its memory limit; the CPU does not,
  and there the program's devices share the host's available memory. The estimate is a
  lower bound on the CPU (measured peaks: 1.0-1.3 times it for evaluation, 1.3-2.1 times
  for a train step, the excess being the convolutions' own scratch memory), so a program
  over the available memory is refused and one over half of it gets a warning line.
  """
  needed = memory_needed(compiled)
  if needed is None:
    return
  gib = lambda n: f"{n / 2**30:.2f} GiB"
  limit = device_memory_limit()
  if limit is not None:
    if needed > limit:
      raise MemoryLimitError(
          f"{what} needs about {gib(needed)} per device but the device has {gib(limit)}. "
          f"Lower {fix}, or use --config.model.dtype=bfloat16."
      )
    return
  available = host_memory_available()
  if jax.local_devices()[0].platform != "cpu" or available is None:
    return
  devices = _local_devices(compiled)
  needed *= devices
  of_host = f"of host memory{f' ({devices} CPU devices)' if devices > 1 else ''}"
  if needed > available:
    raise MemoryLimitError(
        f"{what} needs about {gib(needed)} {of_host} but the host has {gib(available)} "
        f"available. Lower {fix}."
    )
  if needed > available / 2 and jax.process_index() == 0:
    print(
        f"Warning: {what} needs about {gib(needed)} {of_host}, over half of the "
        f"{gib(available)} available, and the CPU's convolutions can need as much again; "
        f"if the run is killed, lower {fix}.", file=sys.stderr,
    )


def batch_field(stages: Sequence[Any] | None, index: int) -> str:
  """The config field that sets the batch size of stage `index` of `stages` (the config's)."""
  if stages is not None and stages[index].get("batch_size"):
    return f"config.stages[{index}].batch_size"
  return "config.batch_size"


class Programs:
  """A run's compiled programs by key (`("train", size, batch)`, `("eval", size)`,
  `("stats", size, batch)`), from a `StageCompiler`. The first use of each is written
  as a `compile` row (kept in `rows`); every program is checked against memory first.

  `stage_keys` (from `submit_compiles`) lists the programs each stage uses, so that
  `stage_step` checks them all before the stage's first step; `stages` (the config's) names
  the field that sets a stage's batch size in the error message.
  """

  def __init__(self, compiler: StageCompiler, writer, *, eval_batch_size: int, num_devices: int,
               stage_keys: dict[int, list] | None = None, stages: Sequence[Any] | None = None):
    self._compiler, self._writer = compiler, writer
    self._eval_batch_size, self._num_devices = eval_batch_size, num_devices
    self._stage_keys, self._stages = stage_keys or {}, stages
    self._logged, self._checked = set(), set()
    self.rows = []

  def get(self, key, stage, step: int):
    """The executable for `key`, needed at `step` of `stage` (a `schedules.Stage`)."""
    result, waited = self._compiler.get(key)
    self._check(key, result, stage)
    if key not in self._logged:
      self._logged.add(key)
      self._log(key, result, waited, stage, step)
    return result.executable

  def stage_step(self, stage, step: int):
    """The train step of `stage`, once every program the stage uses (its train,
    statistics and evaluation steps) is compiled and checked: one that cannot fit stops
    the run before the stage's first step rather than at its first evaluation."""
    executable = self.get(("train", stage.size, stage.batch_size), stage, step)
    for key in self._stage_keys.get(stage.index, ()):
      self._check(key, self._compiler.get(key)[0], stage)
    return executable

  def _check(self, key, result: CompileResult, stage) -> None:
    if key in self._checked:
      return
    kind, size = key[0], key[1]
    batch = batch_field(self._stages, stage.index)
    if kind == "eval":
      what, fix = f"Evaluation at {size}px, batch {self._eval_batch_size}", "config.eval_batch_size"
    elif kind == "stats":
      what = f"The activation statistics of stage {stage.index} ({size}px, batch {key[2]})"
      fix = f"{batch} (or set config.activation_stats_every=0)"
    else:
      what, fix = f"Stage {stage.index} ({size}px, batch {key[2]})", batch
    check_memory(result.executable, what, fix)
    self._checked.add(key)

  def _log(self, key, result: CompileResult, waited: float, stage, step: int) -> None:
    kind, size = key[0], key[1]
    batch_size = self._eval_batch_size if kind == "eval" else key[2]
    self.rows.append(self._writer.write(
        "compile", step=step, stage=stage.index, kind=kind, size=size,
        batch_size=batch_size, seconds=result.seconds, waited=waited,
        cache_hit=result.cache_hit, reused=result.reused,
        # One call over the whole mesh, XLA's count (a train step's has the backward pass).
        flops=None if result.flops is None else result.flops * self._num_devices,
    ))
    if kind == "train" and jax.process_index() == 0:
      print(
          f"Compiled stage {stage.index} ({size}px, batch {batch_size}) in "
          f"{result.seconds:.1f}s{' (cache hit)' if result.cache_hit else ''}"
          f"{' (already compiled in this process)' if result.reused else ''}; "
          f"waited {waited:.1f}s for it."
      )

  def close(self) -> None:
    """Stops the compiles still queued."""
    self._compiler.close()
