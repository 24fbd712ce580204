"""Analysis of a run on any dataset: a folder of real photographs trained with
configs/folder.py:smoke, analysed by `progressive analyze` and the notebook as a built-in
run is, with fastai's interpretation (per class, confusion, top losses, show_batch, loss
curves), the sections it cannot have left out with one line each, and one-line refusals
of a comparison across datasets and of a config.json that no longer fits its checkpoint."""

import dataclasses
import errno
import json
import os
import pathlib
import shutil

import jax
import numpy as np
import pytest
from etils import epath
from matplotlib.figure import Figure

from configs import folder as folder_config
from progressive import analysis, cli, models
from progressive.analysis import interpret, report
from progressive.commands import analyze as analyze_command
from progressive.data import folder, pipeline
from progressive.training import parallel, train
from progressive.training.metrics import read_rows
from progressive.training.workdir import WorkdirError

REPO = pathlib.Path(__file__).resolve().parents[1]
CLASSES = ("astronaut", "camera", "coffee")
# What the report says only of the built-in datasets.
BUILTIN_WORDING = ("shapes (outlines", "textures (fixed pixel periods)", "object scale",
                   "median object", "**shape**", "**texture**", "render shifts")


# --- Interpretation, the chance warning and the files, on known numbers ---------------------


def test_interpretation_counts_confusions_and_ranks_losses():
  names = ["cat", "dog, big", "eel"]  # A comma: the CSV must quote it.
  labels = np.array([0, 0, 0, 1, 1, 2])
  predicted = np.array([0, 1, 1, 1, 0, 0])
  logits = np.full((6, 3), -2.0)
  logits[np.arange(6), predicted] = np.array([3.0, 1.0, 4.0, 2.0, 0.5, 5.0])
  result = interpret.interpretation(logits, labels, names, top_losses=3)
  assert result["num_images"] == 6 and result["accuracy"] == pytest.approx(2 / 6)
  assert result["confusion"] == [[1, 2, 0], [1, 1, 0], [1, 0, 0]]
  assert [(r["class"], r["count"], r["correct"]) for r in result["per_class"]] == [
      ("cat", 3, 1), ("dog, big", 2, 1), ("eel", 1, 0)]
  assert result["per_class"][2]["accuracy"] == 0.0
  assert result["most_confused"][0] == {"true": "cat", "predicted": "dog, big", "count": 2}
  assert len(result["most_confused"]) == 3  # Every off-diagonal cell with a count.
  losses = -np.asarray(jax.nn.log_softmax(logits))[np.arange(6), labels]
  assert [t["index"] for t in result["top_losses"]] == list(np.argsort(-losses)[:3])
  top = result["top_losses"][0]  # The eel called a cat with logit 5.
  assert (top["index"], top["true"], top["predicted"]) == (5, "eel", "cat")
  assert top["loss"] == pytest.approx(losses[5]) and top["probability"] > 0.99
  assert top["p_true"] == pytest.approx(np.exp(-losses[5]))
  lines = interpret.confusion_csv(result).splitlines()
  assert lines[0] == 'true \\ predicted,cat,"dog, big",eel' and lines[2] == '"dog, big",1,1,0'
  assert interpret.per_class_csv(result).splitlines()[3] == "eel,1,0,0.0"


def test_chance_warning_only_near_chance():
  # 12 classes: chance 0.083; within 5 points up to 0.133.
  warning = analysis.chance_warning(0.09, 12, 32)
  assert warning == ("Warning: accuracy 0.09 at 32 px is within 5 points of chance (1/12 = 0.08): "
                     "the network has not learnt the task, and the analyses below describe an "
                     "untrained network.")
  assert analysis.chance_warning(0.13, 12, 32) is not None
  assert analysis.chance_warning(0.14, 12, 32) is None
  assert analysis.chance_warning(0.95, 3, 64) is None
  assert "is below chance" in analysis.chance_warning(0.0, 3, 64)
  # Stored batch-norm statistics that have not settled, weights that have learnt.
  settled = analysis.chance_warning(0.33, 3, 32, recalibrated=0.9)
  assert "0.90 with them recomputed at 32 px" in settled and "not learnt" not in settled
  assert "not learnt" in analysis.chance_warning(0.33, 3, 32, recalibrated=0.35)


def _fake_results():
  """What `analyze` returns, as far as writing the files needs."""
  results = {name: {"value": 1} for name in report.JSON_FILES}
  results["interpretation"] = interpret.interpretation(
      np.eye(3), np.array([0, 1, 1]), ["a", "b", "c"])
  return results


def test_a_full_disk_under_the_new_files_is_one_line_and_leaves_none_half_written(
    tmp_path, monkeypatch):
  monkeypatch.setattr(report, "analyze", lambda run, options: _fake_results())
  monkeypatch.setattr(report, "figures", lambda run, results: {"confusion_matrix": Figure()})
  monkeypatch.setattr(report, "markdown", lambda results: "# Report\n")
  out = tmp_path / "analysis"
  report.write_report(None, out)  # A whole set first: the CSVs with their class names.
  assert (out / "confusion_matrix.csv").read_text().splitlines()[0] == "true \\ predicted,a,b,c"
  before = (out / "confusion_matrix.csv").read_bytes()
  real_write_text = epath.Path.write_text

  def write_text(self, text, *args, **kwargs):
    if self.name.startswith("confusion_matrix.csv"):
      real_write_text(self, text[:7], *args, **kwargs)
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_write_text(self, text, *args, **kwargs)

  monkeypatch.setattr(epath.Path, "write_text", write_text)
  (out / "report.md").unlink()
  with pytest.raises(WorkdirError) as raised:
    report.write_report(None, out)
  assert str(raised.value).startswith(f"Cannot write {out / 'confusion_matrix.csv'}: No space left")
  assert len(cli.one_line(raised.value)) == len(str(raised.value))
  assert (out / "confusion_matrix.csv").read_bytes() == before  # The last whole one.
  assert not list(out.glob("*.tmp")) and not (out / "report.md").exists()


# --- A folder run, trained once -----------------------------------------------------------


def _train(root, workdir):
  config = folder_config.get_config("smoke")
  config.data.data_dir = str(root)
  train.train_and_evaluate(config, str(workdir))
  return workdir


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory):
  return folder.write_photo_folder(tmp_path_factory.mktemp("photos"), {"train": 8, "val": 4},
                                   size=(64, 48), classes=CLASSES)


@pytest.fixture(scope="module")
def folder_workdir(photo_root, tmp_path_factory):
  """configs/folder.py:smoke on 3 classes of photographs: stages 16 -> 32 px, 4 steps each."""
  return _train(photo_root, tmp_path_factory.mktemp("folder_run"))


@pytest.fixture(scope="module")
def folder_run(folder_workdir):
  return analysis.load_run(folder_workdir)


def _analyze(args, capsys) -> tuple[int, str]:
  """`progressive analyze ARGS` in this process: its exit status and stderr."""
  fv = cli.parse(analyze_command.COMMAND, ["progressive analyze", *args])
  status = cli.execute(analyze_command.COMMAND, fv)
  return status, capsys.readouterr().err


@pytest.mark.slow
def test_report_of_a_folder_run_interprets_it_in_its_own_words(folder_run, capsys):
  workdir = folder_run.workdir
  status, err = _analyze([f"--workdir={workdir}"], capsys)
  assert status in (None, 0), err
  out = workdir / "analysis"
  text = (out / "report.md").read_text()
  for name in ("curves", "show_batch", "confusion_matrix", "top_losses", "size_matrix",
               "jaggedness", "ensemble", "schedules"):
    assert f"({name}.png)" in text and os.path.getsize(out / f"{name}.png") > 1000, name
  for name in ("overview", "interpretation", "curves"):
    assert f"({name}.json)" in text
  assert not (out / "object_scale.png").exists()
  for heading in ("## Training inputs (show_batch)", "## Loss and accuracy",
                  "## Per-class accuracy", "## Confusion matrix", "## Top losses"):
    assert heading in text
  # In the dataset's own words: its class names, no families, none of the built-in wording.
  assert "3 classes (astronaut, camera, coffee)" in text
  assert f"the image folder {folder_run.config.data.data_dir}" in text
  for words in BUILTIN_WORDING:
    assert words not in text, words
  for line in report.SECTIONS_LEFT_OUT.values():
    assert line in text
  assert "Families: left out" in text
  # The whole eval split, at the training size: the logged evaluation comes back.
  interp = json.loads((out / "interpretation.json").read_text())
  assert interp["num_images"] == 12 and interp["size"] == 32 and interp["step"] == 8
  logged = [r for r in read_rows(workdir / "metrics.jsonl")
            if r["event"] == "eval" and r["step"] == 8 and r["size"] == 32]
  assert interp["accuracy"] == pytest.approx(logged[0]["accuracy"], abs=1e-6)
  assert [r["count"] for r in interp["per_class"]] == [4, 4, 4]
  assert np.asarray(interp["confusion"]).sum() == 12 and len(interp["top_losses"]) == 9
  assert "| astronaut | 4 |" in text
  csv_lines = (out / "confusion_matrix.csv").read_text().splitlines()
  assert csv_lines[0] == "true \\ predicted,astronaut,camera,coffee"
  assert [list(map(int, line.split(",")[1:])) for line in csv_lines[1:]] == interp["confusion"]
  per_class = (out / "per_class.csv").read_text()
  assert per_class.startswith("class,count,correct,accuracy\nastronaut,4,")
  for pair in interp["most_confused"]:
    assert f"| {pair['true']} | {pair['predicted']} | {pair['count']} |" in text
  # How many test images each section used.
  overview = json.loads((out / "overview.json").read_text())
  assert overview["test_images"]["interpretation"] == 12
  assert overview["test_images"]["size_matrix"] == 12  # All 12 of the split: --num_images=64.
  assert "| per-class accuracy, confusion matrix, top losses | all 12 |" in text
  assert "Test images each section used, of the 12 in val" in text
  # Curves: the train rows, the evaluations at the stage's size, the boundary.
  curves = json.loads((out / "curves.json").read_text())
  assert curves["train"]["step"] == [2, 4, 6, 8] and curves["boundaries"] == [4]
  assert list(zip(curves["eval"]["step"], curves["eval"]["size"])) == [(4, 16), (8, 32)]
  # The warning near chance, in the first lines exactly when the accuracy is there.
  near_chance = interp["accuracy"] < 1 / 3 + 0.05
  assert ("Warning: accuracy" in "\n".join(text.splitlines()[:4])) == near_chance
  assert (overview["warning"] is not None) == near_chance


@pytest.mark.slow
def test_show_batch_is_the_start_of_each_stages_first_training_batch(folder_run):
  batches = analysis.show_batch(folder_run, 5)
  plan = folder_run.stages()
  assert [(b["stage"], b["size"]) for b in batches] == [(0, 16), (1, 32)]
  split = pipeline.open_split(folder_run.config.data, "train", train=True)
  for stage, shown in zip(plan, batches):
    seed = parallel.stage_seed(folder_run.config.seed, stage.index)
    first = split.train_dataset(stage.batch_size, seed=seed, size=stage.size)[0]
    assert shown["image"].shape == (5, stage.size, stage.size, 3) and shown["seed"] == seed
    np.testing.assert_array_equal(shown["image"], first["image"][:5])
    np.testing.assert_array_equal(shown["label"], first["label"][:5])
  # Augmented: none is the evaluation transform of a training image.
  evaluated = analysis.load_examples(folder_run.config.data, "train")["image"]
  assert not any(np.array_equal(image, e) for image in batches[1]["image"] for e in evaluated)


@pytest.mark.slow
def test_notebook_runs_on_a_folder_run(folder_workdir, tmp_path, monkeypatch):
  import nbclient  # pylint: disable=import-outside-toplevel
  import nbformat  # pylint: disable=import-outside-toplevel

  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_backend_optimization_level=0",
             PROGRESSIVE_WORKDIR=str(folder_workdir), PROGRESSIVE_NUM_IMAGES="32")
  for key, value in env.items():
    monkeypatch.setenv(key, value)
  notebook = nbformat.read(REPO / "experiments" / "analysis.ipynb", as_version=4)
  nbclient.NotebookClient(
      notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
  ).execute()
  outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) == 10  # Every figure but the object scale's.
  printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
  assert report.SECTIONS_LEFT_OUT["object_scale"] in printed and "3 classes: astronaut" in printed
  assert not [o for o in outputs if o.get("output_type") == "error"]


@pytest.mark.slow
def test_compare_across_datasets_is_refused_in_one_line(folder_run, photo_root, tmp_path, capsys):
  # Another class count: a run on two of the classes.
  two = folder.write_photo_folder(tmp_path / "two", {"train": 8, "val": 4}, size=(64, 48),
                                  classes=CLASSES[:2])
  other = _train(two, tmp_path / "two_classes")
  status, err = _analyze([f"--workdir={folder_run.workdir}", f"--compare={other}",
                          f"--out={tmp_path / 'out'}"], capsys)
  assert status == 2 and len(err.strip().splitlines()) == 1, err
  assert err.startswith(
      f"Error: Cannot compare {other} with {folder_run.workdir}: data.data_dir is"), err
  assert not (tmp_path / "out" / "report.md").exists()
  # The same class count in another folder.
  moved = tmp_path / "moved"
  shutil.copytree(photo_root, moved)
  copy = tmp_path / "copy"
  shutil.copytree(folder_run.workdir, copy, ignore=shutil.ignore_patterns("analysis"))
  config = json.loads((copy / "config.json").read_text())
  config["data"]["data_dir"] = str(moved)
  (copy / "config.json").write_text(json.dumps(config))
  with pytest.raises(analysis.RunError, match=r"data\.data_dir is .*moved"):
    analysis.check_comparable(folder_run, analysis.load_run(copy))
  # Another class count, or other class names, under the same name (a TFDS dataset's
  # data_dir only says where it is prepared).
  for info, why in [
      (dataclasses.replace(folder_run.info, num_classes=4, class_names=(*CLASSES, "dog")),
       "it has 4 classes and this run 3"),
      (dataclasses.replace(folder_run.info, class_names=("astronaut", "camera", "tea")),
       "its class 2 is 'tea' and this run's 'coffee'"),
  ]:
    with pytest.raises(analysis.RunError, match=why):
      analysis.check_comparable(folder_run, dataclasses.replace(folder_run, info=info))
  # The same dataset compares: another checkpoint of the run itself.
  analysis.check_comparable(folder_run, analysis.load_run(folder_run.workdir, 4))


@pytest.mark.slow
def test_a_config_json_that_does_not_fit_its_checkpoint_is_one_line(folder_run, tmp_path, capsys):
  copy = tmp_path / "edited"
  shutil.copytree(folder_run.workdir, copy, ignore=shutil.ignore_patterns("analysis"))
  stored = json.loads((copy / "config.json").read_text())
  for field, value, expected in [
      ("name", "vgg11", "config.model.name is 'vgg11' in {} but 'simple_cnn' in the checkpoint at "
                        "step 8"),
      ("channels", [8, 16, 64], "config.model.channels is [8, 16, 64] in {} but [8, 16, 32] in the "
                                "checkpoint at step 8"),
  ]:
    edited = json.loads(json.dumps(stored))
    edited["model"][field] = value
    (copy / "config.json").write_text(json.dumps(edited))
    status, err = _analyze([f"--workdir={copy}"], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("Error: " + expected.format(copy / "config.json")), err
  # Without the config the checkpoint was written with: the first parameter that differs.
  config = folder_run.config.copy_and_resolve_references()
  config.model.channels = (8, 16, 64)
  model = models.build(config.model, num_classes=3, bn_axis_name=None)
  with pytest.raises(analysis.RunError) as raised:
    analysis.check_model_fits(folder_run.workdir, 8, config, folder_run.info, model,
                              folder_run.variables, 32)
  assert ("params/conv2/conv/kernel has shape (3, 3, 16, 32) in the checkpoint and (3, 3, 16, 64) "
          "in that model") in str(raised.value)
  analysis.check_model_fits(folder_run.workdir, 8, folder_run.config, folder_run.info,
                            folder_run.model, folder_run.variables, 32)  # The run's own fits.
