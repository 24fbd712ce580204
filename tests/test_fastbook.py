"""configs/imagenette_fastbook.py: fastbook chapter 7's recipes as stages, and its smoke
variants trained by the installed command on TFDS mock data."""

import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import imagenette_fastbook as fastbook
from progressive import optim, schedules
from progressive.config import validate
from progressive.training.metrics import read_rows
from tests.test_console import REPO
from tests.test_datasets import write_metadata

NAME, NUM_EXAMPLES = "imagenette/320px-v2", 256  # At least the largest batch.
NUM_TRAIN = 9469  # Imagenette 2's training images: 147 steps an epoch at batch 64.


@pytest.fixture(scope="module")
def metadata_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tfds_metadata")
  write_metadata(NAME, path, NUM_EXAMPLES)
  return path


def lr_at(config, steps):
  """The schedule's LR at `steps` as a run of `config` on Imagenette's training set has it."""
  plan = schedules.stage_plan(config.stages, config.batch_size, NUM_TRAIN)
  opt = config.opt
  lr_fn, _ = schedules.make_schedules(plan, opt.lr_max, cycle=opt.cycle, div=opt.div,
                                      div_final=opt.div_final, pct_start=opt.pct_start,
                                      moms=tuple(opt.moms))
  return plan, np.asarray(lr_fn(np.asarray(steps)))


@pytest.mark.parametrize("arg", ["fixed224", "progressive", "progressive,mixup,ls", "fixed224,tta"])
def test_the_recipes_validate_and_are_fastbooks(arg, metadata_dir):
  config = fastbook.get_config(arg)
  config.data.data_dir = str(metadata_dir)
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES, data_dir=str(metadata_dir),
                              policy=tfds.testing.MockPolicy.USE_FILES):
    validate(config, jax.device_count())
  assert config.model.name == "xresnet50" and config.opt.name == "adamw"
  assert config.opt.weight_decay == 0.01 and config.opt.cycle == "stage"
  assert config.data.mixup_alpha == (0.4 if "mixup" in arg else 0.0)
  assert config.opt.label_smoothing == (0.1 if ",ls" in arg else 0.0)
  assert config.eval_tta == ("flip" if "tta" in arg else "none")
  if arg.startswith("fixed224"):  # fit_one_cycle(5, 3e-3) at 224 px, batch 64.
    plan, lr = lr_at(config, [0, 183, 734])
    assert [(s.size, s.batch_size, s.num_steps) for s in plan] == [(224, 64, 5 * 147)]
    np.testing.assert_allclose(lr[:2], [3e-3 / 25, 3e-3], rtol=1e-3)
    return
  # fit_one_cycle(4, 3e-3) at 128 px, batch 128; fine_tune(5, 1e-3) at 224 px, batch 64 on
  # a one-group Learner: 1 epoch peaking at 1e-3 (pct_start 0.99), then 5 at 5e-4 (div 5).
  plan, lr = lr_at(config, [0, 73, 292, 292 + 145, 439, 439 + 220])
  assert [(s.size, s.batch_size, s.num_steps) for s in plan] == [
      (128, 128, 4 * 73), (224, 64, 147), (224, 64, 5 * 147)]
  np.testing.assert_allclose(lr, [3e-3 / 25, 3e-3, 1e-3 / 25, 1e-3, 5e-4 / 5, 5e-4], rtol=2e-3)
  fine_tuning = optim.FineTuning.from_plan(plan, config.opt.lr_body_div)
  starts = np.asarray([0, 1, 292, 293, 439, 440])
  np.testing.assert_array_equal(fine_tuning.reset(starts), [False, False, True, False, True, False])
  assert not np.any(fine_tuning.frozen(starts)) and np.all(fine_tuning.body_lr(starts) == 1)


def test_unknown_variants_are_refused():
  with pytest.raises(ValueError, match=r"Unknown or repeated config variant parts \['mixp'\]"):
    fastbook.get_config("progressive,mixp")


SITECUSTOMIZE = """\
import os
if os.environ.get("MOCK_TFDS_DIR"):  # TFDS's mock data for the whole process (tests only).
  import tensorflow_datasets as tfds
  MOCK = tfds.testing.mock_data(num_examples=int(os.environ["MOCK_TFDS_EXAMPLES"]),
                                data_dir=os.environ["MOCK_TFDS_DIR"],
                                policy=tfds.testing.MockPolicy.USE_FILES)
  MOCK.__enter__()  # Kept in a global: collecting it would undo the mock.
"""


def mocked_progressive(args, cwd, metadata_dir, hook):
  """The installed console script (beside this Python) in `cwd`, its PYTHONPATH only the
  folder of a `sitecustomize` that enters `tfds.testing.mock_data` in its process."""
  script = pathlib.Path(sys.executable).with_name("progressive")
  env = {**os.environ, "PYTHONPATH": str(hook), "MOCK_TFDS_DIR": str(metadata_dir),
         "MOCK_TFDS_EXAMPLES": str(NUM_EXAMPLES)}
  return subprocess.run([str(script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=600, check=False)


@pytest.mark.slow
def test_smoke_variants_train_from_another_directory(metadata_dir, tmp_path):
  """The installed `progressive train` on each smoke variant, from a directory outside the
  repository, on mock Imagenette: nothing prepared."""
  hook = tmp_path / "hook"
  hook.mkdir()
  (hook / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
  for variant, stages in (("fixed224,smoke", 1), ("progressive,mixup,ls,tta,smoke", 3)):
    workdir = tmp_path / variant.replace(",", "_")
    result = mocked_progressive(
        ["train", f"--config={REPO / 'configs' / 'imagenette_fastbook.py'}:{variant}",
         f"--workdir={workdir}", f"--config.data.data_dir={metadata_dir}",
         "--config.progress_bar=False"], tmp_path, metadata_dir, hook)
    assert result.returncode == 0, (variant, result.stderr[-3000:])
    rows = read_rows(workdir / "metrics.jsonl")
    assert len([r for r in rows if r["event"] == "stage"]) == stages, variant
    evals = [r for r in rows if r["event"] == "eval" and r["stage"] == stages - 1]
    assert evals and all(r["examples"] == NUM_EXAMPLES for r in evals), variant
    assert {r["tta"] for r in evals} == {"flip" if "tta" in variant else "none"}, variant
