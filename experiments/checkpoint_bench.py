r"""How long a run's first and second checkpoint take to save, with orbax's replica-parallel
write (its default off GPUs) and with each array written whole by its first replica
(`progressive.training.checkpoints.single_replica_writes`, what runs use). Each case runs
in a fresh process (the first save pays for whatever it compiles), on a replicated train
state of the named zoo models over every device:

  XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \
      python experiments/checkpoint_bench.py --models=simple_cnn,resnet18

Prints a markdown table of wall and CPU seconds per save.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _one(model: str, replica_parallel: bool) -> dict:
  """In this process: two saves of `model`'s train state; the seconds of each."""
  import jax  # pylint: disable=import-outside-toplevel
  from etils import epath  # pylint: disable=import-outside-toplevel
  from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=import-outside-toplevel

  sys.path.insert(0, ROOT)
  from configs import zoo  # pylint: disable=import-outside-toplevel
  from progressive import models, optim, schedules  # pylint: disable=import-outside-toplevel
  from progressive.training import checkpoints, parallel, steps  # pylint: disable=import-outside-toplevel

  checkpoints.single_replica_writes(not replica_parallel)
  config = zoo.get_config(model)  # The zoo's defaults: the simple CNN at full width, ResNets at 0.25.
  plan = schedules.stage_plan(config.stages, config.batch_size, 1024)
  lr_fn, mom_fn = schedules.make_schedules(plan, config.opt.lr_max)
  model_ = models.build(config.model, num_classes=10, bn_axis_name=steps.AXIS)
  state = steps.create_train_state(model_, optim.make_optimizer(config.opt, lr_fn, mom_fn),
                                   jax.random.key(0), 32)
  state = jax.device_put(state, NamedSharding(parallel.make_mesh(), PartitionSpec()))
  config_json = json.loads(config.to_json())
  mngr = checkpoints.manager(epath.Path(tempfile.mkdtemp()), max_to_keep=3)
  seconds = []
  for step in (1, 2):
    wall, cpu = time.perf_counter(), time.process_time()
    checkpoints.save(mngr, step, state, {}, stage=0, config_json=config_json)
    checkpoints.wait(mngr)
    seconds.append((time.perf_counter() - wall, time.process_time() - cpu))
  mngr.close()
  return {"arrays": len(jax.tree.leaves(state)), "devices": jax.device_count(),
          "seconds": seconds}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="simple_cnn,resnet18")
  parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # MODEL {0,1}: a child's case.
  args = parser.parse_args()
  if args.one:
    print(json.dumps(_one(args.one[0], args.one[1] == "1")))
    return
  print("| model | arrays | devices | write | first save: wall s | CPU s | second save: wall s | CPU s |")
  print("|---|---:|---:|---|---:|---:|---:|---:|")
  for model in args.models.split(","):
    for replica_parallel in (True, False):
      done = subprocess.run([sys.executable, __file__, "--one", model, str(int(replica_parallel))],
                            capture_output=True, text=True, check=True)
      result = json.loads(done.stdout.strip().splitlines()[-1])
      (w1, c1), (w2, c2) = result["seconds"]
      write = "replica-parallel" if replica_parallel else "first replica"
      print(f"| {model} | {result['arrays']} | {result['devices']} | {write} | {w1:.2f} | {c1:.2f} "
            f"| {w2:.2f} | {c2:.2f} |")


if __name__ == "__main__":
  main()
