"""Builds experiments/FINDINGS.md from FINDINGS.template.md, and each per-claim page
`experiments/findings/NAME.md` from its `NAME.template.md`, from the sweeps' results.

    python experiments/make_findings.py [SWEEP_ROOT [NAME ...]]

With SWEEP_ROOT (the parent of the sweeps' workdirs), every sweep the templates name (or
only the sweeps NAME..., such as one that has just finished while the others run) has
its `results.md`, `results.csv` and `results.png` copied into `experiments/results/NAME/`
first (and, where the sweep wrote them, its intervals, comparisons, tuning grid,
hypotheses and figures; a sweep run with `--tune_only` has its tuning grid alone);
without it, FINDINGS.md is rebuilt from those copies. In the template:

- `{{table:NAME}}`: the tables of `results/NAME/results.md`;
- `{{figure:NAME}}`: a link to its plot;
- `{{intervals:NAME:m1,m2,...}}`: one row per seed group, each metric's mean over seeds
  with its 95% interval and n (`results_intervals.csv`);
- `{{comparisons:NAME:m1,m2,...}}`: the named comparisons on those metrics: difference of
  means, 95% Welch interval, p and the verdict the interval gives (`comparisons.csv`);
- `{{tuning:NAME}}`: the tuning grid, one row per arm (`tuning.csv`);
- `{{edges:NAME+NAME2+...}}`: the arms of those sweeps whose tuned value is the lowest or
  highest of their grid (`tuning.csv`'s best mean per arm, as `tuning.choose` takes it;
  `tuning.at_edges`), or a sentence saying none is;
- `{{means:NAME:c1,c2,...}}`: those columns of the per-seed-group table
  (`results_mean.csv`: mean ± std, or the value all seeds share);
- `{{budgets:NAME+NAME2+...:metric[,target]}}`: the same arms swept at several budgets:
  each arm's metric (mean, 95% interval) against its training GFLOPs, the GFLOPs each arm
  needs to reach `target` (default: the highest mean that every arm swept at every
  budget reaches), and a link to the
  figure of it, which `main` draws into `results/NAME/` (`progressive.sweeps.budgets`);
- `{{convergence:NAME+NAME2[:metric]}}`: RESEARCH.md's check that sweep NAME trained to
  convergence: each arm of NAME2 (the same arms at twice the budget) with its metric
  (default: accuracy at its own training size, `acc@{size}`) in both sweeps, the gain
  with its 95% Welch interval, and whether the means agree within a point
  (`budgets.convergence`);
- `{{hypotheses:NAME+NAME2+...[:NAME/CHECK,...]}}`: the primary hypotheses of those
  sweeps (`hypotheses.csv`), Holm-corrected again across all of them (`statistics.judge`),
  one row each with the sweep it came from, ordered by claim; with `NAME/CHECK` pairs
  (the sweep, then its arms at twice the budget), a last column says whether every arm
  the hypothesis reads passed that check of convergence (`converged_cell`);
- `{{curves:NAME:ARM/METRIC+ARM/METRIC+...@S1,S2,...}}`: a figure of each series'
  `METRIC@S` against the test size S, the mean over seeds with its 95% interval
  (`results_intervals.csv`), e.g. `{{curves:tts:flip32/acc_bn_shape+flip32/acc_bn_texture@16,32,48}}`;
  `main` draws it into `results/NAME/` and the placeholder becomes its link;

so no number in FINDINGS.md is typed by hand.
"""

import csv
import os
import pathlib
import re
import shutil
import sys
from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

from progressive import statistics
from progressive.analysis import plots
from progressive.sweeps import budgets, hypotheses
from progressive.sweeps import tuning as tuning_lib

HERE = pathlib.Path(__file__).parent
RESULTS = HERE / "results"
FILES = ("results.md", "results.csv", "results.png")
# Written by sweeps with seeds, comparisons, tuning, (claim 6) activation statistics or
# (claim 5) the canvas protocol; copied when present.
OPTIONAL_FILES = ("results_mean.csv", "results_intervals.csv", "comparisons.csv", "tuning.csv",
                  "hypotheses.csv", "activations.png", "canvas.png")
_PLACEHOLDER = (r"\{\{(table|figure|intervals|comparisons|tuning|edges|means|budgets|"
                r"hypotheses|curves|convergence):([\w+]+)(?::([\w@.,/+]+))?\}\}")


def _rows(name: str, file: str) -> list[dict[str, str]]:
  path = RESULTS / name / file
  if not path.exists():
    raise FileNotFoundError(f"{path} is missing: the sweep {name} wrote no {file}.")
  with path.open(newline="") as f:
    return list(csv.DictReader(f))


def _markdown(head: list[str], rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
  return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def intervals(name: str, metrics: list[str]) -> str:
  """Mean [low, high] (n) of each metric per seed group, groups in the sweep's order."""
  found = {}
  for row in _rows(name, "results_intervals.csv"):
    found.setdefault(row["name"], {})[row["metric"]] = row
  table = []
  for group, measured in found.items():
    cells = []
    for metric in metrics:
      r = measured.get(metric)
      cells.append("-" if r is None else f"{float(r['mean']):.3f} [{float(r['low']):.3f}, "
                   f"{float(r['high']):.3f}] (n={r['n']})" if r["low"] else f"{float(r['mean']):.3f} (n={r['n']})")
    table.append([group, *cells])
  return _markdown(["arm", *metrics], table)


def comparisons(name: str, metrics: list[str]) -> str:
  rows = [r for r in _rows(name, "comparisons.csv") if r["metric"] in metrics]
  rows.sort(key=lambda r: (metrics.index(r["metric"]), r["baseline"]))
  return _markdown(
      ["metric", "arm - baseline", "difference [95% interval]", "p (Welch)", "n", "verdict"],
      [[r["metric"], f"{r['arm']} - {r['baseline']}",
        f"{float(r['difference']):+.3f} [{float(r['low']):+.3f}, {float(r['high']):+.3f}]",
        r["p"], f"{r['n_arm']} / {r['n_baseline']}", r["verdict"]] for r in rows])


def means(name: str, columns: list[str]) -> str:
  rows = _rows(name, "results_mean.csv")
  missing = [c for c in columns if c not in rows[0]]
  if missing:
    raise ValueError(f"results/{name}/results_mean.csv has no columns {missing}.")
  return _markdown(["arm", *columns], [[r["name"], *(r[c] for c in columns)] for r in rows])


def _tuning_rows(name: str) -> tuple[list[dict[str, str]], str]:
  """`tuning.csv`'s rows and the metric its cells hold (the column after arm and value)."""
  rows = _rows(name, "tuning.csv")
  return rows, next(k for k in rows[0] if k not in ("arm", "value"))


def tuning(name: str) -> str:
  """The grid, an arm per row and a value per column (ascending; `-` where the arm was not
  tuned at it, `diverged` where a tuning seed of the cell diverged)."""
  rows, metric = _tuning_rows(name)
  values = sorted(dict.fromkeys(r["value"] for r in rows), key=float)
  arms = {}
  for r in rows:
    arms.setdefault(r["arm"], {})[r["value"]] = r[metric]

  def cell(text: str | None) -> str:
    if text is None:
      return "-"
    return "diverged" if text in ("", "-") else f"{float(text):.3f}"

  return _markdown([f"arm ({metric} on the validation slice)", *values],
                   [[arm, *(cell(by.get(v)) for v in values)] for arm, by in arms.items()])


def edges(names: str) -> str:
  """The arms of the sweeps `names` (`A+B+...`) tuned at an edge of their grid, each with
  its grid's range and sweep; the value of an arm is its best mean over the tuning seeds
  (ties: the first in grid order; a cell that diverged is never taken), as `tuning.choose`
  takes it."""
  found = []
  for name in names.split("+"):
    rows, metric = _tuning_rows(name)
    grid, values = [], {}
    for r in rows:
      grid.append({"arm": r["arm"], "key": r["arm"], "value": float(r["value"])})
      if r[metric] not in ("", "-"):
        best = values.get(r["arm"])
        if best is None or float(r[metric]) > best[1]:
          values[r["arm"]] = (float(r["value"]), float(r[metric]))
    choice = {"values": {arm: value for arm, (value, _) in values.items()}, "grid": grid}
    for arm, value, side in tuning_lib.at_edges(choice):
      span = [g["value"] for g in grid if g["arm"] == arm]
      found.append(f"{arm} {value:g} (the {side} of {min(span):g}-{max(span):g}, `{name}`)")
  if not found:
    return "No arm's tuned value is at an edge of its grid."
  return ("At an edge of the grid, so the best value may lie beyond it: "
          + "; ".join(found) + ".")


def table(name: str) -> str:
  """`results.md` without its title: the notes, then the table(s)."""
  lines = (RESULTS / name / "results.md").read_text().splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith("|"))
  notes = [line for line in lines[1:start] if line.strip()]
  return "\n".join(notes + [""] + lines[start:])


def _link(path: pathlib.Path, page: pathlib.Path | None) -> str:
  """`path` as a link from a page in the folder `page` (default: FINDINGS.md's)."""
  return os.path.relpath(path, HERE if page is None else page)


def figure(name: str, page: pathlib.Path | None = None) -> str:
  return f"![{name}]({_link(RESULTS / name / 'results.png', page)})"


def _budget_sweeps(names: str) -> dict[str, pathlib.Path]:
  return {name: RESULTS / name for name in names.split("+")}


def budgets_figure_path(names: str, metric: str) -> pathlib.Path:
  return RESULTS / names.split("+")[0] / f"budgets_{metric.replace('@', '_')}.png"


def _budgets(names: str, spec: str):
  """`{{budgets:NAMES:SPEC}}`'s metric, curves and target (`SPEC`: `metric[,target]`;
  without a target, `budgets.common_target`), and whether the template named it."""
  metric, *target = (spec or "").split(",")
  if not metric or len(target) > 1 or (target and not re.fullmatch(r"\d*\.?\d+", target[0])):
    raise ValueError(f"{{{{budgets:{names}:{spec}}}}} needs one metric and optionally a target: "
                     f"{{{{budgets:{names}:acc@32}}}} or {{{{budgets:{names}:acc@32,0.8}}}}.")
  rows = budgets.curves(_budget_sweeps(names), metric)
  return metric, rows, float(target[0]) if target else budgets.common_target(rows), bool(target)


def budgets_table(names: str, spec: str, page: pathlib.Path | None = None) -> str:
  """Each arm's metric against its training budget, over the sweeps `A+B+...`, and the
  GFLOPs to reach the target (`_budgets`)."""
  metric, rows, target, named = _budgets(names, spec)
  which = ("the target the template names" if named
           else "the highest mean that every arm swept at every budget reaches")
  table = _markdown(
      ["arm", "sweep", "training GFLOPs", "images seen", "wall s", f"{metric} [95% interval] (n)"],
      [[r["arm"], r["budget"], f"{r['train_gflops']:.0f}", f"{r['images_seen']:.0f}",
        f"{r['wall_seconds']:.0f}",
        f"{r['mean']:.3f} [{r['low']:.3f}, {r['high']:.3f}] (n={r['n']})" if r["low"] is not None
        else f"{r['mean']:.3f} (n={r['n']})"] for r in rows])
  bounds = {"=": "", "<=": "at most ", ">": "more than "}
  reach = ", ".join(f"{arm} {bounds[v['bound']]}{v['gflops']:.0f}"
                    for arm, v in budgets.to_reach(rows, target).items())
  link = _link(budgets_figure_path(names, metric), page)
  return (f"{table}\n\nTraining GFLOPs to reach {metric} = {target:.3f} ({which}), read from the "
          f"means, interpolated in log FLOPs between budgets: "
          f"{reach}.\n\n![{metric} against training GFLOPs]({link})")


def convergence_table(names: str, metric: str | None) -> str:
  """`{{convergence:FIRST+SECOND[:metric]}}`: each arm's metric at the two budgets."""
  first, *second = names.split("+")
  if len(second) != 1:
    raise ValueError(f"{{{{convergence:{names}}}}} names two sweeps: the first budget, then "
                     "twice it.")
  rows = budgets.convergence(RESULTS / first, RESULTS / second[0], metric or budgets.OWN_SIZE)

  def interval(m):
    return (f"{m['mean']:.3f} [{m['low']:.3f}, {m['high']:.3f}] (n={m['n']})"
            if m["low"] is not None else f"{m['mean']:.3f} (n={m['n']})")

  def gain(g):
    return (f"{g['difference']:+.3f} [{g['low']:+.3f}, {g['high']:+.3f}]"
            if g["low"] is not None else f"{g['difference']:+.3f}")

  table = _markdown(["arm", "metric", first, f"{second[0]} (twice the budget)",
                     "gain [95% Welch interval]", "within a point"],
                    [[r["arm"], f"`{r['metric']}`", interval(r["first"]), interval(r["second"]),
                      gain(r["gain"]), "yes" if r["converged"] else "**no**"] for r in rows])
  done = sum(r["converged"] for r in rows)
  return (f"{table}\n\n{done} of {len(rows)} arms within a point of twice their budget "
          f"(by the means over seeds).")


def _checks(spec: str | None) -> dict[str, str]:
  """`NAME/CHECK,...` as `{NAME: CHECK}`."""
  checks = {}
  for pair in (spec or "").split(","):
    if pair:
      name, _, check = pair.partition("/")
      if not check:
        raise ValueError(f"{pair!r} names no check: write the sweep, then its check at twice "
                         "the budget, as NAME/CHECK.")
      checks[name] = check
  return checks


def converged_cell(contrast: str, check: str | None,
                   rows: Sequence[Mapping] | None) -> str:
  """Whether every arm `contrast` reads (`arm[metric]`) is within a point of twice its
  budget in `rows` (`budgets.convergence` of its sweep against `check`): "yes", "**no**"
  with each arm that is not and the gain of twice its budget, or why it is not known."""
  if check is None:
    return "no check run"
  by_arm = {r["arm"]: r for r in rows}
  arms = list(dict.fromkeys(re.findall(r"(\w+)\[", contrast)))
  missing = [a for a in arms if a not in by_arm]
  if missing:
    return f"not in {check}: " + ", ".join(missing)
  failed = [f"{a} {by_arm[a]['gain']['difference']:+.3f}" for a in arms
            if not by_arm[a]["converged"]]
  return "**no**: " + ", ".join(failed) if failed else "yes"


def hypotheses_table(names: str, checks: str | None = None) -> str:
  """The hypotheses of the sweeps `names` (`A+B+...`), judged together: Holm's correction
  across every one of them, so a verdict accounts for all the tests FINDINGS reports.
  `checks` (`A/A_CHECK,...`) adds whether each hypothesis's arms passed their sweep's
  check of convergence (`converged_cell`)."""
  pairs = _checks(checks)
  unknown = sorted(set(pairs) - set(names.split("+")))
  if unknown:
    raise ValueError(f"{{{{hypotheses:{names}:{checks}}}}} checks {', '.join(unknown)}, which "
                     "it does not list.")
  convergence = {name: budgets.convergence(RESULTS / name, RESULTS / check)
                 for name, check in pairs.items()}
  rows = []
  for name in names.split("+"):
    path = RESULTS / name / hypotheses.FILE
    if not path.exists():
      raise FileNotFoundError(f"{path} is missing: the sweep {name} wrote no {hypotheses.FILE}.")
    rows += [{**row, "name": f"{name}: {row['name']}",
              "converged": converged_cell(row["contrast"], pairs.get(name), convergence.get(name))}
             for row in hypotheses.read(path)]
  judged = sorted(statistics.judge(rows, hypotheses.ALPHA), key=lambda h: h["claim"])
  counts = {v: sum(h["verdict"] == v for h in judged)
            for v in ("supported", "contradicted", "not resolved")}
  summary = ", ".join(f"{n} {verdict}" for verdict, n in counts.items())
  return (f"{len(judged)} primary hypotheses, Holm-corrected across all of them: {summary}.\n\n"
          + "\n".join(hypotheses.markdown_lines(judged, converged=bool(pairs))))


def _curves_spec(name: str, spec: str) -> tuple[list[tuple[str, str]], list[int]]:
  """`ARM/METRIC+...@S1,S2` -> ([(arm, metric), ...], [S1, S2, ...]); ValueError if malformed."""
  series, _, sizes = (spec or "").partition("@")
  pairs = [tuple(part.split("/")) for part in series.split("+") if part]
  if not pairs or not sizes or any(len(p) != 2 for p in pairs):
    raise ValueError(f"{{{{curves:{name}:{spec}}}}} needs series and sizes: "
                     f"{{{{curves:{name}:flip32/acc_bn+rrc32/acc_bn@16,24,32}}}}.")
  return pairs, [int(size) for size in sizes.split(",")]


def curves_figure_path(name: str, spec: str) -> pathlib.Path:
  series = spec.partition("@")[0]
  return RESULTS / name / f"curves_{re.sub(r'[^0-9A-Za-z_]+', '_', series)}.png"


def curves_data(name: str, spec: str) -> dict[tuple[str, str], list[dict]]:
  """Each series' rows at each size: {"size", "mean", "low", "high", "n"}; a KeyError
  names a series and size the sweep did not measure."""
  pairs, sizes = _curves_spec(name, spec)
  found = {(r["name"], r["metric"]): r for r in _rows(name, "results_intervals.csv")}
  data = {}
  for arm, metric in pairs:
    points = []
    for size in sizes:
      row = found.get((arm, f"{metric}@{size}"))
      if row is None:
        raise KeyError(f"results/{name}/results_intervals.csv has no {arm} {metric}@{size}.")
      points.append({"size": size, "mean": float(row["mean"]), "n": int(row["n"]),
                     "low": float(row["low"]) if row["low"] else None,
                     "high": float(row["high"]) if row["high"] else None})
    data[(arm, metric)] = points
  return data


def curves_figure(data: dict[tuple[str, str], list[dict]]):
  """One line per series, its 95% interval as a band; small enough to read scaled down."""
  fig = Figure(figsize=(5.2, 3.4), layout="constrained")
  ax = fig.subplots()
  for (arm, metric), points in data.items():
    x = [p["size"] for p in points]
    line, = ax.plot(x, [p["mean"] for p in points], marker="o", label=f"{arm} {metric}")
    if all(p["low"] is not None for p in points):
      ax.fill_between(x, [p["low"] for p in points], [p["high"] for p in points],
                      color=line.get_color(), alpha=0.2, linewidth=0)
  ax.set_xlabel("test size (px)")
  ax.set_xticks(x)
  ax.set_ylabel("mean over seeds (95% interval)")
  ax.legend(fontsize=8)
  return fig


def curves(name: str, spec: str, page: pathlib.Path | None = None) -> str:
  n = {p["n"] for points in curves_data(name, spec).values() for p in points}
  link = _link(curves_figure_path(name, spec), page)
  return (f"![{spec}]({link})\n\n*Mean over {'/'.join(map(str, sorted(n)))} seeds with its 95% "
          f"interval, from `results/{name}/results_intervals.csv`.*")


def draw_figures(template: str) -> None:
  """Draws the figure of every `{{budgets:...}}` and `{{curves:...}}` placeholder in
  `template`."""
  for kind, names, spec in re.findall(_PLACEHOLDER, template):
    if kind == "budgets":
      metric, rows, target, _ = _budgets(names, spec)
      plots.save(budgets.figure(rows, metric, target), budgets_figure_path(names, metric))
    elif kind == "curves":
      plots.save(curves_figure(curves_data(names, spec)), curves_figure_path(names, spec))


def collect(root: pathlib.Path, names) -> None:
  """Copies each sweep's results from `root/<name>/`; a sweep run with `--tune_only` has
  only its `tuning.csv`. A sweep lacking a results file is a `FileNotFoundError` naming
  it, before anything is copied."""
  copies = []
  for name in names:
    tune_only = not (root / name / FILES[0]).exists() and (root / name / "tuning.csv").exists()
    for file in () if tune_only else FILES:
      if not (root / name / file).exists():
        raise FileNotFoundError(f"{root / name / file} is missing: run that sweep first.")
    copies += [(name, file) for file in (() if tune_only else FILES) + OPTIONAL_FILES
               if (root / name / file).exists()]
  for name, file in copies:
    (RESULTS / name).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / name / file, RESULTS / name / file)


def sweep_names(template: str) -> list[str]:
  return list(dict.fromkeys(n for m in re.findall(_PLACEHOLDER, template) for n in m[1].split("+")))


def _replace(match: re.Match, page: pathlib.Path) -> str:
  kind, name, metrics = match.groups()
  if kind == "budgets":
    return budgets_table(name, metrics, page)
  if kind == "hypotheses":
    return hypotheses_table(name, metrics)
  if kind == "convergence":
    return convergence_table(name, metrics)
  if kind == "edges":
    return edges(name)
  if kind == "curves":
    return curves(name, metrics, page)
  if kind in ("intervals", "comparisons", "means"):
    if not metrics:
      raise ValueError(f"{match.group(0)} needs its metrics: {{{{{kind}:{name}:acc@32,...}}}}.")
    return {"intervals": intervals, "comparisons": comparisons, "means": means}[kind](
        name, metrics.split(","))
  if kind == "figure":
    return figure(name, page)
  return {"table": table, "tuning": tuning}[kind](name)


def render(template: str, page: pathlib.Path | None = None) -> str:
  """The template with every placeholder replaced from `experiments/results/`; links are
  relative to `page`, the folder the rendered page goes in (default: FINDINGS.md's)."""
  return re.sub(_PLACEHOLDER, lambda match: _replace(match, page), template)


def pages() -> list[tuple[pathlib.Path, pathlib.Path]]:
  """`(template, page)`: FINDINGS, then each claim's page under `findings/`."""
  found = [(HERE / "FINDINGS.template.md", HERE / "FINDINGS.md")]
  for template in sorted((HERE / "findings").glob("*.template.md")):
    found.append((template, template.with_name(template.name.replace(".template.md", ".md"))))
  return found


def main(argv) -> None:
  templates = [(template.read_text(), page) for template, page in pages()]
  if len(argv) > 1:
    collect(pathlib.Path(argv[1]), argv[2:] or
            list(dict.fromkeys(n for text, _ in templates for n in sweep_names(text))))
  for text, page in templates:
    draw_figures(text)
    page.write_text(render(text, page.parent))


if __name__ == "__main__":
  main(sys.argv)
