"""Run by tests/test_multiprocess.py in separate processes (not a test module itself).

    python tests/multiprocess_worker.py OUT_DIR NUM_LOCAL_DEVICES [ADDRESS NUM_PROCESSES PROCESS_ID]

Takes three data-parallel training steps on fixed global batches and writes the losses
and final parameters (process 0 only) to OUT_DIR.
"""

import os
import sys

out_dir, local_devices = sys.argv[1], int(sys.argv[2])
os.environ["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={local_devices} "
                           "--xla_backend_optimization_level=0")  # As every test (conftest.py).
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

if len(sys.argv) > 3:
  address, num_processes, process_id = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
  jax.distributed.initialize(address, num_processes, process_id)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P

from configs import default  # noqa: E402
from progressive import models, optim, schedules  # noqa: E402
from progressive.training import (
  parallel,
  steps,  # noqa: E402
)

config = default.get_config("smoke")
mesh = parallel.make_mesh()
model = models.build(config.model, num_classes=12, bn_axis_name=steps.AXIS)
plan = schedules.stage_plan(config.stages, config.batch_size, 1024)
lr_fn, mom_fn = schedules.make_schedules(plan, config.opt.lr_max)
state = steps.create_train_state(
    model, optim.make_optimizer(config.opt, lr_fn, mom_fn), jax.random.key(0), 32
)
state = jax.device_put(state, NamedSharding(mesh, P()))
step = parallel.make_train_step(mesh, mean=(0.5,) * 3, std=(0.3,) * 3)
rng = np.random.default_rng(0)
rows = 16 // jax.process_count()
lo = jax.process_index() * rows
losses = []
for _ in range(3):
  batch = {
      "image": rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8),
      "label": rng.integers(0, 12, (16,), dtype=np.int32),
  }
  local = {k: v[lo:lo + rows] for k, v in batch.items()}  # This process's part only.
  state, metrics = step(state, parallel.shard_batch(local, NamedSharding(mesh, P(steps.AXIS))), 24)
  losses.append(float(metrics["loss"]))
if jax.process_index() == 0:
  flat = {
      jax.tree_util.keystr(path): np.asarray(leaf)
      for path, leaf in jax.tree_util.tree_leaves_with_path(state.params)
  }
  np.savez(os.path.join(out_dir, "params.npz"), losses=np.asarray(losses), **flat)
