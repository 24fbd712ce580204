"""Accuracy against training FLOPs over sweeps at two budgets (progressive.sweeps.budgets)
and the FINDINGS placeholder that reports it."""

import math
import pathlib

import pytest
from scipy import stats

from progressive import config_files, statistics
from progressive.sweeps import budgets, hypotheses

REPO = pathlib.Path(__file__).parents[1]
HEAD = "name,seed,train_gflops,images_seen,wall_seconds,acc@32\n"


def _sweep(path, rows):
  path.mkdir(parents=True)
  (path / "results.csv").write_text(HEAD + "".join(",".join(map(str, r)) + "\n" for r in rows))
  return path


@pytest.fixture
def two_budgets(tmp_path):
  short = _sweep(tmp_path / "short", [
      ("fast_seed0", 0, 100, 1000, 10, 0.5), ("fast_seed1", 1, 100, 1000, 12, 0.7),
      ("slow_seed0", 0, 200, 1000, 20, 0.2), ("slow_seed1", 1, 200, 1000, 20, 0.4),
      ("control_seed0", 0, 100, 1000, 10, 0.1),  # Run at the first budget only.
  ])
  long = _sweep(tmp_path / "long", [
      ("fast_seed0", 0, 400, 2000, 30, 0.9), ("fast_seed1", 1, 400, 2000, 30, 0.9),
      ("slow_seed0", 0, 800, 2000, 50, 0.7), ("slow_seed1", 1, 800, 2000, 50, 0.9),
  ])
  return {"long": long, "short": short}  # Not in budget order: curves sorts by FLOPs.


def test_curves_give_each_arm_its_mean_and_interval_at_each_budget(two_budgets):
  rows = budgets.curves(two_budgets, "acc@32")
  assert [(r["arm"], r["budget"]) for r in rows] == [
      ("fast", "short"), ("fast", "long"), ("slow", "short"), ("slow", "long"), ("control", "short")]
  fast_short = rows[0]
  assert fast_short["train_gflops"] == 100 and fast_short["wall_seconds"] == 11
  assert fast_short["mean"] == pytest.approx(0.6) and fast_short["n"] == 2
  half = stats.t.ppf(0.975, 1) * math.sqrt(0.02) / math.sqrt(2)  # std of (0.5, 0.7), n = 2.
  assert fast_short["low"] == pytest.approx(0.6 - half) and fast_short["high"] == pytest.approx(0.6 + half)
  assert rows[1]["low"] == pytest.approx(0.9) and rows[-1]["low"] is None  # No spread; one seed.


def test_flops_to_reach_interpolate_in_log_flops_between_budgets(two_budgets):
  rows = budgets.curves(two_budgets, "acc@32")
  # The control (one budget, 0.1) does not drag the common target down: slow's best, 0.8.
  assert budgets.common_target(rows) == pytest.approx(0.8)
  reach = budgets.to_reach(rows)
  assert reach["fast"] == {"gflops": pytest.approx(400 ** (2 / 3) * 100 ** (1 / 3)), "bound": "="}
  assert reach["slow"] == {"gflops": pytest.approx(800), "bound": "="}
  assert reach["control"] == {"gflops": 100, "bound": ">"}
  assert budgets.to_reach(rows, 0.5)["fast"] == {"gflops": 100, "bound": "<="}
  # Halfway between the means in accuracy is halfway between the budgets in log FLOPs.
  assert budgets.to_reach(rows, 0.55)["slow"]["gflops"] == pytest.approx(400)


def test_curves_name_a_metric_no_sweep_has_and_a_missing_sweep(two_budgets, tmp_path):
  with pytest.raises(ValueError, match="no column 'acc@48'"):
    budgets.curves(two_budgets, "acc@48")
  with pytest.raises(FileNotFoundError, match="run \\(or aggregate\\) that sweep first"):
    budgets.curves({"x": tmp_path / "nothing"}, "acc@32")


def test_figure_draws_one_line_per_arm(two_budgets):
  rows = budgets.curves(two_budgets, "acc@32")
  fig = budgets.figure(rows, "acc@32", target=0.8)
  ax = fig.axes[0]
  assert ax.get_xscale() == "log"
  assert [t.get_text() for t in ax.get_legend().get_texts()] == ["fast", "slow", "control"]


def test_findings_budgets_placeholder_renders_the_table_and_the_figure(two_budgets, monkeypatch):
  make_findings = config_files.load_module(str(REPO / "experiments/make_findings.py"))
  root = two_budgets["short"].parent
  monkeypatch.setattr(make_findings, "RESULTS", root)
  monkeypatch.setattr(make_findings, "HERE", root.parent)
  template = "{{budgets:short+long:acc@32}}"
  assert make_findings.sweep_names(template) == ["short", "long"]
  lines = make_findings.render(template).splitlines()
  assert lines[2] == "| fast | short | 100 | 1000 | 11 | 0.600 [-0.671, 1.871] (n=2) |"
  assert lines[-3].endswith("fast 252, slow 800, control more than 100.")
  assert "acc@32 = 0.800" in lines[-3]
  assert lines[-1] == f"![acc@32 against training GFLOPs]({root.name}/short/budgets_acc_32.png)"
  make_findings.draw_figures(template)
  assert (root / "short" / "budgets_acc_32.png").stat().st_size > 1000
  with pytest.raises(ValueError, match="needs one metric and optionally a target"):
    make_findings.render("{{budgets:short+long:acc@32,acc@16}}")
  named = make_findings.render("{{budgets:short+long:acc@32,0.55}}").splitlines()[-3]
  assert "acc@32 = 0.550 (the target the template names)" in named
  assert named.endswith("fast at most 100, slow 400, control more than 100.")


def test_convergence_reads_each_arm_at_its_own_training_size(tmp_path, monkeypatch):
  """RESEARCH.md's check: an arm's accuracy at its own training size (its last stage's)
  within a point of the same arm at twice the budget, by the means over seeds."""
  head = "name,stages,seed,acc@24,acc@32\n"
  short, long = tmp_path / "short", tmp_path / "long"
  for path, rows in ((short, ["a24_seed0,24/6,0,0.80,0.1", "a24_seed1,24/6,1,0.82,0.1",
                              "b_seed0,16/3 24/2 32/2,0,0.1,0.70", "b_seed1,16/3 24/2 32/2,1,0.1,0.74",
                              "control_seed0,32/6,0,0.1,0.5"]),
                     (long, ["a24_seed0,24/12,0,0.805,0.9", "a24_seed1,24/12,1,0.825,0.9",
                             "b_seed0,16/6 24/4 32/4,0,0.1,0.80", "b_seed1,16/6 24/4 32/4,1,0.1,0.82"])):
    path.mkdir()
    (path / "results.csv").write_text(head + "\n".join(rows) + "\n")
  a, b = budgets.convergence(short, long)
  assert (a["arm"], a["metric"], b["arm"], b["metric"]) == ("a24", "acc@24", "b", "acc@32")
  assert a["gain"]["difference"] == pytest.approx(0.005) and a["converged"]
  assert b["gain"]["difference"] == pytest.approx(0.09) and not b["converged"]
  assert b["first"]["mean"] == pytest.approx(0.72) and b["second"]["n"] == 2
  half = stats.t.ppf(0.975, 2) * math.sqrt(0.0002 / 2 + 0.0002 / 2)  # Welch: equal variances, df 2.
  assert (a["gain"]["low"], a["gain"]["high"]) == pytest.approx((0.005 - half, 0.005 + half))
  # A metric named outright reads that column for every arm.
  assert [r["metric"] for r in budgets.convergence(short, long, "acc@32")] == ["acc@32"] * 2
  with pytest.raises(ValueError, match="control is in .* but not in"):
    budgets.convergence(long, short)
  make_findings = config_files.load_module(str(REPO / "experiments/make_findings.py"))
  monkeypatch.setattr(make_findings, "RESULTS", tmp_path)
  lines = make_findings.render("{{convergence:short+long}}").splitlines()
  assert lines[2] == ("| a24 | `acc@24` | 0.810 [0.683, 0.937] (n=2) | 0.815 [0.688, 0.942] (n=2) "
                      f"| +0.005 [{0.005 - half:+.3f}, {0.005 + half:+.3f}] | yes |")
  assert lines[3].endswith("| **no** |") and lines[-1].startswith("1 of 2 arms within a point")


def test_findings_hypotheses_say_whether_their_arms_passed_the_check(tmp_path, monkeypatch):
  """`{{hypotheses:short:short/long}}`: a last column saying whether every arm a
  hypothesis reads is within a point at twice the budget, naming each that is not."""
  head = "name,stages,seed,acc@24,acc@32\n"
  for name, rows in (("short", ["a24_seed0,24/6,0,0.80,0.1", "a24_seed1,24/6,1,0.82,0.1",
                                "b_seed0,32/6,0,0.1,0.70", "b_seed1,32/6,1,0.1,0.74",
                                "control_seed0,32/6,0,0.1,0.5"]),
                     ("long", ["a24_seed0,24/12,0,0.805,0.9", "a24_seed1,24/12,1,0.825,0.9",
                               "b_seed0,32/12,0,0.1,0.80", "b_seed1,32/12,1,0.1,0.82"])):
    (tmp_path / name).mkdir()
    (tmp_path / name / "results.csv").write_text(head + "\n".join(rows) + "\n")

  def row(name, contrast, p):
    return {"claim": 1, "name": name, "contrast": contrast, "predicted": "> 0", "estimate": 0.1,
            "p": p, "se": 0.02, "df": 1.0, "n_seeds": "2", "n_images": 100, "method": "t",
            "device": "cpu"}

  hypotheses.write(tmp_path / "short" / hypotheses.FILE, statistics.judge([
      row("own", "a24[acc@24] - a24[acc@32]", 0.01),
      row("between", "b[acc@32] - a24[acc@24]", 0.02),
      row("control", "a24[acc@24] - control[acc@32]", 0.03)]))
  make_findings = config_files.load_module(str(REPO / "experiments/make_findings.py"))
  monkeypatch.setattr(make_findings, "RESULTS", tmp_path)
  lines = make_findings.render("{{hypotheses:short:short/long}}").splitlines()
  assert lines[2].endswith("| device | converged |")
  assert [line.rsplit(" | ", 1)[1] for line in lines[4:]] == [
      "yes |", "**no**: b +0.090 |", "not in long: control |"]
  # Without the check, no column; a check of a sweep not listed, or without a check, is refused.
  assert make_findings.render("{{hypotheses:short}}").splitlines()[2].endswith("| device |")
  with pytest.raises(ValueError, match="checks other, which it does not list"):
    make_findings.render("{{hypotheses:short:other/long}}")
  with pytest.raises(ValueError, match="names no check"):
    make_findings.render("{{hypotheses:short:short}}")
