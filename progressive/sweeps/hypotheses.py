"""A sweep's primary hypotheses (`get_hypotheses`), each judged over its seed groups:
`DIR/hypotheses.csv`.

Each hypothesis is a `spec.Contrast` with a predicted sign. Its estimate and interval
are over seeds: every seed of a group gives one per-seed value of the group's share of
the contrast (a within-network contrast is computed inside each network, so it is
paired), and the groups are independent samples. One group gives a one-sample (paired)
Student t interval with `n - 1` degrees of freedom; several, Welch-Satterthwaite's
(`statistics.contrast`). Each per-seed value is a measurement on the whole test set, so
the interval covers the spread between trained networks on those test images, not the
sampling of test images (`n_images` says how many there were). A contrast with no spread
over seeds (every seed equal, e.g. a best test size) is exact: no t test, the interval is
its value, p is 0 (1 if the value is 0).

Holm's correction runs across every hypothesis of the sweep (`statistics.judge`; pass the
rows of several sweeps' `hypotheses.csv`, `read`, to correct across all of them). Ranked
by p, the hypothesis of rank i of m gets its interval at level `1 - 0.05 / (m - i + 1)`;
the verdict is "supported" where Holm's adjusted p is at most 0.05 and the estimate has
the predicted sign, "contradicted" where it has the other sign, else "not resolved".
Each row names the device kinds its seed groups trained on (`device`; aggregation has
already refused a group that mixes kinds).
"""

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

from etils import epath

from progressive import statistics
from progressive.sweeps import folder, spec, tables

FILE = "hypotheses.csv"
ALPHA = 0.05
COLUMNS = ("claim", "name", "contrast", "predicted", "estimate", "low", "high", "p", "p_holm",
           "n_seeds", "n_images", "verdict", "method", "confidence", "se", "df", "device")
# Measurements over the whole eval split (the training loop's evaluation, the scale
# controls, the ensembles and the fine-tune read all of it).
WHOLE_SPLIT = ("acc", "ens_gain", "ft_gain", "best_size")
# Shift measures within `max_shift` px, on `num_shift_images` (0: all) test images.
SHIFTED = ("jaggedness", "consistency", "frac_changed")
# Shift measures over the whole subsampling period, on the images they could shift.
PERIOD = ("jag_period", "pred_change", "prob_change", "cons_period")


def seed_points(summaries: Sequence[Mapping[str, Any]],
                rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[int, tuple[dict, dict]]]:
  """`{seed group name: {seed: (summary, results.csv row)}}` over the points with a seed."""
  groups, names = {}, {}
  for summary, row in zip(summaries, rows):
    key = spec.seed_group(summary["overrides"])
    if key is None:
      continue
    seed = summary["overrides"]["seed"]
    name = names.setdefault(key, spec.group_name(summary["name"], seed))
    groups.setdefault(name, {})[seed] = (summary, row)
  return groups


def images(summary: Mapping[str, Any], metric: str) -> int | None:
  """How many test images one point's `metric` averages over, where the summary says."""
  whole = summary.get("eval_images")
  if metric.startswith("acc_obj"):
    return None
  if metric.startswith(WHOLE_SPLIT):
    return whole
  if metric in SHIFTED:
    if summary.get("shift_images") is not None:  # Counted where measured (MEASURES >= 5).
      return summary["shift_images"]
    used = (summary.get("options") or {}).get("num_shift_images") or 0
    return whole if not used or whole is None else min(used, whole)
  if metric in PERIOD:
    return summary.get("shift_period_images")
  return None


def evaluate(hypothesis: spec.Hypothesis,
             points: Mapping[str, Mapping[int, tuple[dict, dict]]]) -> dict[str, Any]:
  """One hypothesis's estimate over the seed groups `points` (`seed_points`), before the
  correction: `estimate`, `se`, `df`, `p`, `method`, `n_seeds` (per group, `/`-joined),
  `n_images` (the fewest test images any of its per-seed values averages over) and
  `device` (the device kinds its groups trained on, `tables.devices_text`). A seed
  missing a measurement is left out of its group; a group not finished yet leaves the
  estimate empty."""
  contrast = hypothesis.contrast
  out = {"claim": hypothesis.claim, "name": hypothesis.name, "contrast": str(contrast),
         "predicted": hypothesis.predicted, "estimate": None, "se": None, "df": None,
         "p": None, "n_seeds": None, "n_images": None, "device": None}
  waiting = [g for g in contrast.groups() if not points.get(g)]
  if waiting:
    return {**out, "method": "waiting for seed groups " + ", ".join(waiting)}
  values, counts, devices = [], [], []
  for group in contrast.groups():
    seeds = [(summary, row, contrast.part_value(group, row))
             for _, (summary, row) in sorted(points[group].items())]
    used = [(summary, value) for summary, _, value in seeds if value is not None]
    devices += [summary.get("device") for summary, _ in used]
    values.append([value for _, value in used])
    metrics = [m for g, m in contrast.metrics() if g == group]
    counts += [images(summary, m) for summary, _ in used for m in metrics]
  result = statistics.contrast(values)
  method = result["method"] or "fewer than 2 seeds with every measurement in a group"
  return {**out, **{k: result[k] for k in ("estimate", "se", "df", "p")}, "method": method,
          "n_seeds": "/".join(str(len(v)) for v in values),
          "n_images": None if not counts or None in counts else min(counts),
          "device": tables.devices_text(devices)}


def table(hypotheses: Sequence[spec.Hypothesis], summaries, rows,
          alpha: float = ALPHA) -> list[dict[str, Any]]:
  """Every hypothesis evaluated (`evaluate`) and judged with Holm's correction across
  them (`statistics.judge`)."""
  points = seed_points(summaries, rows)
  return statistics.judge([evaluate(h, points) for h in hypotheses], alpha)


def _number(value) -> str:
  if value is None:
    return ""
  if isinstance(value, float):
    return f"{value:.6g}"
  return str(value)


def write(path: epath.Path, judged: Sequence[Mapping[str, Any]]) -> None:
  """`judged` (`table`) as `hypotheses.csv`, numbers to six significant digits."""
  text = io.StringIO()
  writer = csv.writer(text, lineterminator="\r\n")
  writer.writerow(COLUMNS)
  writer.writerows([_number(row.get(c)) for c in COLUMNS] for row in judged)
  folder.write_text(epath.Path(path), text.getvalue())


def read(path) -> list[dict[str, Any]]:
  """The rows of a `hypotheses.csv`, numbers as numbers: pass the rows of several sweeps
  to `statistics.judge` to correct across all of them."""
  with epath.Path(path).open() as f:
    rows = list(csv.DictReader(f))
  out = []
  for row in rows:
    parsed = dict(row)
    for key in ("estimate", "low", "high", "p", "p_holm", "se", "df", "confidence"):
      parsed[key] = float(row[key]) if row.get(key) else None
    parsed["claim"] = int(row["claim"])
    parsed["n_images"] = int(row["n_images"]) if row.get("n_images") else None
    out.append(parsed)
  return out


def markdown_lines(judged: Sequence[Mapping[str, Any]], converged: bool = False) -> list[str]:
  """The table of results.md about the hypotheses; with `converged`, a last column of
  each row's `converged` text (whether its arms passed a check of convergence)."""
  cell = tables.cell
  head = ["claim", "name", "contrast", "predicted", "estimate", "interval", "p", "p_holm",
          "n_seeds", "n_images", "verdict", "device", *(["converged"] if converged else [])]
  lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
  for h in judged:
    interval = ("-" if h["low"] is None else
                f"[{cell(h['low'])}, {cell(h['high'])}] ({100 * h['confidence']:.4g}%)")
    p = "exact" if h["method"] == "exact" else cell(h["p"])
    lines.append("| " + " | ".join([
        str(h["claim"]), h["name"], f"`{h['contrast']}`", h["predicted"], cell(h["estimate"]),
        interval, p, cell(h["p_holm"]), cell(h["n_seeds"]), cell(h["n_images"]),
        h["verdict"], cell(h.get("device")),
        *([h["converged"]] if converged else [])]) + " |")
  return lines
