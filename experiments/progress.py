"""Keeps the background sweeps' finished runs in the repository, so that a sweep goes on
from them on another machine (a session's machine is not kept).

    python experiments/progress.py save ROOT [NAME ...]
    python experiments/progress.py restore ROOT [NAME ...]

`save` copies each sweep folder `ROOT/NAME` (every one under ROOT, or the NAMEs given)
into `experiments/progress/NAME/`, replacing the earlier copy: its own files (the tuning
choice, the tables), and each run that has ended, as a point or a tuning run, with its
summary (`sweep_point.json`) or its divergence (`sweep_diverged.json`). A run is copied
without its checkpoints and TensorBoard events, which a summarised run does not need
(`measure.summarized`), and a tuning run without its activation records; a run that has
not ended is left out, and trains again from its start. A folder under ROOT that holds
no run is not a sweep's, and is passed over (refused where it is named). `restore`
copies them into `ROOT/NAME` where that run or file is not there already, so `bash
experiments/run_findings.sh ROOT` (or the same `progressive sweep`) goes on from them.
Neither touches a sweep's hold: `save` beside a running sweep copies what has ended by
then.
"""

import fnmatch
import pathlib
import shutil
import sys

from progressive.sweeps import folder, measure, tuning
from progressive.training import activations
from progressive.training import workdir as workdir_lib

PROGRESS = pathlib.Path(__file__).parent / "progress"
# Not needed to go on (checkpoints, TensorBoard events, plots remade by aggregation), a
# hold, or a file being written (`workdir.write_atomically`).
LEFT_OUT = ("checkpoints", "tensorboard", folder.HOLD_FILE, workdir_lib.HOLD_FILE, "*.png", "*.tmp")


def ended(run: pathlib.Path) -> bool:
  """Whether `run` is a run folder that has ended: summarised, or stopped on a non-finite loss."""
  return measure.read_summary(run) is not None or measure.diverged(run) is not None


def runs(sweep: pathlib.Path) -> list[pathlib.Path]:
  """The run folders of a sweep folder: its points and its tuning runs (`config.json`)."""
  return [run for parent in _parents(sweep) for run in sorted(parent.iterdir())
          if (run / "config.json").is_file()]


def own_files(sweep: pathlib.Path) -> list[pathlib.Path]:
  """The sweep's own files beside its runs: the tuning choice, the tables."""
  return [file for parent in _parents(sweep) for file in sorted(parent.iterdir())
          if file.is_file() and not any(fnmatch.fnmatch(file.name, x) for x in LEFT_OUT)]


def _parents(sweep: pathlib.Path) -> list[pathlib.Path]:
  return [p for p in (sweep, sweep / tuning.TUNING_DIR) if p.is_dir()]


def _copy_run(run: pathlib.Path, to: pathlib.Path, tuning_run: bool = False) -> None:
  """A tuning run goes without its activation records too (about 0.3 MB at 64 px): it is
  read for its metric alone; a point's feed claim 6's figure."""
  extra = (activations.STATS_FILE,) if tuning_run else ()
  shutil.copytree(run, to, ignore=shutil.ignore_patterns(*LEFT_OUT, *extra))


def _copy_file(file: pathlib.Path, to: pathlib.Path) -> None:
  to.parent.mkdir(parents=True, exist_ok=True)
  shutil.copy2(file, to)


def save(sweep: pathlib.Path, to: pathlib.Path) -> tuple[int, int]:
  """Copies `sweep`'s own files and its ended runs into `to` (replaced whole, through a
  folder beside it); returns the runs copied and the runs left out."""
  staging = to.with_name(to.name + ".saving")
  shutil.rmtree(staging, ignore_errors=True)
  staging.mkdir(parents=True)
  for file in own_files(sweep):
    _copy_file(file, staging / file.relative_to(sweep))
  copied = left = 0
  for run in runs(sweep):
    if ended(run):
      _copy_run(run, staging / run.relative_to(sweep), tuning_run=run.parent != sweep)
      copied += 1
    else:
      left += 1
  shutil.rmtree(to, ignore_errors=True)
  staging.rename(to)
  return copied, left


def restore(saved: pathlib.Path, sweep: pathlib.Path) -> tuple[int, int]:
  """Copies `saved` into `sweep`, each run and file only where it is not there already;
  returns the runs restored and the runs already there."""
  for file in own_files(saved):
    if not (to := sweep / file.relative_to(saved)).exists():
      _copy_file(file, to)
  restored = present = 0
  for run in runs(saved):
    if (to := sweep / run.relative_to(saved)).exists():
      present += 1
    else:
      _copy_run(run, to)
      restored += 1
  return restored, present


def main(argv: list[str]) -> None:
  if len(argv) < 3 or argv[1] not in ("save", "restore"):
    sys.exit("usage: python experiments/progress.py save|restore ROOT [NAME ...]")
  action, root, names = argv[1], pathlib.Path(argv[2]), argv[3:]
  source = root if action == "save" else PROGRESS
  if not source.is_dir():
    fix = "run the sweeps into it first" if action == "save" else "nothing has been saved"
    sys.exit(f"{source} is not a folder: {fix}.")
  names = names or sorted(p.name for p in source.iterdir()
                          if runs(p) and not p.name.endswith(".saving"))  # Not a save cut short.
  for name in names:
    if not runs(source / name):
      sys.exit(f"{source / name} holds no run of a sweep: name a sweep folder under {source}.")
  for name in names:
    if action == "save":
      copied, left = save(root / name, PROGRESS / name)
      print(f"{name}: {copied} ended run(s) saved to {PROGRESS / name}"
            + (f"; {left} not ended, left out" if left else ""))
    else:
      restored, present = restore(PROGRESS / name, root / name)
      print(f"{name}: {restored} run(s) restored into {root / name}"
            + (f"; {present} there already, kept" if present else ""))


if __name__ == "__main__":
  main(sys.argv)
