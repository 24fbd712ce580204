"""Every experiment config's smoke variant run end to end as a sweep (what each one
reports); the sweep's printed commands are run in test_console.py. Apart from
test_sweep.py so that the two heavy files run on different workers."""

import csv
import itertools
import pathlib

import numpy as np
import pytest

from progressive import models
from progressive.analysis import controls
from progressive.analysis import run as run_lib
from progressive.data import photos, pipeline, scale_shapes
from progressive.models import flops
from progressive.sweeps import measure, spec, tables, tuning
from progressive.sweeps import run as runner
from progressive.training.metrics import read_rows

REPO = pathlib.Path(__file__).parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["size_sweep", "stability", "head", "fixres",
                                  pytest.param("convergence", marks=pytest.mark.slow)])
def test_experiment_smoke_sweeps_train(name, data_dir, tmp_path, compilation_cache):
  common = {"data.data_dir": data_dir, "progress_bar": False,
            "compilation_cache_dir": compilation_cache}
  sweep = spec.load(f"{REPO}/configs/{name}.py:smoke", common)
  rows = runner.run_sweep(sweep, str(tmp_path), num_shift_images=8)
  points = sweep.expand()
  assert [r["name"] for r in rows] == [p[0] for p in points]
  if name == "stability":
    stats = read_rows(tmp_path / "no_bn_constant" / "activation_stats.jsonl")
    assert {r["step"] for r in stats} == {2, 4, 6, 8}
    relus = [r for r in stats if r["layer"].endswith("/relu")]
    convs = [r for r in stats if r["layer"].endswith("/conv")]
    assert {r["step"] for r in relus} == {r["step"] for r in convs} == {2, 4, 6, 8}
    row = next(r for r in rows if r["name"] == "no_bn_constant")
    # After every ReLU at every recorded step (the dead-unit measure); fastai's figure, the
    # convolutions' outputs before batch norm and ReLU, the same way; std at the last step.
    assert row["act_near_zero"] == pytest.approx(sum(r["near_zero"] for r in relus) / len(relus))
    assert row["act_near_zero_preact"] == pytest.approx(
        sum(r["near_zero"] for r in convs) / len(convs))
    last = [r for r in convs if r["step"] == 8]
    assert row["act_std"] == pytest.approx(sum(r["std"] for r in last) / len(last))
    # Claim 6's figure, drawn by the aggregation and shown in results.md.
    assert (tmp_path / tables.ACTIVATIONS_FIGURE).stat().st_size > 0
    assert f"({tables.ACTIVATIONS_FIGURE})" in (tmp_path / "results.md").read_text()
  if name == "convergence":  # A budget ladder, chosen on the validation slice.
    by = {r["name"]: r for r in rows}
    assert by["e2_seed0"]["images_seen"] == 2 * by["e1_seed0"]["images_seen"]
    summary = measure.read_summary(tmp_path / "e1_seed0")
    assert summary["eval_images"] == 102  # train[90%:] of the 1,024 training images.
    with (tmp_path / "comparisons.csv").open() as f:
      assert {(r["arm"], r["baseline"]) for r in csv.DictReader(f)} == {("e2", "e1")}
  if name == "fixres":
    for row in rows:
      accuracies = {int(k.split("@")[1]): v for k, v in row.items() if k.startswith("acc@")}
      assert set(accuracies) == {16, 24, 32, 40}
      assert accuracies[row["best_size"]] == max(accuracies.values())


@pytest.mark.slow
def test_progressive_vs_fixed_smoke_reports_budget_ensemble_and_seed_means(data_dir, tmp_path,
                                                                          compilation_cache):
  config_flag = f"{REPO}/configs/progressive_vs_fixed.py:smoke"
  common = {"data.data_dir": data_dir, "progress_bar": False,
            "compilation_cache_dir": compilation_cache}
  sweep = spec.load(config_flag, common)
  configs = {name: config for name, _, config in sweep.expand()}
  rows = {r["name"]: r for r in runner.run_sweep(sweep, str(tmp_path), num_shift_images=8)}
  assert list(rows) == ["progressive_run_seed0", "progressive_run_seed1", "fixed32_seed0", "fixed32_seed1"]
  for name, row in rows.items():
    # The ensemble over 16, 24 and 32 px reads the whole test split, as evaluation does:
    # its gain is measured against the eval rows' accuracies at those sizes.
    best = max(row[f"acc@{s}"] for s in (16, 24, 32))
    assert row["ens_gain"] == pytest.approx(row["acc_ens"] - best, abs=2e-3), name
    assert 0 <= row["acc_ens_shape"] <= 1 and 0 <= row["acc_ens_texture"] <= 1
    xla = {r["size"]: r["flops"] for r in read_rows(tmp_path / name / "metrics.jsonl")
           if r["event"] == "compile" and r["kind"] == "train"}
    steps = {16: 8, 24: 8, 32: 8} if name.startswith("progressive") else {32: 14}
    assert row["images_seen"] == 64 * sum(steps.values())
    # train_gflops is counted from the architecture (each size's FLOPs per training image
    # times the images trained on); train_gflops_xla is XLA's count of the compiled steps.
    config = configs[name]
    model = models.build(config.model, num_classes=pipeline.dataset_info(config.data).num_classes)
    image_flops = {s: flops.train_flops(model, s) for s in steps}
    assert row["train_gflops"] == pytest.approx(
        sum(steps[s] * config.batch_size * image_flops[s] for s in steps) / 1e9)
    assert row["train_gflops_xla"] == pytest.approx(sum(steps[s] * xla[s] for s in steps) / 1e9)
    for count in (image_flops, xla):  # Both count more work for larger inputs.
      sizes = sorted(steps)
      assert 0 < count[sizes[0]] and all(count[a] < count[b] for a, b in itertools.pairwise(sizes))
  # Two seeds of one point cost the same.
  for column in ("train_gflops", "train_gflops_xla"):
    assert rows["progressive_run_seed0"][column] == rows["progressive_run_seed1"][column]
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


@pytest.mark.slow
def test_train_test_size_smoke_reports_finetune_size_and_seed_ensembles(data_dir, tmp_path,
                                                                      compilation_cache):
  config_flag = f"{REPO}/configs/train_test_size.py:smoke"
  common = {"data.data_dir": data_dir, "progress_bar": False,
            "compilation_cache_dir": compilation_cache}
  rows = {r["name"]: r for r in runner.run_sweep(spec.load(config_flag, common), str(tmp_path),
                                                 num_shift_images=8, bn_images=128)}
  assert list(rows) == ["flip16_seed0", "flip16_seed1", "rrc16_seed0", "rrc16_seed1"]
  # Tuning is by each arm's own training size, each grid cell the mean of two tuning seeds,
  # and its runs are summarised only for it.
  choice = tuning.read_choice(tmp_path)
  assert choice["metric"] == "acc@{size}" and len(choice["grid"]) == 4 and choice["seeds"] == [0, 1]
  for cell in choice["grid"]:
    seeds = [measure.read_summary(tmp_path / "tuning" / f"{cell['arm']}__lr_max={cell['value']}_seed{seed}")
             for seed in (0, 1)]
    # Both smoke arms train at 16 px.
    assert cell["per_seed"] == [s["eval"]["16"]["accuracy"] for s in seeds] and cell["n_seeds"] == 2
    assert cell["acc@{size}"] == pytest.approx(sum(cell["per_seed"]) / 2)
  tuned = measure.read_summary(tmp_path / "tuning" / "flip16__lr_max=0.2_seed1")
  assert tuned["options"] == {"measures": "tuning"} and "jaggedness" not in tuned
  here = measure.device_label(measure.current_device())
  for name, row in rows.items():
    summary = measure.read_summary(tmp_path / name)
    assert summary["ensemble_sizes"] == [16, 24] and summary["finetune_steps"] == 4  # 0.25 epoch.
    assert summary["device"] == row["device"] == here  # The device it trained on, recorded.
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
  summary = measure.read_summary(tmp_path / "flip16_seed0")
  assert [summary["eval_bn"][str(s)]["accuracy"] for s in (16, 24, 32)] == pytest.approx(
      matrix["accuracy"]["all"][0])
  # The seed ensemble: both networks of the group at their training size, by mean softmax.
  logits = [np.load(tmp_path / f"flip16_seed{i}" / measure.LOGITS_FILE) for i in (0, 1)]
  probs = sum(np.exp(x["logits"]) / np.exp(x["logits"]).sum(-1, keepdims=True) for x in logits)
  expected = np.mean(np.argmax(probs, -1) == logits[0]["labels"])
  assert rows["flip16_seed0"]["acc_seed_ens"] == rows["flip16_seed1"]["acc_seed_ens"] == pytest.approx(expected)
  assert rows["flip16_seed1"]["ens_vs_seeds"] == pytest.approx(rows["flip16_seed1"]["acc_ens_bn"] - expected)
  with (tmp_path / "comparisons.csv").open() as f:
    metrics = {r["metric"] for r in csv.DictReader(f)}
  assert {"acc_ft@24", "acc_ens_bn", "ft_gain@24"} <= metrics
  assert not metrics & set(tables.WINDOWED)  # Overlapping windows: no Welch test.
  markdown = (tmp_path / "results.md").read_text()
  assert "16, 24 (trained at 16)" in markdown and "FixRes's fine-tune" in markdown
  assert "acc@{size} (the accuracy at each arm's own training size)" in markdown


@pytest.mark.parametrize("arg", [None, "long", "long_check", "photos", "px64", "px64_long", "px64_long_check",
                                 "px64_photos", "px64_photos_long", "px64_photos_long_check"])
def test_train_test_size_hypotheses_read_sizes_each_point_is_tested_at(arg):
  """Every size a primary hypothesis or a size ensemble reads is one the points are
  evaluated at, on a dataset the sweep can build; `:px64` asks the 32 px sweep's
  questions with every size doubled."""
  import re

  flag = f"{REPO}/configs/train_test_size.py" + (f":{arg}" if arg else "")
  sweep = spec.load(flag)  # Also checks that each hypothesis reads groups of the sweep.
  (point, *_) = sweep.expand()
  eval_sizes = set(point.config.eval_sizes)
  builder = {"scale_shapes": scale_shapes.ScaleShapes, "photos": photos.Photos}[point.config.data.name]
  assert point.config.data.builder_config in {c.name for c in builder.BUILDER_CONFIGS}
  read = {int(s) for h in sweep.hypotheses for s in re.findall(r"@(\d+)\]", str(h.contrast))}
  assert read and read <= eval_sizes
  ensembles = sweep.ensemble_sizes
  assert {s for sizes in ensembles.values() for s in sizes} <= eval_sizes
  if arg and arg.startswith("px64"):
    base_arg = ",".join(part for part in ("photos", "long", "check") if part in arg)
    base = spec.load(f"{REPO}/configs/train_test_size.py" + (f":{base_arg}" if base_arg else ""))
    doubled = re.compile(r"\d+")
    assert [h.name for h in sweep.hypotheses] == [
        doubled.sub(lambda m: str(2 * int(m.group())), h.name) for h in base.hypotheses]
    assert [str(h.contrast) for h in sweep.hypotheses] == [
        doubled.sub(lambda m: str(2 * int(m.group())), str(h.contrast)) for h in base.hypotheses]
    assert point.config.data.builder_config == ("default" if "photos" in arg else "default_fresh")
    assert ensembles == {2 * k: tuple(2 * s for s in v) for k, v in base.ensemble_sizes.items()
                         if 2 * k in ensembles}
