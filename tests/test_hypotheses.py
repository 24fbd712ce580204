"""Primary hypotheses: contrasts over seed groups, Holm's correction and verdicts, on
synthetic per-seed results whose answer is known."""

import csv
import json
import pathlib

import numpy as np
import pytest
from scipy import stats

from progressive import config_files, statistics
from progressive.sweeps import aggregate, hypotheses, measure, spec, tables

REPO = pathlib.Path(__file__).resolve().parent.parent

EFFECT = [0.10, 0.12, 0.09, 0.11, 0.13]  # A true positive effect, seed by seed.
NULL = [0.02, -0.03, 0.01, -0.01, 0.0]  # Noise around zero.
REVERSED = [-0.10, -0.12, -0.09, -0.11, -0.13]


def test_a_contrast_of_one_group_is_the_paired_t_test():
  out = statistics.contrast([EFFECT])
  test = stats.ttest_1samp(EFFECT, 0.0)
  assert out["method"] == "t" and out["df"] == 4 and out["n"] == [5]
  assert out["estimate"] == pytest.approx(np.mean(EFFECT))
  assert out["se"] == pytest.approx(stats.sem(EFFECT)) and out["p"] == pytest.approx(test.pvalue)
  low, high = statistics.interval(out["estimate"], out["se"], out["df"], 0.95)
  ci = test.confidence_interval(0.95)
  assert (low, high) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_a_contrast_of_two_groups_is_welchs():
  arm, baseline = [0.91, 0.88, 0.93, 0.90, 0.86], [0.80, 0.85, 0.78, 0.83, 0.79, 0.81]
  out = statistics.contrast([arm, [-x for x in baseline]])
  test = stats.ttest_ind(arm, baseline, equal_var=False)
  assert out["method"] == "welch" and out["n"] == [5, 6]
  assert out["estimate"] == pytest.approx(np.mean(arm) - np.mean(baseline))
  assert out["p"] == pytest.approx(test.pvalue, rel=1e-10)
  ci = test.confidence_interval(0.95)
  assert statistics.interval(out["estimate"], out["se"], out["df"], 0.95) == (
      pytest.approx(ci.low), pytest.approx(ci.high))


def test_zero_variance_is_exact_and_too_few_seeds_untested():
  out = statistics.contrast([[16.0] * 5, [-24.0] * 5])  # best_size_bn: 16 against 24, every seed.
  assert out["method"] == "exact" and out["estimate"] == -8 and out["p"] == 0 and out["se"] == 0
  assert statistics.interval(out["estimate"], out["se"], out["df"], 0.99) == (-8, -8)
  assert statistics.contrast([[3.0] * 4, [-3.0] * 4])["p"] == 1  # Exactly nothing.
  single = statistics.contrast([EFFECT, [0.5]])
  assert single["p"] is None and single["method"] is None and single["estimate"] is not None


def test_holm_matches_a_hand_computation():
  # Sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> 0.06.
  assert statistics.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
  assert statistics.holm([0.4, 0.3]) == pytest.approx([0.6, 0.6])
  assert statistics.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # 0.8 x 2 capped at 1; then max(1, 0.9).
  adjusted = statistics.holm([0.01, None])  # Untestable: counted in m, left None.
  assert adjusted[0] == pytest.approx(0.02) and adjusted[1] is None


def _judged(*parts_and_signs):
  rows = [{**statistics.contrast(parts), "predicted": sign} for parts, sign in parts_and_signs]
  return statistics.judge(rows)


def test_verdicts_follow_the_corrected_result_and_the_predicted_sign():
  effect, null, reversed_, exact = _judged(
      ([EFFECT], "> 0"), ([NULL], "> 0"), ([REVERSED], "> 0"), ([[16.0] * 5, [-24.0] * 5], "< 0"))
  assert effect["verdict"] == "supported" and effect["low"] > 0
  assert null["verdict"] == "not resolved" and null["low"] < 0 < null["high"]
  assert reversed_["verdict"] == "contradicted" and reversed_["high"] < 0
  assert exact["verdict"] == "supported" and (exact["low"], exact["high"]) == (-8, -8)
  # Ranked by p (the exact one first, at p 0): the i-th of 4 at 1 - 0.05 / (4 - i + 1).
  assert exact["confidence"] == pytest.approx(1 - 0.05 / 4)
  assert null["confidence"] == pytest.approx(0.95)  # The largest p, last.
  raw = statistics.contrast([EFFECT])
  wider = statistics.interval(raw["estimate"], raw["se"], raw["df"], effect["confidence"])
  assert (effect["low"], effect["high"]) == wider and effect["confidence"] > 0.95
  assert effect["p_holm"] == pytest.approx(min(1, 3 * raw["p"]))  # Second of four.


def test_holm_can_leave_a_raw_effect_unresolved():
  """Alone, a modest effect is supported; among many nulls, Holm's correction leaves it
  unresolved (its corrected interval spans 0)."""
  modest = [0.05, 0.02, 0.04, 0.01, 0.03]
  alone = _judged(([modest], "> 0"))[0]
  assert statistics.contrast([modest])["p"] < 0.05 and alone["verdict"] == "supported"
  crowd = _judged(([modest], "> 0"), *[([NULL], "> 0")] * 9)
  assert crowd[0]["verdict"] == "not resolved" and crowd[0]["low"] < 0 < crowd[0]["high"]
  assert crowd[0]["p_holm"] > 0.05


def test_a_contrast_is_written_as_it_reads_and_evaluated_per_seed():
  a, b = spec.group("rrc32"), spec.group("flip32")
  interaction = (a["acc@40"] - a["acc@32"]) - (b["acc@40"] - b["acc@32"])
  assert str(interaction) == "rrc32[acc@40] - rrc32[acc@32] - (flip32[acc@40] - flip32[acc@32])"
  assert interaction.groups() == ["rrc32", "flip32"]
  row = {"acc@40": 0.75, "acc@32": 0.5}
  assert interaction.part_value("rrc32", row) == 0.25 and interaction.part_value("flip32", row) == -0.25
  retention = b["acc_t@48"] / b["acc_t@32"] - b["acc_s@48"] / b["acc_s@32"]
  assert str(retention) == "flip32[acc_t@48] / flip32[acc_t@32] - flip32[acc_s@48] / flip32[acc_s@32]"
  assert retention.part_value("flip32", {"acc_t@48": 0.5, "acc_t@32": 1.0, "acc_s@48": 0.25,
                                         "acc_s@32": 0.5}) == 0
  assert retention.part_value("flip32", {"acc_t@48": 0.5}) is None  # A measurement missing.
  assert str(1 - a["x"] * 2 / (a["y"] + 1)) == "1 - rrc32[x] * 2 / (rrc32[y] + 1)"
  with pytest.raises(ValueError, match="combines the seed groups"):
    (a["x"] / b["x"]).parts()


def _sweep_file(tmp_path, hypotheses_source: str) -> str:
  (tmp_path / "cfg").mkdir(parents=True, exist_ok=True)
  path = tmp_path / "cfg" / "h.py"
  path.write_text(
      "from configs import default\nfrom progressive.sweeps import spec\n\n"
      "def get_config(arg):\n  return default.get_config('smoke')\n\n"
      "def get_sweep(arg):\n  return spec.with_seeds([{'name': 'a', 'model.downsample': 'blur'},"
      " {'name': 'b'}], range(5))\n\n"
      f"def get_hypotheses(arg):\n  a, b = spec.group('a'), spec.group('b')\n  return {hypotheses_source}\n")
  return str(path)


def test_hypotheses_are_checked_when_the_sweep_loads(tmp_path):
  ok = "[dict(claim=7, name='h', contrast=a['acc@40'] - a['acc@32'], predicted='>')]"
  sweep = spec.load(_sweep_file(tmp_path, ok))
  (h,) = sweep.hypotheses
  assert (h.claim, h.name, h.predicted, str(h.contrast)) == (7, "h", "> 0", "a[acc@40] - a[acc@32]")
  assert sweep.headline == ("acc@40", "acc@32")  # Without get_headline: what they read.
  for source, message in [
      ("[dict(claim=1, name=f'h{i}', contrast=a['x'], predicted='> 0') for i in range(4)]",
       "more than three"),
      ("[dict(claim=1, name='h', contrast=spec.group('c')['x'], predicted='> 0')]",
       r"reads seed groups \['c'\]"),
      ("[dict(claim=1, name='h', contrast=a['x'] * b['x'], predicted='> 0')]", "combines"),
      ("[dict(claim=1, name='h', contrast=a['x'], predicted='up')]", "'> 0' or '< 0'"),
      ("[dict(claim=1, name='h', contrast=a['x'], predicted='>')] * 2", "share a name"),
      ("[dict(claim=1, name='h', contrast=0.5, predicted='>')]", "spec.group"),
      ("[dict(claim=1, name='h', contrast=a['x'])]", r"misses \['predicted'\]"),
  ]:
    with pytest.raises(ValueError, match=message):
      spec.load(_sweep_file(tmp_path, source))


def _summaries(tmp_path, values, devices=None):
  """Each point summarised as if it had run: `values[group]` per seed as `acc@32`, `acc@40`;
  `devices[group]` the device of each seed, as `measure.current_device` gives it."""
  for group, seeds in values.items():
    for seed, (acc32, acc40) in enumerate(seeds):
      name = f"{group}_seed{seed}"
      overrides = {"model.downsample": "blur", "seed": seed} if group == "a" else {"seed": seed}
      (tmp_path / "sweep" / name).mkdir(parents=True, exist_ok=True)
      summary = {"name": name, "overrides": overrides, "step": 8, "eval_images": 256,
                 "options": {"num_shift_images": 64, "max_shift": 4, "ensemble_sizes": []},
                 "eval": {"32": {"accuracy": acc32}, "40": {"accuracy": acc40}},
                 "best_size": 32 if acc32 >= acc40 else 40, "images_seen": 512}
      if devices and group in devices and devices[group][seed]:
        summary.update(measure.device_summary([devices[group][seed]]))
      (tmp_path / "sweep" / name / measure.SUMMARY_FILE).write_text(json.dumps(summary))


@pytest.fixture
def no_figure(monkeypatch):
  """Aggregation without drawing results.png (not what these tests read)."""
  monkeypatch.setattr(tables, "write_figure", lambda *args, **kwargs: None)


def test_aggregation_writes_hypotheses_with_holm_and_verdicts(tmp_path, no_figure):
  hypotheses_source = """[
      dict(claim=7, name='a_gains_above', contrast=a['acc@40'] - a['acc@32'], predicted='> 0'),
      dict(claim=2, name='a_minus_b', contrast=a['acc@32'] - b['acc@32'], predicted='> 0'),
      dict(claim=1, name='interaction', contrast=(a['acc@40'] - a['acc@32']) - (b['acc@40'] - b['acc@32']),
           predicted='< 0'),
      dict(claim=4, name='best_size', contrast=a['best_size_bn'], predicted='> 0'),
  ]"""
  flag = _sweep_file(tmp_path, hypotheses_source)
  base = [0.5, 0.55, 0.45, 0.52, 0.48]
  a = [(x, x + d) for x, d in zip(base, EFFECT)]  # Gains above its size: a true effect.
  b = [(x + n, x + n) for x, n in zip(base, NULL)]  # Level with a at 32 px, no gain.
  _summaries(tmp_path, {"a": a, "b": b})
  workdir = tmp_path / "sweep"
  aggregate.aggregate(spec.load(flag), str(workdir), comparisons=[("a", "b")])
  with (workdir / hypotheses.FILE).open() as f:
    reader = csv.DictReader(f)
    rows = {r["name"]: r for r in reader}
  assert tuple(reader.fieldnames) == hypotheses.COLUMNS
  assert hypotheses.COLUMNS[:12] == ("claim", "name", "contrast", "predicted", "estimate", "low",
                                     "high", "p", "p_holm", "n_seeds", "n_images", "verdict")
  gain = rows["a_gains_above"]
  assert gain["verdict"] == "supported" and float(gain["estimate"]) == pytest.approx(np.mean(EFFECT))
  assert gain["n_seeds"] == "5" and gain["n_images"] == "256" and gain["method"] == "t"
  assert float(gain["p"]) == pytest.approx(stats.ttest_1samp(EFFECT, 0).pvalue, rel=1e-5)
  level = rows["a_minus_b"]
  assert level["verdict"] == "not resolved" and level["n_seeds"] == "5/5" and level["method"] == "welch"
  assert float(level["p"]) == pytest.approx(
      stats.ttest_ind([x for x, _ in a], [x for x, _ in b], equal_var=False).pvalue, rel=1e-5)
  # Predicted a smaller gain for a than b: the data say larger.
  assert rows["interaction"]["verdict"] == "contradicted"
  assert rows["interaction"]["contrast"] == "a[acc@40] - a[acc@32] - (b[acc@40] - b[acc@32])"
  assert rows["best_size"]["verdict"] == "not resolved" and rows["best_size"]["estimate"] == ""
  assert rows["best_size"]["method"].startswith("fewer than 2 seeds")
  p_values = [float(r["p"]) if r["p"] else None for r in rows.values()]
  assert [float(r["p_holm"]) if r["p_holm"] else None for r in rows.values()] == pytest.approx(
      statistics.holm(p_values))
  markdown = (workdir / "results.md").read_text()
  assert "Primary hypotheses" in markdown and "| 7 | a_gains_above |" in markdown
  assert "Exploratory comparisons" in markdown
  with (workdir / "comparisons.csv").open() as f:
    assert {r["kind"] for r in csv.DictReader(f)} == {"exploratory"}
  # Correcting across two sweeps: Holm over all eight hypotheses.
  both = statistics.judge(hypotheses.read(workdir / hypotheses.FILE) * 2)
  assert [h["p_holm"] for h in both] == pytest.approx(statistics.holm(p_values * 2))
  assert both[0]["verdict"] == "supported" and both[0]["confidence"] > float(gain["confidence"])


def test_a_headline_shortens_results_md_and_plots_those_measures_by_arm(tmp_path):
  """`get_headline`: results.md shows the name, the seed and those measures (every table
  of it), results.csv and the other CSV files keep every column, and results.png plots the
  headline measures by arm, each arm's mean over seeds with its interval."""
  flag = _sweep_file(tmp_path, "[dict(claim=7, name='h', contrast=a['acc@40'] - a['acc@32'], predicted='>')]")
  with open(flag, "a") as f:
    f.write("\ndef get_headline(arg):\n  return ['acc@40', 'images_seen', 'not_measured']\n")
  sweep = spec.load(flag)
  assert sweep.headline == ("acc@40", "images_seen", "not_measured")
  base = [0.5, 0.55, 0.45, 0.52, 0.48]
  _summaries(tmp_path, {"a": [(x, x + d) for x, d in zip(base, EFFECT)], "b": [(x, x) for x in base]})
  workdir = tmp_path / "sweep"
  aggregate.aggregate(sweep, str(workdir), comparisons=[("a", "b")])
  markdown = (workdir / "results.md").read_text()
  heads = [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line]
  assert "| name | seed | acc@40 | images_seen |" in heads  # The points' table.
  assert "| name | seeds | acc@40 | images_seen |" in heads  # Means over seeds.
  assert "acc@32" not in markdown.split("Primary hypotheses")[0].replace("a[acc@32]", "")
  assert "| a | acc@40 |" in markdown and "| acc@40 | a | b |" in markdown
  with (workdir / "results.csv").open() as f:
    assert {"acc@32", "acc@40", "best_size"} <= set(csv.DictReader(f).fieldnames)
  with (workdir / "results_intervals.csv").open() as f:
    assert "acc@32" in {r["metric"] for r in csv.DictReader(f)}
  values = tables.headline_values(
      [json.loads((workdir / f"a_seed{i}" / measure.SUMMARY_FILE).read_text()) for i in range(5)],
      [{"acc@40": x + d, "images_seen": 512} for x, d in zip(base, EFFECT)], sweep.headline)
  assert values == {"a": {"acc@40": pytest.approx([x + d for x, d in zip(base, EFFECT)]),
                          "images_seen": [512.0] * 5}}
  fig = tables.headline_figure(values, sweep.headline)
  assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["acc@40", "images_seen"]
  assert (workdir / "results.png").stat().st_size > 1000


def test_a_group_not_finished_waits(tmp_path, no_figure):
  flag = _sweep_file(tmp_path, "[dict(claim=2, name='h', contrast=a['acc@32'] - b['acc@32'], predicted='>')]")
  _summaries(tmp_path, {"b": [(0.5, 0.5)] * 2})
  aggregate.aggregate(spec.load(flag), str(tmp_path / "sweep"))
  (row,) = hypotheses.read(tmp_path / "sweep" / hypotheses.FILE)
  assert row["verdict"] == "not resolved" and row["method"] == "waiting for seed groups a"
  assert row["estimate"] is None and row["p_holm"] is None


H200 = {"kind": "NVIDIA H200", "platform": "gpu", "count": 1}
CPU = {"kind": "cpu", "platform": "cpu", "count": 1}


def test_a_point_records_each_device_kind_it_trained_on(tmp_path):
  point = tmp_path / "p"
  assert measure.trained_devices(point) == [] and measure.device_summary([]) == {}
  measure.record_device(point, H200)
  measure.record_device(point, H200)  # Resumed on the same kind: listed once.
  assert measure.trained_devices(point) == [H200]
  assert measure.device_summary([H200]) == {"device_kind": "NVIDIA H200", "device_platform": "gpu",
                                            "device_count": 1, "device": "NVIDIA H200 (gpu)"}
  measure.record_device(point, CPU)  # Resumed on a CPU: both, joined.
  assert measure.device_summary(measure.trained_devices(point))["device"] == "NVIDIA H200 (gpu) + cpu"
  assert measure.device_label({**H200, "count": 4}) == "4 x NVIDIA H200 (gpu)"
  here = measure.current_device()
  assert here["kind"] and here["platform"] in ("cpu", "gpu", "tpu") and here["count"] >= 1


def test_a_point_trained_outside_the_sweep_names_its_devices_in_its_metrics(tmp_path):
  """A printed `progressive train` command writes no device file; its `device` rows (one
  per call of training) stand in."""
  point = tmp_path / "p"
  point.mkdir()
  rows = [{"event": "device", "step": 0, **H200}, {"event": "train", "step": 4},
          {"event": "device", "step": 4, **H200}, {"event": "device", "step": 8, **CPU}]
  (point / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  assert measure.trained_devices(point) == [H200, CPU]


def test_aggregation_refuses_a_seed_group_that_mixes_device_kinds(tmp_path, no_figure):
  flag = _sweep_file(tmp_path, "[dict(claim=2, name='h', contrast=a['acc@32'] - b['acc@32'], predicted='>')]")
  values = {"a": [(0.6, 0.6)] * 3, "b": [(0.5, 0.5), (0.52, 0.5), (0.49, 0.5)]}
  _summaries(tmp_path, values, {"a": [H200] * 3, "b": [CPU, H200, CPU]})
  workdir = tmp_path / "sweep"
  with pytest.raises(tables.MixedDevicesError,
                     match=r"^Seed group b mixes device kinds: cpu \(seeds 0, 2\); NVIDIA H200 "
                           r"\(gpu\) \(seed 1\)\. One device kind per arm"):
    aggregate.aggregate(spec.load(flag), str(workdir), comparisons=[("a", "b")])
  assert not (workdir / "results.csv").exists()  # Refused before any table.
  # Seed 1 retrained on a CPU and summarised before summaries recorded devices: its
  # DEVICE_FILE, written when it trained, is read instead.
  _summaries(tmp_path, {"b": values["b"]}, {"b": [CPU, None, CPU]})
  measure.record_device(workdir / "b_seed1", CPU)
  rows = aggregate.aggregate(spec.load(flag), str(workdir), comparisons=[("a", "b")])
  assert [r["device"] for r in rows] == ["NVIDIA H200 (gpu)"] * 3 + ["cpu"] * 3
  with (workdir / "results.csv").open() as f:
    assert {r["device"] for r in csv.DictReader(f)} == {"NVIDIA H200 (gpu)", "cpu"}
  with (workdir / "results_mean.csv").open() as f:
    assert [r["device"] for r in csv.DictReader(f)] == ["NVIDIA H200 (gpu)", "cpu"]
  with (workdir / "comparisons.csv").open() as f:
    assert {r["device"] for r in csv.DictReader(f)} == {"NVIDIA H200 (gpu) / cpu"}
  (row,) = hypotheses.read(workdir / hypotheses.FILE)
  assert row["device"] == "NVIDIA H200 (gpu) / cpu"
  # A point resumed on another kind mixes kinds by itself.
  measure.record_device(workdir / "b_seed1", H200)
  (workdir / "b_seed1" / measure.SUMMARY_FILE).write_text(json.dumps({
      **json.loads((workdir / "b_seed1" / measure.SUMMARY_FILE).read_text()),
      **measure.device_summary(measure.trained_devices(workdir / "b_seed1"))}))
  with pytest.raises(tables.MixedDevicesError,
                     match=r"^Point b_seed1 trained on several device kinds \(cpu \+ NVIDIA H200 \(gpu\)\)"):
    aggregate.aggregate(spec.load(flag), str(workdir))


def test_image_counts_come_from_where_each_measure_was_taken():
  """A shift measure counts the images it shifted (a photograph's patch that would leave
  its region is left out), not the images it was asked for."""
  summary = {"eval_images": 120, "options": {"num_shift_images": 64}, "shift_images": 58,
             "shift_period_images": 51}
  assert hypotheses.images(summary, "acc@32") == 120
  assert hypotheses.images(summary, "jaggedness") == 58
  assert hypotheses.images(summary, "jag_period") == 51
  del summary["shift_images"]  # A summary made before MEASURES 5.
  assert hypotheses.images(summary, "jaggedness") == 64


def test_findings_judges_the_hypotheses_of_several_sweeps_together(tmp_path, monkeypatch):
  """`{{hypotheses:a+b}}` re-corrects across both sweeps: a's p = 0.03, alone supported,
  is not resolved among three tests (Holm: 0.001 x 3, then 0.03 x 2 = 0.06 > 0.05)."""
  make_findings = config_files.load_module(str(REPO / "experiments/make_findings.py"))
  monkeypatch.setattr(make_findings, "RESULTS", tmp_path)

  def row(claim, name, p, estimate):
    se = 0.1
    return {"claim": claim, "name": name, "contrast": "x - y", "predicted": "> 0",
            "estimate": estimate, "p": p, "se": se, "df": 4.0, "n_seeds": "5+5",
            "n_images": 1024, "method": "welch", "device": "cpu"}

  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  alone = statistics.judge([row(3, "h_a", 0.03, 0.4)])
  assert alone[0]["verdict"] == "supported"
  hypotheses.write(tmp_path / "a" / hypotheses.FILE, alone)
  hypotheses.write(tmp_path / "b" / hypotheses.FILE, statistics.judge(
      [row(1, "h_b1", 0.001, 0.9), row(2, "h_b2", 0.04, -0.3)]))
  lines = make_findings.render("{{hypotheses:a+b}}").splitlines()
  assert lines[0] == ("3 primary hypotheses, Holm-corrected across all of them: 1 supported, "
                      "0 contradicted, 2 not resolved.")
  body = [line.split(" | ") for line in lines[4:]]
  assert [cells[1] for cells in body] == ["b: h_b1", "b: h_b2", "a: h_a"]  # By claim.
  assert [cells[-2] for cells in body] == ["supported", "not resolved", "not resolved"]
  assert [cells[7] for cells in body] == ["0.003", "0.06", "0.06"]
  with pytest.raises(FileNotFoundError, match="wrote no hypotheses.csv"):
    make_findings.render("{{hypotheses:a+missing}}")


def test_findings_curves_draw_each_series_against_the_test_size(tmp_path, monkeypatch):
  """`{{curves:s:flip32/acc_bn+rrc32/acc_bn@16,32}}`: each series' mean and interval at
  each size from results_intervals.csv, drawn into the sweep's folder and linked."""
  make_findings = config_files.load_module(str(REPO / "experiments/make_findings.py"))
  monkeypatch.setattr(make_findings, "RESULTS", tmp_path / "results")
  monkeypatch.setattr(make_findings, "HERE", tmp_path)
  (tmp_path / "results" / "s").mkdir(parents=True)
  rows = [("flip32", "acc_bn@16", 0.4, 0.35, 0.45), ("flip32", "acc_bn@32", 0.8, 0.78, 0.82),
          ("rrc32", "acc_bn@16", 0.5, 0.44, 0.56), ("rrc32", "acc_bn@32", 0.7, 0.66, 0.74),
          ("rrc32", "acc@32", 0.6, 0.5, 0.7)]
  with (tmp_path / "results" / "s" / "results_intervals.csv").open("w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["name", "metric", "mean", "std", "n", "low", "high"])
    writer.writerows([(arm, metric, mean, 0.01, 5, low, high) for arm, metric, mean, low, high in rows])
  spec = "flip32/acc_bn+rrc32/acc_bn@16,32"
  data = make_findings.curves_data("s", spec)
  assert [p["mean"] for p in data[("rrc32", "acc_bn")]] == [0.5, 0.7]
  assert data[("flip32", "acc_bn")][0] == {"size": 16, "mean": 0.4, "n": 5, "low": 0.35, "high": 0.45}
  template = f"{{{{curves:s:{spec}}}}}"
  make_findings.draw_figures(template)
  figure = tmp_path / "results" / "s" / "curves_flip32_acc_bn_rrc32_acc_bn.png"
  assert figure.stat().st_size > 1000
  assert make_findings.render(template).startswith(
      f"![{spec}](results/s/curves_flip32_acc_bn_rrc32_acc_bn.png)\n\n*Mean over 5 seeds")
  with pytest.raises(KeyError, match="no flip32 acc_bn@48"):
    make_findings.render("{{curves:s:flip32/acc_bn@16,48}}")
  with pytest.raises(ValueError, match="needs series and sizes"):
    make_findings.render("{{curves:s:flip32/acc_bn}}")
