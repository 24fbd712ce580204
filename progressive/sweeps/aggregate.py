"""A sweep's results over every finished point, wherever it ran.

`aggregate` reads every point's summary, summarising those run elsewhere (or with other
measures), and writes `DIR/results.csv`, `DIR/results.md` and `DIR/results.png`. With
several seeds it also writes `DIR/results_mean.csv` (mean and standard deviation over
each seed group), `DIR/results_intervals.csv` (each mean's 95% interval) and, for the
sweep's comparisons, `DIR/comparisons.csv` (exploratory: uncorrected); for its primary
hypotheses (`get_hypotheses`), `DIR/hypotheses.csv` (`hypotheses`: Holm-corrected
intervals and verdicts); with tuning, `DIR/tuning.csv`; where the headline is the
dead-unit measure (claim 6), `DIR/activations.png` (`tables.write_activations_figure`);
measured with Azulay & Weiss's canvas protocol, `DIR/canvas.png`
(`tables.write_canvas_figure`). Each is written whole (`folder.write_file`), with the
sweep folder held (`folder.held`). Every table records the device kind each point or
seed group trained on, and a seed group that mixes kinds is refused
(`tables.check_devices`).
"""

from collections.abc import Sequence

from etils import epath

from progressive.sweeps import folder, hypotheses, measure, spec, tables, tuning


def aggregate(sweep: spec.Sweep, workdir: str, *,
              comparisons: Sequence[Sequence[str]] | None = None, **settings):
  """Tables and a plot over every finished point (summarising those run elsewhere).

  Writes `results.csv` and `results.md` (one row per point; with several seeds also
  `results_mean.csv` and a table of means and standard deviations over the seeds,
  `results_intervals.csv` with each mean's 95% interval, and for the `(arm, baseline)`
  seed groups of `comparisons` (default: the sweep's) `comparisons.csv`, exploratory), for
  the sweep's primary hypotheses `hypotheses.csv` (`hypotheses.table`), and `results.png`.
  `settings` are `measure.Settings.of`'s (`num_shift_images`, `max_shift`, `bn_images`;
  `ensemble_sizes` and `finetune` default to the sweep's). Returns the rows, one per
  finished point. Holds the sweep folder meanwhile: another sweep using it is a
  `WorkdirError` naming it, and so is a full disk, naming the file. A seed group whose
  points trained on different kinds of device is a `tables.MixedDevicesError` naming it,
  before any table is written: one device kind per arm."""
  with folder.held(workdir):
    return _aggregate(sweep, epath.Path(workdir), comparisons,
                      measure.Settings.of(sweep, **settings))


def _aggregate(sweep: spec.Sweep, workdir: epath.Path, comparisons, settings: measure.Settings):
  choice = tuning.read_choice(workdir)
  if sweep.tuning is not None and (choice is None or tuning.made_otherwise(choice, sweep)):
    try:  # Tuning runs finished elsewhere (--print_commands), or on other seeds: choose now.
      choice = tuning.choose(sweep, workdir)
    except ValueError as e:
      print(f"Not choosing yet: {e}" + (" The points are reported under the choice made on "
                                         "other tuning seeds." if choice else ""))
  points = sweep.expand(choice)
  summaries, missing = [], []
  for name, overrides, config in points:
    point_dir = workdir / name
    summary = measure.read_summary(point_dir)
    # Run elsewhere, or summarised with other measures: (re)summarised here.
    if ((summary is None or summary.get("options") != settings.options(config))
        and measure.finished(point_dir, config)):
      wall = (summary or {}).get("wall_seconds") or measure.trained_seconds(point_dir)
      summary = measure.summarize_point(point_dir, name, overrides, config, settings,
                                        wall_seconds=wall)
    if summary and "device" not in summary:  # Summarised before summaries recorded it.
      summary.update(measure.device_summary(measure.trained_devices(point_dir)))
    (summaries if summary else missing).append(summary or name)
  if not summaries:
    print(f"No finished point in {workdir} yet.")
    return []
  tables.check_devices(summaries)  # One device kind per arm, before any table is written.
  rows = [tables.point_row(s) for s in summaries]
  tables.add_seed_ensembles(workdir, summaries, rows)
  if choice:  # The tuned field as a column: each point's arm's chosen value.
    for s, row in zip(summaries, rows):
      row.setdefault(choice["field"], choice["values"].get(spec.arm_key(s["overrides"])))
      s["overrides"].setdefault(choice["field"], row[choice["field"]])
  names = tables.columns(summaries, rows)
  table = tables.cells(names, rows)
  tables.write_csv(workdir / "results.csv", table)
  notes = tables.notes(summaries, names, settings)
  notes += " " + tables.grid_note([config for name, _, config in points if name not in missing],
                                  sorted({int(size) for s in summaries for size in s["eval"]}))
  shown = tables.shown_columns(names, sweep.headline)
  diverged = {name: why for name in missing if (why := measure.diverged(workdir / name))}
  lines = [
      f"# Sweep `{sweep.flag}`", "",
      f"{len(summaries)} of {len(points)} points finished"
      + (f"; missing: {', '.join(missing)}." if missing else "."),
      *(["", "Diverged (stopped on a non-finite loss, left out): "
         + "; ".join(f"{name}: {why}" for name, why in diverged.items())] if diverged else []),
      "", notes, "",
      *([(f"Shown: the sweep's headline measures (its `get_headline`, else what its primary "
          f"hypotheses read); all {len(names)} columns, and every measure's mean, interval "
          "and comparison, are in the CSV files."), ""]
        if shown != names else []),
      *tables.markdown(table[shown]),
  ]
  means = tables.mean_rows(summaries, rows, names)
  if any(len(m["seeds"].split()) > 1 for m in means):
    lines += _seed_tables(sweep, workdir, summaries, rows, names, means, points, comparisons)
  if sweep.hypotheses:
    judged = hypotheses.table(sweep.hypotheses, summaries, rows)
    hypotheses.write(workdir / hypotheses.FILE, judged)
    lines += ["", (f"Primary hypotheses, written before the run ({hypotheses.FILE}). Each "
                   "estimate is over seeds: per-seed values, paired within a network, with a t "
                   "interval for one seed group and Welch's for several (exact where every "
                   "seed gives the same value). Holm's correction runs across the "
                   f"{len(judged)} hypotheses, and each interval is at Holm's level for its "
                   "rank. Supported (contradicted): the corrected p is at most 0.05 and the "
                   "estimate has (has not) the predicted sign; otherwise not resolved. "
                   "device: the kind(s) of device its seed groups trained on."), "",
              *hypotheses.markdown_lines(judged)]
  if choice:
    lines += _tuning_lines(workdir, choice)
  if tables.write_activations_figure(summaries, workdir, sweep.headline):
    lines += ["", f"![the dead-unit measure over training]({tables.ACTIVATIONS_FIGURE})"]
  drawn = min(settings.num_shift_images or tables.CANVAS_IMAGES, tables.CANVAS_IMAGES)
  if settings.canvas_topk and tables.write_canvas_figure(summaries, workdir, num_images=drawn,
                                                        topk=settings.canvas_topk):
    lines += ["", f"![Azulay & Weiss's canvas protocol, by arm]({tables.CANVAS_FIGURE})"]
  folder.write_text(workdir / "results.md", "\n".join(lines) + "\n")
  tables.write_figure(summaries, workdir / "results.png", rows, sweep.headline)
  print("\n".join(lines))
  return rows


def _tuning_lines(workdir: epath.Path, choice) -> list[str]:
  """Writes `tuning.csv`; results.md's lines on the choice (one borrowed from another
  sweep, `tuning.borrow`, names it)."""
  grid = tables.write_tuning(workdir, choice)
  metric = choice["metric"] + (" (the accuracy at each arm's own training size)"
                               if "{size}" in choice["metric"] else "")
  source = (f"by the sweep in {choice['from']} (this sweep ran no tuning of its own; the "
            "grid below is that sweep's) " if choice.get("from") else "")
  chosen = {r["key"]: r for r in choice["grid"]}.values()
  edges = tuning.edges_text(choice)
  return ["", f"Tuning: {choice['field']} chosen per arm {source}by {metric} on the validation "
          f"slice ({choice['splits'][1]}, trained on {choice['splits'][0]}), "
          f"{tuning.seeds_text(choice)}; the test split was not used to choose. Chosen: "
          + ", ".join(f"{r['arm']} {choice['values'][r['key']]}" for r in chosen) + "."
          + (f" At an edge of its grid (the best value may lie beyond it): {edges}."
             if edges else ""), "",
          *tables.markdown(grid)]


def _seed_tables(sweep, workdir, summaries, rows, names, means, points, comparisons) -> list[str]:
  """Writes `results_mean.csv`, `results_intervals.csv` and `comparisons.csv`; their
  lines of results.md."""
  means = tables.cells(["name", "seeds", *(c for c in names if c not in ("name", "seed"))], means)
  tables.write_csv(workdir / "results_mean.csv", means)
  lines = ["", "Mean ± standard deviation over seeds:", "",
           *tables.markdown(means[tables.shown_columns(list(means.columns), sweep.headline)])]
  groups = tables.seed_values(summaries, rows, names)
  intervals = tables.cells(["name", "metric", "mean", "std", "n", "low", "high"],
                           tables.interval_rows(groups))
  tables.write_csv(workdir / "results_intervals.csv", intervals)
  lines += ["", "Mean over seeds with its 95% interval (Student t; low, high):", "",
            *tables.markdown(_headline_rows(intervals, sweep.headline))]
  pairs = comparisons if comparisons is not None else sweep.comparisons
  # A pair whose seed group the sweep plans but has not finished waits; a name the
  # sweep has no point for is an error (comparison_rows).
  planned = {spec.group_name(n, o["seed"]) for n, o, _ in points if "seed" in o}
  waiting = [pair for pair in pairs if set(pair) <= planned and not set(pair) <= set(groups)]
  compared = tables.comparison_rows(groups, [pair for pair in pairs if pair not in waiting],
                                    tables.group_devices(summaries))
  if waiting:
    lines += ["", "Comparisons waiting for unfinished seed groups: "
              + ", ".join(f"{a} - {b}" for a, b in waiting) + "."]
  if compared:
    printed = [{**c, "p": None if c["p"] is None else f"{c['p']:.3g}"} for c in compared]
    table = tables.cells(["metric", "arm", "baseline", "difference", "low", "high", "p", "n_arm",
                          "n_baseline", "verdict", "method", "kind", "device"], printed)
    tables.write_csv(workdir / "comparisons.csv", table)
    lines += ["", ("Exploratory comparisons (uncorrected for the many tests; the primary "
                   "hypotheses are in hypotheses.csv): arm minus baseline, 95% Welch interval "
                   "(low, high), Welch's two-sided p (exact where neither side varies over "
                   "seeds); the verdict follows the interval:"), "",
              *tables.markdown(_headline_rows(table, sweep.headline))]
  return lines


def _headline_rows(table, headline):
  """The rows of a per-metric table (`metric` column) about the headline measures; all of
  them without a headline."""
  return table[table["metric"].isin(headline)] if headline else table
