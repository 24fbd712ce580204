"""Sweeps: expansion, running with skip and resume, aggregation, printed commands, and
every experiment config's smoke variant."""

import csv
import json
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

from progressive import cli, sweep, sweep_report
from progressive.analysis import controls
from progressive.analysis import run as run_lib
from progressive.config_validation import validate
from progressive.metrics import read_rows

REPO = pathlib.Path(__file__).parents[1]
EXPERIMENTS = ("size_sweep", "antialias", "head", "stability", "progressive_vs_fixed", "fixres",
               "train_test_size", "progressive_resizing")


def test_product_and_zip():
  assert sweep.product(a=[1, 2], b=["x"]) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
  assert sweep.zip_axes(a=[1, 2], b=[3, 4]) == [{"a": 1, "b": 3}, {"a": 2, "b": 4}]
  with pytest.raises(ValueError, match="one length"):
    sweep.zip_axes(a=[1], b=[1, 2])


def test_with_seeds_names_every_point_once_per_seed():
  points = sweep.with_seeds([{"name": "a", "x": 1}, {"x": 2}], (0, 3))
  assert [p.get("name") for p in points] == ["a_seed0", "a_seed3", None, None]
  assert [p["seed"] for p in points] == [0, 3, 0, 3]
  assert sweep.point_name(points[3]) == "x=2_seed=3"


def test_equal_budget_matches_the_pixels_of_the_progressive_stages():
  pvf = sweep.load_module(str(REPO / "configs/progressive_vs_fixed.py"))
  stages = [dict(size=32, epochs=3), dict(size=48, epochs=2), dict(size=64, epochs=2)]
  assert pvf.equal_budget(stages, 64) == dict(size=64, epochs=3.875)  # 3/4 + 2 * 9/16 + 2.
  assert pvf.equal_budget([dict(size=16, steps=8), dict(size=32, steps=8)], 32) == dict(size=32, steps=10)
  points = {p["name"]: p for p in pvf.get_sweep(None)}
  assert points["fixed64_seed2"]["stages"] == (dict(size=64, epochs=3.875),)
  assert points["fixed64_zoom_seed0"]["data.augment"] == "rrc_flip"
  assert points["progressive_stage_seed1"]["opt.cycle"] == "stage"
  assert len(points) == 12


def test_point_names_and_overrides():
  assert sweep.point_name({"model.downsample": "blur", "model.blur_size": 5}) == "downsample=blur_blur_size=5"
  assert sweep.point_name({"name": "x", "seed": 1}) == "x"
  config = sweep.load_module(str(REPO / "configs/default.py")).get_config("smoke")
  changed = sweep.apply_overrides(config, {"model.downsample": "blur", "stages": [dict(size=16, steps=2)]})
  assert changed.model.downsample == "blur" and changed.stages == (dict(size=16, steps=2),)
  assert config.model.downsample == "stride"  # The base is left alone.
  with pytest.raises(KeyError, match="model.nope"):
    sweep.apply_overrides(config, {"model.nope": 1})


@pytest.mark.parametrize("name", EXPERIMENTS)
@pytest.mark.parametrize("arg", [None, "smoke"])
def test_every_experiment_point_validates(name, arg):
  _, points = sweep.expand(f"{REPO}/configs/{name}.py" + (f":{arg}" if arg else ""))
  assert len(points) >= 2
  assert len({p[0] for p in points}) == len(points)
  for _, _, config in points:
    validate(config, num_devices=4)


@pytest.mark.parametrize("flag", ["antialias.py:rerun", "antialias.py:rerun_photos", "stability.py:rerun",
                                  "stability.py:rerun_photos", "train_test_size.py:photos",
                                  "progressive_resizing.py:long", "progressive_resizing.py:photos_long"])
def test_every_rerun_point_and_tuning_run_validates(flag):
  _, points = sweep.expand(f"{REPO}/configs/{flag}")
  tuning = sweep.tuning_points(f"{REPO}/configs/{flag}")
  assert len({p[0] for p in points}) == len(points) >= 10 and tuning
  seeds = {o["seed"] for _, o, _ in points}
  assert seeds == {0, 1, 2, 3, 4}  # Five seeds for every headline comparison.
  for _, _, config in points + [t[2:] for t in tuning]:
    validate(config, num_devices=1)
  groups = {sweep_report.group_name({"name": n, "overrides": o}) for n, o, _ in points}
  for arm, baseline in sweep_report.config_comparisons(f"{REPO}/configs/{flag}"):
    assert {arm, baseline} <= groups


def test_antialias_covers_three_families_and_their_modes():
  _, points = sweep.expand(f"{REPO}/configs/antialias.py")
  names = [p[0] for p in points]
  assert len(names) == 11 and "resnet18_blur5" in names and "resnet18_max" in names
  assert "vgg11_max" not in names  # The same network as vgg11_stride.


@pytest.fixture(scope="module")
def antialias_smoke(tmp_path_factory, data_dir):
  workdir = tmp_path_factory.mktemp("antialias")
  common = {"data.data_dir": data_dir, "progress_bar": False, "checkpoint_every_steps": 4}
  rows = sweep.run_sweep(f"{REPO}/configs/antialias.py:smoke", str(workdir), common=common,
                         num_shift_images=16)
  return workdir, common, rows


def test_sweep_runs_and_aggregates(antialias_smoke):
  workdir, _, rows = antialias_smoke
  assert [r["name"] for r in rows] == ["simple_cnn_stride", "simple_cnn_blur3"]
  with (workdir / "results.csv").open() as f:
    table = list(csv.DictReader(f))
  assert [r["model.downsample"] for r in table] == ["stride", "blur"]
  for row in table:
    for column in ("acc@24", "acc@32", "acc_shape@32", "acc_texture@32", "jaggedness", "consistency"):
      assert 0.0 <= float(row[column]) <= (1.0 if column != "jaggedness" else 8.0)
    assert float(row["wall_seconds"]) > 0
    # Shifts over the whole period (total stride 8) and accuracy by object scale.
    assert row["shift_period"] == "8" and 0 <= float(row["pred_change"]) <= 1
    assert 0 <= float(row["cons_period"]) <= 1 and float(row["prob_change"]) >= 0
    assert 0 <= float(row["acc_obj@0.55"]) <= 1 and 0 <= float(row["acc_obj_texture@0.25"]) <= 1
    rf = 17 if row["model.downsample"] == "stride" else 31  # The final receptive fields at 32 px.
    assert float(row["rf_scale"]) == pytest.approx(rf / 32, abs=1e-3)
  markdown = (workdir / "results.md").read_text()
  assert "2 of 2 points finished." in markdown and "| simple_cnn_blur3 | simple_cnn | blur | 3 |" in markdown
  assert (workdir / "results.png").stat().st_size > 1000


def test_finished_points_are_skipped_and_partial_ones_resume(antialias_smoke, capsys):
  workdir, common, _ = antialias_smoke
  point = workdir / "simple_cnn_blur3"
  before = (workdir / "simple_cnn_stride" / "metrics.jsonl").read_text()
  shutil.rmtree(point / "checkpoints" / "8")  # As if killed before its last checkpoint.
  (point / sweep_report.SUMMARY_FILE).unlink()
  sweep.run_sweep(f"{REPO}/configs/antialias.py:smoke", str(workdir), common=common, num_shift_images=16)
  out = capsys.readouterr().out
  assert "[simple_cnn_stride] finished already; skipped." in out
  assert "[simple_cnn_blur3] resuming." in out
  assert re.search(r"\[simple_cnn_blur3\] resuming\.\n.*done at step 8: accuracy on test 24px", out, re.S)
  assert (workdir / "simple_cnn_stride" / "metrics.jsonl").read_text() == before
  assert (point / sweep_report.SUMMARY_FILE).exists()


def test_aggregation_reports_missing_points(antialias_smoke, tmp_path):
  workdir, common, _ = antialias_smoke
  partial = tmp_path / "partial"
  shutil.copytree(workdir / "simple_cnn_stride", partial / "simple_cnn_stride")
  (partial / "simple_cnn_stride" / sweep_report.SUMMARY_FILE).unlink()  # Run elsewhere: summarised here.
  rows = sweep_report.aggregate(f"{REPO}/configs/antialias.py:smoke", str(partial), common=common, num_shift_images=16)
  assert [r["name"] for r in rows] == ["simple_cnn_stride"]
  assert "1 of 2 points finished; missing: simple_cnn_blur3." in (partial / "results.md").read_text()


def test_aggregating_with_other_measures_resummarises(antialias_smoke, tmp_path):
  workdir, common, _ = antialias_smoke
  copy = tmp_path / "copy"
  shutil.copytree(workdir, copy)
  again = sweep_report.aggregate(f"{REPO}/configs/antialias.py:smoke", str(copy), common=common,
                                 num_shift_images=16, ensemble_sizes=(24, 32))
  for after in again:
    before = sweep_report.read_summary(workdir / after["name"])
    assert "ensemble" not in before and 0 <= after["acc_ens"] <= 1
    assert after["wall_seconds"] == before["wall_seconds"]  # Kept from the run.
    assert after["acc@32"] == before["eval"]["32"]["accuracy"]
    assert after["jaggedness"] == before["jaggedness"]
  assert "acc_ens" in (copy / "results.md").read_text()


def test_aggregation_adds_the_scale_controls(antialias_smoke, tmp_path):
  workdir, common, _ = antialias_smoke
  copy = tmp_path / "copy"
  shutil.copytree(workdir, copy)
  rows = sweep_report.aggregate(f"{REPO}/configs/antialias.py:smoke", str(copy), common=common,
                                num_shift_images=16, bn_images=128)
  for row in rows:
    for column in ("acc_bn@24", "acc_bn_shape@32", "acc_canvas@24", "acc_canvas_bn@24", "acc_canvas_bn_texture@32"):
      assert 0 <= row[column] <= 1, column
    # The stored images are 32 px: a 32 px canvas is the image itself, as evaluated in training.
    assert row["acc_canvas@32"] == pytest.approx(row["acc@32"], abs=1.5 / 256)
    assert sweep_report.read_summary(copy / row["name"])["options"]["bn_images"] == 128
  markdown = (copy / "results.md").read_text()
  assert " acc_bn@24 |" in markdown and "acc_canvas@S (acc_canvas_bn@S)" in markdown
  # Three stride-2 convs: every test size (16, 24, 32) is a multiple of 8.
  assert "total subsampling factor (models): the test sizes" in markdown
  assert "8 (simple_cnn): none." in markdown
  assert sweep_report.grid_note([], []) == ""
  from configs import default  # pylint: disable=import-outside-toplevel
  note = sweep_report.grid_note([default.get_config()], [24, 32, 40, 48])
  assert note.endswith("16 (simple_cnn): 24, 40.")


def _summarised_sweep(tmp_path, points, comparisons=None):
  """A sweep of `points` over the smoke config in `tmp_path/sweep`, each point summarised
  as if it had run (`acc@32` is its `"acc"`): the config flag for `aggregate`. With
  `comparisons`, the config file has a `get_comparisons`."""
  (tmp_path / "cfg").mkdir(parents=True)
  (tmp_path / "cfg" / "fake.py").write_text(
      "from configs import default\n\n"
      "def get_config(arg):\n  return default.get_config('smoke')\n\n"
      f"def get_sweep(arg):\n  return {[{k: v for k, v in p.items() if k != 'acc'} for p in points]!r}\n"
      + (f"\ndef get_comparisons(arg):\n  return {comparisons!r}\n" if comparisons else ""))
  for point in points:
    overrides = {k: v for k, v in point.items() if k != "acc"}
    name = sweep.point_name(overrides)
    (tmp_path / "sweep" / name).mkdir(parents=True)
    summary = {
        "name": name, "options": {"num_shift_images": 64, "max_shift": 4, "ensemble_sizes": []},
        "overrides": {k: v for k, v in overrides.items() if k != "name"}, "step": 8,
        "eval": {"32": {"accuracy": point["acc"]}}, "best_size": 32, "images_seen": 512,
        "train_gflops": 1.5, "wall_seconds": 10.0, "jaggedness": 0.5, "consistency": 0.75}
    (tmp_path / "sweep" / name / sweep_report.SUMMARY_FILE).write_text(json.dumps(summary))
  return str(tmp_path / "cfg" / "fake.py")


def test_seed_groups_follow_the_seed_override_not_the_names(tmp_path):
  points = [
      # Differ only in seed: averaged, whatever the names.
      {"name": "baseline", "seed": 1, "model.downsample": "blur", "acc": 0.25},
      {"name": "repeat", "seed": 2, "model.downsample": "blur", "acc": 0.75},
      # Named like seeds but without a seed override: not averaged.
      {"name": "max_seed1", "model.downsample": "max", "acc": 0.5},
      {"name": "max_seed2", "model.downsample": "stride", "acc": 0.5},
      # Seeds that also differ in another override: two groups, not one.
      {"name": "blur_seed1", "seed": 1, "model.downsample": "blur", "model.blur_size": 3, "acc": 0.5},
      {"name": "blur_seed2", "seed": 2, "model.downsample": "blur", "model.blur_size": 5, "acc": 0.5},
  ]
  workdir = tmp_path / "sweep"
  rows = sweep_report.aggregate(_summarised_sweep(tmp_path, points), str(workdir))
  assert [r["name"] for r in rows] == [p["name"] for p in points]
  with (workdir / "results_mean.csv").open() as f:
    means = list(csv.DictReader(f))
  assert [(m["name"], m["seeds"]) for m in means] == [("baseline", "1 2"), ("blur", "1"), ("blur", "2")]
  assert means[0]["acc@32"] == "0.500 ± 0.354" and means[1]["acc@32"] == "0.500 ± 0.000"
  assert means[0]["images_seen"] == "512"
  assert [m["model.blur_size"] for m in means] == ["-", "3", "5"]
  assert "| baseline | 1 2 | blur | - | 0.500 ± 0.354 |" in (workdir / "results.md").read_text()


def test_intervals_and_comparisons_equal_scipys(tmp_path):
  from scipy import stats  # pylint: disable=import-outside-toplevel

  blur, strided = [0.91, 0.88, 0.93, 0.90, 0.86], [0.80, 0.85, 0.78, 0.83, 0.79]
  points = [{"name": f"{arm}_seed{i}", "seed": i, "model.downsample": arm, "acc": acc}
            for arm, accs in (("blur", blur), ("stride", strided)) for i, acc in enumerate(accs)]
  workdir = tmp_path / "sweep"
  sweep_report.aggregate(_summarised_sweep(tmp_path, points, [("blur", "stride")]), str(workdir))
  with (workdir / "results_intervals.csv").open() as f:
    intervals = {(r["name"], r["metric"]): r for r in csv.DictReader(f)}
  low, high = stats.t.interval(0.95, 4, loc=np.mean(blur), scale=stats.sem(blur))
  row = intervals[("blur", "acc@32")]
  assert row["n"] == "5" and float(row["mean"]) == pytest.approx(np.mean(blur), abs=5e-4)
  assert (float(row["low"]), float(row["high"])) == (pytest.approx(low, abs=5e-4), pytest.approx(high, abs=5e-4))
  with (workdir / "comparisons.csv").open() as f:
    rows = {r["metric"]: r for r in csv.DictReader(f)}
  test = stats.ttest_ind(blur, strided, equal_var=False)
  ci = test.confidence_interval(0.95)
  row = rows["acc@32"]
  assert (row["arm"], row["baseline"], row["n_arm"], row["n_baseline"]) == ("blur", "stride", "5", "5")
  assert float(row["difference"]) == pytest.approx(np.mean(blur) - np.mean(strided), abs=5e-4)
  assert (float(row["low"]), float(row["high"])) == (pytest.approx(ci.low, abs=5e-4), pytest.approx(ci.high, abs=5e-4))
  assert row["p"] == f"{test.pvalue:.3g}" and row["verdict"] == "arm higher"
  markdown = (workdir / "results.md").read_text()
  assert "95% Welch interval" in markdown and "| acc@32 | blur | stride |" in markdown
  # A comparison naming no seed group is an error that lists the groups.
  with pytest.raises(ValueError, match=r"names no seed group \['blurr'\].*\['blur', 'stride'\]"):
    sweep_report.aggregate(_summarised_sweep(tmp_path / "b", points), str(tmp_path / "b" / "sweep"),
                           comparisons=[("blurr", "stride")])
  # A pair whose group the sweep plans but has not finished waits (a sweep in progress).
  planned = points + [{"name": f"max_seed{i}", "seed": i, "model.downsample": "max", "acc": 0.5}
                      for i in range(2)]
  flag = _summarised_sweep(tmp_path / "c", planned, [("blur", "stride"), ("max", "stride")])
  for i in range(2):
    (tmp_path / "c" / "sweep" / f"max_seed{i}" / sweep_report.SUMMARY_FILE).unlink()
  sweep_report.aggregate(flag, str(tmp_path / "c" / "sweep"))
  with (tmp_path / "c" / "sweep" / "comparisons.csv").open() as f:
    assert {(r["arm"], r["baseline"]) for r in csv.DictReader(f)} == {("blur", "stride")}
  assert "waiting for unfinished seed groups: max - stride." in (tmp_path / "c" / "sweep" / "results.md").read_text()


def test_seed_group_names_drop_the_seed_part():
  def name(point):
    return sweep_report.group_name({"name": sweep.point_name(point), "overrides": point})
  assert name({"name": "a_seed3", "seed": 3}) == "a"
  assert name({"model.downsample": "blur", "seed": 3}) == "downsample=blur"
  assert name({"seed": 3, "model.downsample": "blur"}) == "downsample=blur"
  assert name({"x": 1, "seed": 3, "y": 2}) == "x=1_y=2"
  assert name({"name": "other", "seed": 3}) == "other"
  assert name({"seed": 3}) == "seed=3"


def test_printed_commands_run(data_dir, tmp_path):
  lines = sweep.commands("configs/head.py:smoke", str(tmp_path), {"data.data_dir": data_dir, "progress_bar": False})
  assert len(lines) == 2 and all(l.startswith("python -m progressive.main --config=configs/head.py:smoke") for l in lines)
  assert "--config.model.head=flatten" in lines[1] and "'--config.eval_sizes=(32,)'" in lines[1]
  args = shlex.split(lines[1])
  result = subprocess.run([sys.executable, *args[1:]], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  rows = read_rows(tmp_path / "flatten" / "metrics.jsonl")
  assert {r["size"] for r in rows if r["event"] == "eval"} == {32}


@pytest.mark.parametrize("name", ["size_sweep", "stability", "head", "fixres"])
def test_experiment_smoke_sweeps_train(name, data_dir, tmp_path):
  common = {"data.data_dir": data_dir, "progress_bar": False}
  rows = sweep.run_sweep(f"{REPO}/configs/{name}.py:smoke", str(tmp_path), common=common, num_shift_images=8)
  _, points = sweep.expand(f"{REPO}/configs/{name}.py:smoke", common)
  assert [r["name"] for r in rows] == [p[0] for p in points]
  if name == "stability":
    stats = read_rows(tmp_path / "no_bn_constant" / "activation_stats.jsonl")
    assert {r["step"] for r in stats} == {2, 4, 6, 8}
    convs = [r for r in stats if r["step"] == 8 and r["layer"].endswith("/conv")]
    row = next(r for r in rows if r["name"] == "no_bn_constant")
    assert row["act_near_zero"] == pytest.approx(sum(r["near_zero"] for r in convs) / len(convs))
    assert row["act_std"] == pytest.approx(sum(r["std"] for r in convs) / len(convs))
  if name == "fixres":
    for row in rows:
      accuracies = {int(k.split("@")[1]): v for k, v in row.items() if k.startswith("acc@")}
      assert set(accuracies) == {16, 24, 32, 40}
      assert accuracies[row["best_size"]] == max(accuracies.values())


def test_progressive_vs_fixed_smoke_reports_budget_ensemble_and_seed_means(data_dir, tmp_path):
  config_flag = f"{REPO}/configs/progressive_vs_fixed.py:smoke"
  common = {"data.data_dir": data_dir, "progress_bar": False}
  rows = {r["name"]: r for r in sweep.run_sweep(config_flag, str(tmp_path), common=common,
                                                num_shift_images=8)}
  assert list(rows) == ["progressive_run_seed0", "progressive_run_seed1", "fixed32_seed0", "fixed32_seed1"]
  for name, row in rows.items():
    # The ensemble over 16, 24 and 32 px reads the whole test split, as evaluation does:
    # its gain is measured against the eval rows' accuracies at those sizes.
    best = max(row[f"acc@{s}"] for s in (16, 24, 32))
    assert row["ens_gain"] == pytest.approx(row["acc_ens"] - best, abs=2e-3), name
    assert 0 <= row["acc_ens_shape"] <= 1 and 0 <= row["acc_ens_texture"] <= 1
    flops = {r["size"]: r["flops"] for r in read_rows(tmp_path / name / "metrics.jsonl")
             if r["event"] == "compile" and r["kind"] == "train"}
    steps = {16: 8, 24: 8, 32: 8} if name.startswith("progressive") else {32: 14}
    assert row["images_seen"] == 64 * sum(steps.values())
    assert row["train_gflops"] == pytest.approx(sum(steps[s] * flops[s] for s in steps) / 1e9)
  # XLA counts more work for larger inputs, and two seeds of one point cost the same.
  assert flops[32] > 0 and rows["progressive_run_seed0"]["train_gflops"] == rows["progressive_run_seed1"]["train_gflops"]
  assert rows["progressive_run_seed0"]["acc@32"] != rows["progressive_run_seed1"]["acc@32"]
  with (tmp_path / "results_mean.csv").open() as f:
    means = {r["name"]: r for r in csv.DictReader(f)}
  assert list(means) == ["progressive_run", "fixed32"] and means["fixed32"]["seeds"] == "0 1"
  mean, std = (float(x) for x in means["progressive_run"]["acc@32"].split(" ± "))
  values = [rows[f"progressive_run_seed{i}"]["acc@32"] for i in (0, 1)]
  assert mean == pytest.approx(sum(values) / 2, abs=1e-3)
  assert std == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5, abs=1e-3)
  assert means["fixed32"]["images_seen"] == "896"  # Equal over seeds: shown once.
  markdown = (tmp_path / "results.md").read_text()
  assert "Mean ± standard deviation over seeds:" in markdown and "softmax averaged over sizes 16, 24, 32" in markdown


def test_train_test_size_smoke_reports_finetune_size_and_seed_ensembles(data_dir, tmp_path):
  config_flag = f"{REPO}/configs/train_test_size.py:smoke"
  common = {"data.data_dir": data_dir, "progress_bar": False}
  rows = {r["name"]: r for r in sweep.run_sweep(config_flag, str(tmp_path), common=common,
                                                num_shift_images=8, bn_images=128)}
  assert list(rows) == ["flip16_seed0", "flip16_seed1", "rrc16_seed0", "rrc16_seed1"]
  # Tuning is by each arm's own training size, and its runs are summarised only for it.
  choice = sweep.read_choice(tmp_path)
  assert choice["metric"] == "acc@{size}" and len(choice["grid"]) == 4
  tuning = sweep_report.read_summary(tmp_path / "tuning" / "flip16__lr_max=0.2")
  assert tuning["options"] == {"measures": "tuning"} and "jaggedness" not in tuning
  for name, row in rows.items():
    summary = sweep_report.read_summary(tmp_path / name)
    assert summary["ensemble_sizes"] == [16, 24] and summary["finetune_steps"] == 4  # 0.25 epoch.
    for size in (16, 24):
      assert row[f"ft_gain@{size}"] == pytest.approx(row[f"acc_ft@{size}"] - row[f"acc_bn@{size}"])
    assert "acc_ft@32" not in row  # Fine-tuned only at the sizes the config names.
    best = max(summary["eval_bn"][str(s)]["accuracy"] for s in (16, 24))
    assert row["ens_gain_bn"] == pytest.approx(row["acc_ens_bn"] - best)
    assert row["best_size_bn"] == max((16, 24, 32), key=lambda s: summary["eval_bn"][str(s)]["accuracy"])
  # The recalibrated logits the controls and the ensemble share are `bn_size_matrix`'s own.
  run = run_lib.load_run(tmp_path / "flip16_seed0")
  test = run_lib.load_examples(run.config.data, run.config.data.eval_split, None)
  calibration = run_lib.load_examples(run.config.data, run.config.data.train_split, 128)["image"]
  matrix = controls.bn_size_matrix({"run": run}, test["image"], test["label"], (16, 24, 32), calibration)
  summary = sweep_report.read_summary(tmp_path / "flip16_seed0")
  assert [summary["eval_bn"][str(s)]["accuracy"] for s in (16, 24, 32)] == pytest.approx(
      matrix["accuracy"]["all"][0])
  # The seed ensemble: both networks of the group at their training size, by mean softmax.
  logits = [np.load(tmp_path / f"flip16_seed{i}" / sweep_report.LOGITS_FILE) for i in (0, 1)]
  probs = sum(np.exp(x["logits"]) / np.exp(x["logits"]).sum(-1, keepdims=True) for x in logits)
  expected = np.mean(np.argmax(probs, -1) == logits[0]["labels"])
  assert rows["flip16_seed0"]["acc_seed_ens"] == rows["flip16_seed1"]["acc_seed_ens"] == pytest.approx(expected)
  assert rows["flip16_seed1"]["ens_vs_seeds"] == pytest.approx(rows["flip16_seed1"]["acc_ens_bn"] - expected)
  with (tmp_path / "comparisons.csv").open() as f:
    metrics = {r["metric"] for r in csv.DictReader(f)}
  assert {"acc_ft@24", "acc_ens_bn", "ft_gain@24"} <= metrics
  assert not metrics & set(sweep_report.WINDOWED)  # Overlapping windows: no Welch test.
  markdown = (tmp_path / "results.md").read_text()
  assert "16, 24 (trained at 16)" in markdown and "FixRes's fine-tune" in markdown
  assert "acc@{size} (the accuracy at each arm's own training size)" in markdown


def test_sizes_for_a_point_and_the_tuning_metric_of_an_arm(smoke_config):
  assert sweep_report.for_point((16, 32), smoke_config) == (16, 32)
  assert sweep_report.for_point({32: (24, 32, 40), 16: (16,)}, smoke_config) == (24, 32, 40)
  assert sweep_report.for_point({24: (16,)}, smoke_config) == ()
  assert sweep_report.finetune_for_point({"sizes": {24: (24,)}, "epochs": 1, "lr": 0.1}, smoke_config) is None
  assert sweep_report.finetune_for_point({"sizes": (40,), "epochs": 1, "lr": 0.1}, smoke_config) == {
      "sizes": [40], "epochs": 1.0, "lr": 0.1}
  assert sweep.arm_metric("acc@{size}", smoke_config) == "acc@32" and sweep.arm_metric("acc@16", smoke_config) == "acc@16"


def test_specs_a_variant_turns_off_or_gets_wrong(tmp_path):
  (tmp_path / "cfg.py").write_text(
      "from configs import default\n\n"
      "def get_config(arg):\n  return default.get_config('smoke')\n\n"
      "def get_sweep(arg):\n  return [{'name': 'a'}]\n\n"
      "def get_tuning(arg):\n  return None if arg == 'off' else {'field': 'opt.lr_max', 'grid': (0.1,), 'metric': 'acc@32'}\n\n"
      "def get_finetune(arg):\n  return None if arg == 'off' else {'sizes': (32,), 'epochs': 0, 'lr': 0.1}\n")
  assert sweep.tuning_spec(f"{tmp_path}/cfg.py:off") is None and sweep.config_finetune(f"{tmp_path}/cfg.py:off") is None
  assert sweep.tuning_spec(f"{tmp_path}/cfg.py")["grid"] == (0.1,)
  with pytest.raises(ValueError, match="epochs and lr must be positive"):
    sweep.config_finetune(f"{tmp_path}/cfg.py")


def test_findings_are_built_from_the_committed_results():
  make_findings = sweep.load_module(str(REPO / "experiments/make_findings.py"))
  template = (REPO / "experiments/FINDINGS.template.md").read_text()
  for name in make_findings.sweep_names(template):
    for file in make_findings.FILES:
      assert (REPO / "experiments/results" / name / file).exists(), (name, file)
  # FINDINGS.md is exactly what the script makes of the results: no number typed by hand.
  assert make_findings.render(template) == (REPO / "experiments/FINDINGS.md").read_text()


def test_tuning_chooses_on_the_validation_slice_not_the_test_split(tmp_path, monkeypatch):
  """A constructed case where validation and test disagree: validation prefers 0.1, the
  test split would prefer 0.4. Nothing is trained: training and summaries are faked."""
  (tmp_path / "cfg").mkdir()
  (tmp_path / "cfg" / "tuned.py").write_text(
      "from configs import default\nfrom progressive import sweep\n\n"
      "def get_config(arg):\n  return default.get_config('smoke')\n\n"
      "def get_sweep(arg):\n  return sweep.with_seeds([{'name': 'stride', 'model.downsample': 'stride'},"
      " {'name': 'blur', 'model.downsample': 'blur'}], [1, 2])\n\n"
      "def get_tuning(arg):\n  return {'field': 'opt.lr_max', 'grid': [0.1, 0.4], 'metric': 'acc@32'}\n")
  accuracy = {"train[90%:]": {0.1: 0.9, 0.4: 0.5}, "test": {0.1: 0.6, 0.4: 0.8}}
  runs, done = [], set()

  def fake_train(config, workdir):
    runs.append((pathlib.Path(workdir).name, config.opt.lr_max, config.data.train_split,
                 config.data.eval_split, config.seed))
    done.add(str(workdir))

  def fake_summary(workdir, name, overrides, config, **options):
    summary = {
        "name": name, "options": sweep_report._options(64, 4, (), 0),
        "overrides": {k: v for k, v in overrides.items() if k != "name"}, "step": 24,
        "eval": {"32": {"accuracy": accuracy[config.data.eval_split][config.opt.lr_max]}},
        "best_size": 32, "images_seen": 1, "wall_seconds": 1.0}
    (pathlib.Path(workdir) / sweep_report.SUMMARY_FILE).write_text(json.dumps(summary))

  monkeypatch.setattr(sweep.train, "train_and_evaluate", fake_train)
  monkeypatch.setattr(sweep, "summarize_point", fake_summary)
  monkeypatch.setattr(sweep, "finished", lambda point_dir, config: str(point_dir) in done)
  for name in ("blur__lr_max=0.1", "blur__lr_max=0.4", "stride__lr_max=0.1", "stride__lr_max=0.4",
               "stride_seed1", "stride_seed2", "blur_seed1", "blur_seed2"):
    (tmp_path / "sweep" / ("tuning" if "__" in name else "") / name).mkdir(parents=True)
  workdir = tmp_path / "sweep"
  sweep.run_sweep(str(tmp_path / "cfg" / "tuned.py"), str(workdir), num_shift_images=64, max_shift=4)

  tuning = [r for r in runs if "__" in r[0]]
  assert sorted(r[0] for r in tuning) == ["blur__lr_max=0.1", "blur__lr_max=0.4", "stride__lr_max=0.1", "stride__lr_max=0.4"]
  assert {(r[2], r[3]) for r in tuning} == {("train[:90%]", "train[90%:]")}
  final = [r for r in runs if "__" not in r[0]]
  assert sorted(r[0] for r in final) == ["blur_seed1", "blur_seed2", "stride_seed1", "stride_seed2"]
  assert {(r[1], r[2], r[3]) for r in final} == {(0.1, "train", "test")}  # Chosen on validation.
  choice = sweep.read_choice(workdir)
  assert set(choice["values"].values()) == {0.1} and len(choice["grid"]) == 4
  with (workdir / "results.csv").open() as f:
    table = list(csv.DictReader(f))
  assert {r["opt.lr_max"] for r in table} == {"0.100"} and {r["acc@32"] for r in table} == {"0.600"}
  markdown = (workdir / "results.md").read_text()
  assert "Tuning: opt.lr_max chosen per arm by acc@32 on the validation slice" in markdown
  assert (workdir / "tuning.csv").exists()


def test_tuning_refuses_to_choose_on_the_test_split(tmp_path):
  (tmp_path / "cfg").mkdir()
  (tmp_path / "cfg" / "bad.py").write_text(
      "from configs import default\n\ndef get_config(arg):\n  return default.get_config('smoke')\n\n"
      "def get_sweep(arg):\n  return [{'seed': 1}]\n\n"
      "def get_tuning(arg):\n  return {'field': 'opt.lr_max', 'grid': [0.1], 'metric': 'acc@32',"
      " 'eval_split': 'test'}\n")
  with pytest.raises(ValueError, match="must be a slice of the training split"):
    sweep.tuning_spec(str(tmp_path / "cfg" / "bad.py"))


def test_findings_placeholders_render_intervals_comparisons_and_the_grid(tmp_path, monkeypatch):
  make_findings = sweep.load_module(str(REPO / "experiments/make_findings.py"))
  monkeypatch.setattr(make_findings, "RESULTS", tmp_path)
  (tmp_path / "s").mkdir()
  (tmp_path / "s" / "results_intervals.csv").write_text(
      "name,metric,mean,std,n,low,high\na,acc@32,0.5,0.1,5,0.4,0.6\nb,acc@32,0.25,0.1,5,0.15,0.35\n"
      "b,acc@16,0.125,,1,,\n")
  (tmp_path / "s" / "comparisons.csv").write_text(
      "metric,arm,baseline,difference,low,high,p,n_arm,n_baseline,verdict\n"
      "acc@16,a,b,0.1,-0.2,0.4,0.5,5,5,not resolved\nacc@32,a,b,0.25,0.1,0.4,0.01,5,5,arm higher\n")
  (tmp_path / "s" / "tuning.csv").write_text("arm,value,acc@32\na,0.2,0.5\na,0.4,0.75\nb,0.2,0.25\n")
  (tmp_path / "s" / "results_mean.csv").write_text("name,seeds,images_seen,acc@32\na,0 1,512,0.5 ± 0.1\n")
  assert make_findings.render("{{means:s:images_seen,acc@32}}").splitlines()[2] == "| a | 512 | 0.5 ± 0.1 |"
  with pytest.raises(ValueError, match="no columns"):
    make_findings.render("{{means:s:nothing}}")
  text = make_findings.render("{{intervals:s:acc@32,acc@16}}\n{{comparisons:s:acc@32}}\n{{tuning:s}}")
  lines = text.splitlines()
  assert lines[2] == "| a | 0.500 [0.400, 0.600] (n=5) | - |"
  assert lines[3] == "| b | 0.250 [0.150, 0.350] (n=5) | 0.125 (n=1) |"
  assert lines[6] == "| acc@32 | a - b | +0.250 [+0.100, +0.400] | 0.01 | 5 / 5 | arm higher |"
  assert len(lines) == 7 + 4 and lines[-2:] == ["| a | 0.500 | 0.750 |", "| b | 0.250 | - |"]
  assert make_findings.sweep_names("{{intervals:s:acc@32}} {{figure:t}}") == ["s", "t"]
  with pytest.raises(ValueError, match="needs its metrics"):
    make_findings.render("{{comparisons:s}}")


def test_columns_are_unique_when_the_loop_and_the_controls_both_recalibrate():
  """The training loop's eval rows carry accuracy_bn (config.eval_bn_images) and the
  sweep's controls fill acc_bn@S too: one column each, the control's value in it."""
  summary = {"name": "p", "overrides": {"seed": 0}, "eval": {
      "16": {"accuracy": 0.5, "accuracy_bn": 0.25, "accuracy_bn_shape": 0.125},
      "32": {"accuracy": 0.75}},
             "eval_bn": {"16": {"accuracy": 0.375, "accuracy_shape": 0.5}},
             "eval_canvas_bn": {"16": {"accuracy": 0.625}}}
  row = sweep_report.point_row(summary)
  columns = sweep_report._columns([summary], [row])  # pylint: disable=protected-access
  assert len(columns) == len(set(columns))
  assert {"acc_bn@16", "acc_bn_shape@16", "acc_canvas_bn@16"} <= set(columns)
  assert "acc_canvas_bn_bn@16" not in columns
  assert row["acc_bn@16"] == 0.375 and row["acc_canvas_bn@16"] == 0.625


def test_a_point_finished_under_another_config_stops_the_sweep(antialias_smoke, tmp_path):
  # As when a tuning grid is extended and the choice moves: the finished point's
  # results would be reported as the new learning rate's, so the sweep refuses at once.
  workdir, common, _ = antialias_smoke
  copy = tmp_path / "copy"
  shutil.copytree(workdir, copy)
  config_path = copy / "simple_cnn_blur3" / "config.json"
  stored = json.loads(config_path.read_text())
  stored["opt"]["lr_max"] = 0.123
  config_path.write_text(json.dumps(stored))
  before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
  with pytest.raises(cli.Error, match=r"^1 finished point\(s\) in .* under another config .*: "
                     r"simple_cnn_blur3 \(opt\.lr_max: 0\.123 -> 0\.2\);.*Move those folders aside"):
    sweep.run_sweep(f"{REPO}/configs/antialias.py:smoke", str(copy), common=common, num_shift_images=16)
  assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before  # Nothing ran.
  # Run-control fields (where the data is, the progress bar) may differ.
  stored["opt"]["lr_max"], stored["data"]["data_dir"] = 0.2, "/elsewhere"
  config_path.write_text(json.dumps(stored))
  assert not sweep.trained_otherwise(copy / "simple_cnn_blur3", sweep.expand(
      f"{REPO}/configs/antialias.py:smoke", common)[1][1][2])


def test_table_cells_keep_small_values_exact():
  # A learning rate of 0.0125 must not read as 0.013 in results.md or tuning.csv.
  assert sweep_report._cell(0.0125) == "0.0125" and sweep_report._cell(0.00143) == "0.00143"
  assert sweep_report._cell(0.52349) == "0.523" and sweep_report._cell(0.0) == "0.000"
  assert sweep_report._cell(1234.7) == "1235" and sweep_report._cell(-0.05) == "-0.05"
