"""Figures of the analyses, drawn from their JSON-able results.

Each function returns a `matplotlib.figure.Figure` (made without pyplot, so nothing
accumulates in a notebook or a script); `save` writes it as PNG. A notebook cell shows
the figure it ends with.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from etils import epath
from matplotlib import cm, colormaps, colors
from matplotlib.figure import Figure

from progressive.analysis import activations
from progressive.training import workdir as workdir_lib
from progressive.training.activations import HIST_RANGE, is_relu

GROUP_COLORS = {"all": "black", "shape": "tab:blue", "texture": "tab:orange",
                # photos' families.
                "object": "tab:blue", "periodic": "tab:orange", "stochastic": "tab:green"}


def _color(group: str, i: int = 0) -> str:
  return GROUP_COLORS.get(group, f"C{i + 2}")


def save(fig: Figure, path, dpi: int = 110) -> epath.Path:
  """Writes `fig` as a PNG at `path` (folders created; whole or not at all: through a
  temporary file) and returns the path."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  workdir_lib.write_atomically(path, lambda tmp: write_png(fig, tmp, dpi))
  return path


def write_png(fig: Figure, file, dpi: int = 110) -> None:
  """`fig` as a PNG into `file` (a path, whatever its suffix, or a binary file)."""
  fig.savefig(file if hasattr(file, "write") else str(file), format="png", dpi=dpi,
              bbox_inches="tight")


def _mark_stages(ax, boundaries: Sequence[int] | None, sizes: Sequence[int] | None = None):
  """Dashed lines at stage boundaries, and each stage's size at the top of the axes."""
  if not boundaries:
    return
  for b in boundaries:
    ax.axvline(b, color="grey", linestyle="--", linewidth=0.8)
  if sizes:
    edges = [ax.get_xlim()[0], *boundaries, ax.get_xlim()[1]]
    for lo, hi, size in zip(edges[:-1], edges[1:], sizes):
      ax.text((lo + hi) / 2, 0.98, f"{size}px", transform=ax.get_xaxis_transform(),
              ha="center", va="top", fontsize=8, color="grey")


def size_matrix(matrix: Mapping[str, Any], rf: Mapping[str, Any] | None = None) -> Figure:
  """Heatmaps of accuracy, rows (checkpoints or runs) by test size, one per family.

  With `rf` (`scale.rf_coverage`) the columns say which fraction of objects the final
  receptive field covers, and a red line marks the size past which it no longer covers
  the median object.
  """
  groups = list(matrix["accuracy"])
  sizes, rows = matrix["sizes"], matrix["rows"]
  fig = Figure(figsize=(1.0 + 0.75 * len(sizes) * len(groups) + 1.2 * len(groups),
                        1.3 + 0.45 * len(rows)), layout="constrained")
  axes = np.atleast_1d(fig.subplots(1, len(groups), sharey=True))
  for ax, group in zip(axes, groups):
    values = np.array([[np.nan if v is None else v for v in row]
                       for row in matrix["accuracy"][group]])
    image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for (r, c), v in np.ndenumerate(values):
      if np.isfinite(v):
        ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=8,
                color="white" if v < 0.6 else "black")
    labels = [str(s) for s in sizes]
    if rf:
      labels = [f"{s}\n{f:.0%}" if f is not None else str(s)
                for s, f in zip(sizes, rf["covered_fraction"])]
      edge = rf.get("uncovered_from_size")
      if edge is not None and sizes[0] <= edge <= sizes[-1]:
        ax.axvline(np.interp(edge, sizes, np.arange(len(sizes))), color="red", linewidth=1.5)
    ax.set_xticks(range(len(sizes)), labels, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_title(group)
    ax.set_xlabel("test size (px)" + ("; objects within rf" if rf else ""))
  axes[0].set_ylabel("trained (rows)")
  fig.colorbar(image, ax=list(axes), shrink=0.8, label="accuracy")
  if rf:
    fig.suptitle(f"accuracy by test size; red: median object wider than the final rf "
                 f"({rf['features_rf']} px)", fontsize=9)
  return fig


def object_scale(result: Mapping[str, Any], *, classes: bool = True) -> Figure:
  """Accuracy against object scale per family (thick) and per class (thin), with the
  object scale where the receptive field stops covering the object (red); for photos
  (`quantity` "zoom"), against zoom on a log axis with the training range shaded."""
  fig = Figure(figsize=(6.5, 4), layout="constrained")
  ax = fig.subplots()
  x = np.asarray(result["bin_centers"])
  if classes:
    families = {g for g in result["accuracy"] if g != "all"}
    for i, (name, acc) in enumerate(result["class_accuracy"].items()):
      family = result.get("class_family", {}).get(name)
      color = _color(family) if family in families else "grey"
      ax.plot(x, [np.nan if a is None else a for a in acc], color=color, alpha=0.3, linewidth=0.8)
  for i, (group, acc) in enumerate(result["accuracy"].items()):
    ax.plot(x, [np.nan if a is None else a for a in acc], marker="o", linewidth=2,
            color=_color(group, i), label=group)
  if result.get("rf_scale"):
    ax.axvline(result["rf_scale"], color="red", linestyle="--",
               label=f"rf {result['features_rf']} px")
  ax.set_ylabel("accuracy")
  ax.set_ylim(-0.02, 1.02)
  if result.get("quantity") == "zoom":
    ax.set_xscale("log")
    ax.set_xticks(x, [f"{z:.2f}" for z in x])
    ax.minorticks_off()
    ax.axvspan(*result["train_range"], color="grey", alpha=0.15, label="training zooms")
    ax.set_xlabel(f"zoom (stored px per source px), canvas {result['canvas_size']} px")
  else:
    ax.set_xlabel(f"object scale (diameter / canvas), canvas {result['canvas_size']} px")
    top = ax.secondary_xaxis("top", functions=(lambda s: s * result["canvas_size"],
                                               lambda p: p / result["canvas_size"]))
    top.set_xlabel("object diameter (px)")
  ax.legend(fontsize=8)
  return fig


def jaggedness(sweep: Mapping[str, Any], *, max_rows: int = 48, curves: int = 6) -> Figure:
  """Azulay & Weiss's picture of a translation sweep.

  Left: one row per image, one column per shift, white where the true class is in the
  top-k (images with changes first). Right: the true class's probability along the
  sweep for a few of the jagged images.
  """
  correct = np.asarray(sweep["correct"], bool)
  prob = np.asarray(sweep["prob_correct"])
  changes = np.asarray(sweep["changes"])
  shifts = np.asarray(sweep["shifts"])
  order = np.argsort(-changes, kind="stable")[:max_rows]
  fig = Figure(figsize=(10, 0.6 + 0.09 * max(len(order), 20)), layout="constrained")
  left, right = fig.subplots(1, 2, width_ratios=[1, 1.4])
  left.imshow(correct[order], cmap="gray", vmin=0, vmax=1, aspect="auto", interpolation="nearest",
              extent=(shifts[0] - 0.5, shifts[-1] + 0.5, len(order) - 0.5, -0.5))
  left.set_xlabel("shift (px)")
  left.set_ylabel("image (most changes first)")
  left.set_title(f"top-{sweep['topk']} correct (white)", fontsize=9)
  for i in order[:curves]:
    right.plot(shifts, prob[i], marker=".", label=f"#{i} ({changes[i]} changes)")
  right.set_ylim(-0.02, 1.02)
  right.set_xlabel("shift (px)")
  right.set_ylabel("P(true class)")
  right.legend(fontsize=7)
  fig.suptitle(
      f"{sweep['mode']} shifts at {sweep['size']} px: {sweep['mean_changes']:.2f} changes per "
      f"image, {sweep['frac_changed']:.0%} of images change", fontsize=10)
  return fig



def canvas_protocol(result: Mapping[str, Any], *, max_rows: int = 60) -> Figure:
  """Azulay & Weiss's figure of the canvas protocol (`shift.canvas_protocol`): one row per
  image (the first `max_rows`, in the order given), one column per position of the image
  in the canvas, white where the true class is in the top-k; below, the top-k accuracy
  at each position."""
  correct = np.asarray(result["correct"], bool)[:max_rows]
  rows = max(len(correct), 1)
  fig = Figure(figsize=(8, 1.6 + 0.08 * max(rows, 20)), layout="constrained")
  grid, curve = fig.subplots(2, 1, height_ratios=[max(rows, 20) / 10, 1.2], sharex=True)
  _correct_grid(grid, curve, result["correct"], result["positions"],
                result["accuracy_by_position"], result["topk"], max_rows)
  grid.set_title(f"top-{result['topk']} correct (white), {len(correct)} of "
                 f"{result['n_images']} images shown", fontsize=9)
  curve.set_xlabel(f"offset of the image in the canvas along {tuple(result['direction'])} (px)")
  mean = result["mean_changes"]
  fig.suptitle(
      f"{result['size']} px images moved across a {result['canvas']} px canvas: "
      + ("no images" if mean is None else
         f"{mean:.2f} changes per image, {result['frac_changed']:.0%} of images change"),
      fontsize=10)
  return fig


def canvas_by_arm(results: Mapping[str, Mapping[str, Any]], *, max_rows: int = 60) -> Figure:
  """Azulay & Weiss's canvas figure (`canvas_protocol`) for several networks side by
  side, one column each, the same images in the same rows: white where the true class
  is in the top-k at that offset of the image in the canvas; below, the top-k accuracy
  at each offset, and in each title the mean changes per image over every image given."""
  first = next(iter(results.values()))
  rows = min(len(first["correct"]), max_rows)
  fig = Figure(figsize=(2.6 * len(results) + 0.8, 1.8 + 0.08 * max(rows, 20)),
               layout="constrained")
  axes = fig.subplots(2, len(results), height_ratios=[max(rows, 20) / 10, 1.2], squeeze=False,
                      sharex="col")
  for (arm, result), grid, curve in zip(results.items(), axes[0], axes[1]):
    _correct_grid(grid, curve, result["correct"], result["positions"],
                  result["accuracy_by_position"], result["topk"], max_rows)
    mean = result["mean_changes"]
    grid.set_title(f"{arm}\n" + ("no images" if mean is None else
                                 f"{mean:.2f} changes per image"), fontsize=8)
    curve.set_xlabel("offset (px)", fontsize=8)
    if grid is not axes[0, 0]:
      grid.set_ylabel("")
      curve.set_ylabel("")
  fig.suptitle(f"top-{first['topk']} correct (white), {rows} of {first['n_images']} test images:\n"
               f"{first['size']} px, moved 1 px at a time down a {first['canvas']} px canvas",
               fontsize=9)
  return fig


def _correct_grid(grid, curve, correct, positions, accuracy_by_position, topk: int,
                  max_rows: int) -> None:
  """Azulay & Weiss's grid on `grid`: one row per image (the first `max_rows`), one column
  per position, white where the true class is in the top-k, black where not, blue where
  the position was left out (None); the top-k accuracy at each position on `curve`."""
  positions = np.asarray(positions)
  values = np.array([[np.nan if c is None else c for c in row] for row in correct[:max_rows]],
                    np.float64).reshape(-1, len(positions))
  rows = max(len(values), 1)
  grid.imshow(values if values.size else np.zeros((1, len(positions))),
              cmap=colormaps["gray"].with_extremes(bad="tab:blue"), vmin=0, vmax=1,
              aspect="auto", interpolation="nearest",
              extent=(positions[0] - 0.5, positions[-1] + 0.5, rows - 0.5, -0.5))
  grid.set_ylabel("image")
  accuracy = [np.nan if a is None else a for a in accuracy_by_position]
  curve.plot(positions, accuracy, color="black", marker=".", markersize=3)
  curve.set_ylim(-0.02, 1.02)
  curve.set_ylabel(f"top-{topk} acc.")


def shift_grids(result: Mapping[str, Any], *, topk: int = 5, max_rows: int = 60) -> Figure:
  """Azulay & Weiss's figure of `invariance.canvas_shifts` or `invariance.crop_shifts`:
  one panel per direction, images by positions, white where the true class is in the
  top-`topk` (blue: a position left out, as a crop that would cut the object's box);
  below each, the top-`topk` accuracy at each position."""
  directions = result["directions"]
  rows = min(max(result.get("n_images", result.get("images", 1)), 20), max_rows)
  fig = Figure(figsize=(4.5 * len(directions), 1.6 + 0.08 * rows), layout="constrained")
  axes = fig.subplots(2, len(directions), height_ratios=[rows / 10, 1.2], squeeze=False)
  canvas = "canvas_px" in result
  for column, (name, entry) in enumerate(directions.items()):
    measures = entry[f"top{topk}"]
    positions = measures.get("positions", result.get("positions"))
    grid, curve = axes[0, column], axes[1, column]
    _correct_grid(grid, curve, measures["correct"], positions, measures["accuracy_by_position"],
                  topk, max_rows)
    mean = measures["mean_changes"]
    grid.set_title(f"{name}: " + ("no images" if mean is None else
                                  f"{mean:.2f} changes per image, "
                                  f"{measures['frac_changed']:.0%} change"), fontsize=9)
    curve.set_xlabel("position of the image in the canvas (px)" if canvas else
                     "offset of the window from the centre crop (px)")
  if canvas:
    title = (f"{result['object_px']} px images moved across a {result['canvas_px']} px canvas, "
             f"top-{topk} correct (white)")
  else:
    title = (f"{result['crop_px']} px windows of the photographs (shorter side "
             f"{result['resize_px']} px), top-{topk} correct (white)")
  fig.suptitle(title, fontsize=10)
  return fig


def resolution_sweep(result: Mapping[str, Any]) -> Figure:
  """Accuracy against test size (`invariance.resolution_sweep`): top-1 (solid) and top-5
  (dashed) with the stored batch-norm statistics and with them recomputed at each size,
  the peak of each top-1 marked, the network's own size as a grey line."""
  fig = Figure(figsize=(6, 3.8), layout="constrained")
  ax = fig.subplots()
  for i, column in enumerate(dict.fromkeys(r["bn"] for r in result["rows"])):
    rows = [r for r in result["rows"] if r["bn"] == column]
    sizes = [r["size"] for r in rows]
    ax.plot(sizes, [r["top1"] for r in rows], color=f"C{i}", marker="o", markersize=4,
            label=f"top-1, bn {column}")
    ax.plot(sizes, [r["top5"] for r in rows], color=f"C{i}", linestyle="--", alpha=0.6,
            label=f"top-5, bn {column}")
    peak = result["peak"].get(column)
    if peak is not None:
      best = next(r["top1"] for r in rows if r["size"] == peak)
      ax.annotate(f"{peak} px", (peak, best), textcoords="offset points", xytext=(0, 6),
                  ha="center", fontsize=8, color=f"C{i}")
  ax.axvline(result["crop_px"], color="grey", linewidth=0.8)
  ax.set_xlabel("test size (px)")
  ax.set_ylabel("accuracy")
  ax.set_ylim(-0.02, 1.02)
  ax.legend(fontsize=8)
  ax.set_title(f"{result['n_images']} images: shorter side resized to "
               f"{result['resize_px'] / result['crop_px']:.3f} x the test size, the centre "
               "cropped", fontsize=9)
  return fig


def layer_stats(
    rows: Sequence[Mapping[str, Any]],
    *,
    layers: Sequence[str] | None = None,
    boundaries: Sequence[int] | None = None,
    stage_sizes: Sequence[int] | None = None,
) -> Figure:
  """Mean, std and near-zero fraction of each layer's output over training steps."""
  layers = list(layers or activations.layers_in_order(rows))
  fig = Figure(figsize=(13, 3.6), layout="constrained")
  axes = fig.subplots(1, 3)
  cmap = _cmap(len(layers))
  for i, layer in enumerate(layers):
    series = activations.over_training(rows, layer)
    for ax, key in zip(axes, ("mean", "std", "near_zero")):
      marker = "." if len(series["step"]) < 20 else None
      ax.plot(series["step"], series[key], color=cmap(i), label=layer, marker=marker)
  for ax, key in zip(axes, ("mean", "std", "fraction <= 0.05")):
    ax.set_title(key)
    ax.set_xlabel("step")
    _mark_stages(ax, boundaries, stage_sizes)
  axes[2].set_ylim(-0.02, 1.02)
  if len(layers) <= 12:
    axes[2].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
  else:  # Too many for a legend: colour is depth, first layer dark.
    mappable = cm.ScalarMappable(colors.Normalize(0, len(layers) - 1), "viridis")
    fig.colorbar(mappable, ax=list(axes), label=f"layer ({layers[0]} ... {layers[-1]})")
  return fig


def _cmap(n: int) -> Callable:
  base = colormaps["viridis"]
  return lambda i: base(i / max(n - 1, 1))


def _evenly_spaced(layers: Sequence[str], most: int) -> list[str]:
  """`layers`, or `most` of them evenly spaced in depth from the first to the last."""
  if len(layers) <= most:
    return list(layers)
  return [layers[i] for i in sorted(set(np.linspace(0, len(layers) - 1, most).round().astype(int)))]


def _histograms(ax, series: Mapping[str, np.ndarray]) -> None:
  """One layer's activation histograms over training (`activations.over_training`) as an
  image: time on x, activation value on y, `log1p` of the counts."""
  steps = series["step"]
  half = np.median(np.diff(steps)) / 2 if len(steps) > 1 else 0.5
  lo, hi = HIST_RANGE
  ax.imshow(np.log1p(series["hist"]).T, origin="lower", aspect="auto", cmap="viridis",
            extent=(steps[0] - half, steps[-1] + half, lo, hi), interpolation="nearest")


def colorful_dimension(
    rows: Sequence[Mapping[str, Any]],
    *,
    layers: Sequence[str] | None = None,
    boundaries: Sequence[int] | None = None,
    columns: int = 4,
    max_layers: int = 16,
) -> Figure:
  """fastai's "colorful dimension": per layer, the 40-bin histograms over [0, 10] of its
  output stacked over recorded steps, `log1p`, time on x and activation value on y. A
  network with more than `max_layers` layers shows that many, evenly spaced in depth from
  the first to the last (a ResNet-50 has about 120; all of them make a figure no one can
  read, and take seconds to draw)."""
  layers = list(layers or activations.layers_in_order(rows))
  total = len(layers)
  layers = _evenly_spaced(layers, max_layers)
  columns = min(columns, len(layers)) or 1
  nrows = -(-len(layers) // columns)
  fig = Figure(figsize=(3.2 * columns, 2.4 * nrows), layout="constrained")
  axes = np.atleast_1d(fig.subplots(nrows, columns, squeeze=False)).ravel()
  for ax, layer in zip(axes, layers):
    series = activations.over_training(rows, layer)
    if len(series["step"]) == 0:
      continue
    _histograms(ax, series)
    ax.set_title(layer, fontsize=8)
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel("activation", fontsize=8)
    for b in boundaries or ():
      ax.axvline(b, color="white", linestyle="--", linewidth=0.8)
  for ax in axes[len(layers):]:
    ax.set_axis_off()
  if len(layers) < total:
    fig.suptitle(f"{len(layers)} of {total} layers, evenly spaced in depth", fontsize=9)
  return fig


def near_zero_by_arm(arms: Mapping[str, Sequence[Mapping[str, Any]]], *,
                     max_layers: int = 6) -> Figure:
  """Claim 6's figure, one row per arm: the dead-unit measure over training (the fraction
  of ReLU outputs <= 0.05, the mean over the network's ReLUs at each recorded step), one
  thin line per seed and their mean bold, with the learning rate the arm trained at
  (dashed, right axis); then fastai's colorful dimension (`colorful_dimension`) of each
  ReLU of its first seed, up to `max_layers` evenly spaced in depth. `arms` maps an arm
  to its seeds, each `{"seed", "stats": activation_stats rows, "lr": (steps, values)}`."""
  relus = {arm: [layer for layer in activations.layers_in_order(seeds[0]["stats"])
                 if is_relu(layer)] for arm, seeds in arms.items()}
  relus = {arm: _evenly_spaced(layers, max_layers) for arm, layers in relus.items()}
  columns = 1 + max((len(layers) for layers in relus.values()), default=0)
  fig = Figure(figsize=(4.2 + 2.2 * (columns - 1), 2.3 * len(arms)), layout="constrained")
  axes = fig.subplots(len(arms), columns, squeeze=False)
  for row, (arm, seeds) in zip(axes, arms.items()):
    ax = row[0]
    curves = []
    for seed in seeds:
      layers = [layer for layer in activations.layers_in_order(seed["stats"])
                if is_relu(layer)]
      series = [activations.over_training(seed["stats"], layer) for layer in layers]
      steps = series[0]["step"]
      curves.append((steps, np.mean([s["near_zero"] for s in series], axis=0)))
      ax.plot(steps, curves[-1][1], color="tab:blue", linewidth=0.6, alpha=0.5)
    by_step = [dict(zip(steps.tolist(), values)) for steps, values in curves]
    common = sorted(set.intersection(*(set(d) for d in by_step)))
    mean = [np.mean([d[t] for d in by_step]) for t in common]
    label = f"mean of {len(curves)} seeds" if len(curves) > 1 else f"seed {seeds[0]['seed']}"
    ax.plot(common, mean, color="tab:blue", linewidth=2, label=label)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("ReLU outputs <= 0.05", fontsize=8)
    ax.set_title(arm, fontsize=9, loc="left")
    ax.set_xlabel("step", fontsize=8)
    lr_steps, lr = seeds[0]["lr"]
    if len(lr_steps):
      twin = ax.twinx()
      twin.plot(lr_steps, lr, color="tab:orange", linestyle="--", linewidth=1)
      twin.set_ylim(0, 1.1 * max(float(np.max(lr)), 1e-12))
      twin.ticklabel_format(axis="y", useOffset=False)
      twin.set_ylabel("learning rate", fontsize=8, color="tab:orange")
      twin.tick_params(labelsize=7)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="upper right")
    for ax, layer in zip(row[1:], relus[arm]):
      _histograms(ax, activations.over_training(seeds[0]["stats"], layer))
      if ax is row[1]:
        ax.set_ylabel("ReLU output", fontsize=8)
      ax.set_title(f"{layer} (seed {seeds[0]['seed']})", fontsize=8)
      ax.tick_params(labelsize=7)
    for ax in row[1 + len(relus[arm]):]:
      ax.set_axis_off()
  return fig


def schedules(curves: Mapping[str, Any], *, logged: Sequence[Mapping[str, Any]] = ()) -> Figure:
  """Learning rate and momentum over steps (lines, `Run.schedule_curves()`), the values
  logged in training (dots, `metrics.jsonl` train rows), stage boundaries dashed."""
  fig = Figure(figsize=(10, 3.4), layout="constrained")
  axes = fig.subplots(1, 2)
  for ax, key in zip(axes, ("lr", "momentum")):
    ax.plot(curves["step"], curves[key], color="tab:blue")
    points = [(r["step"], r[key]) for r in logged if key in r]
    if points:
      # A train row at step s holds the value the schedule gave step s - 1.
      ax.plot([p[0] - 1 for p in points], [p[1] for p in points], "o", color="tab:orange",
              markersize=3, label="logged")
      ax.legend(fontsize=8)
    ax.set_title(key)
    ax.set_xlabel("step")
    _mark_stages(ax, curves.get("boundaries"), curves.get("stage_sizes"))
  return fig


def ensemble(result: Mapping[str, Any]) -> Figure:
  """Accuracy of each single test size and of the multi-size ensemble, per family."""
  labels = [f"{s}px" for s in result["sizes"]] + ["ensemble"]
  entries = [result["single"][str(s)] for s in result["sizes"]] + [result["ensemble"]]
  groups = ["all", *entries[0]["family"]]
  fig = Figure(figsize=(1.5 + 0.9 * len(labels) * len(groups) / 2, 3.4), layout="constrained")
  ax = fig.subplots()
  width = 0.8 / len(groups)
  x = np.arange(len(labels))
  for i, group in enumerate(groups):
    values = [e["all"] if group == "all" else e["family"][group] for e in entries]
    ax.bar(x + (i - (len(groups) - 1) / 2) * width, [np.nan if v is None else v for v in values],
           width, color=_color(group, i), label=group)
  ax.set_xticks(x, labels)
  ax.set_ylim(0, 1.05)
  ax.set_ylabel("accuracy")
  ax.set_title("single test sizes vs the softmax averaged over all of them", fontsize=9)
  ax.legend(fontsize=8)
  return fig


def lr_find(result: Mapping[str, Any], *, skip_end: int = 5, recommended: str = "minimum") -> Figure:
  """The LR range test (`progressive lr-find`): smoothed and raw loss against the LR (log
  x-axis), as fastai plots it (the last `skip_end` points left out), with the
  suggestions and the `recommended` one marked."""

  def array(values):
    return np.asarray([np.nan if v is None else v for v in values], np.float64)

  lrs, raw, smoothed = array(result["lrs"]), array(result["losses"]), array(result["smoothed"])
  shown = max(len(lrs) - skip_end, 1)
  fig = Figure(figsize=(7, 4.5))
  ax = fig.subplots()
  ax.plot(lrs[:shown], raw[:shown], ".", color="0.75", markersize=3, label="loss")
  beta = result["setup"]["beta"]
  ax.plot(lrs[:shown], smoothed[:shown], color="C0", label=f"smoothed (beta {beta})")
  markers = {"minimum": "o", "steep": "s", "valley": "^"}
  for (name, s), color in zip(result["suggestions"].items(), ("C1", "C2", "C3")):
    if s is None:
      continue
    label = f"{name}: {s['lr']:.3g}" + (" (LR at the minimum / 10)" if name == "minimum" else "")
    ax.plot(s["at_lr"], s["loss"], markers[name], color=color, markersize=8, label=label)
  chosen = result["suggestions"].get(recommended)
  if chosen is not None:
    ax.axvline(chosen["lr"], color="C1", linestyle="--", linewidth=1,
               label=f"suggested lr_max {chosen['lr']:.3g}")
  finite = smoothed[:shown][np.isfinite(smoothed[:shown])]
  if len(finite):
    low, high = finite.min(), finite.max()
    pad = 0.05 * (high - low or 1.0)
    ax.set_ylim(low - pad, high + pad)
  setup = result["setup"]
  ax.set_xscale("log")
  ax.set_xlabel("learning rate")
  ax.set_ylabel("training loss")
  ax.set_title(
      f"LR range test: {setup['model']}, {setup['optimizer']}, {setup['size']}px, "
      f"batch {setup['batch_size']}", fontsize=10,
  )
  ax.legend(loc="best", fontsize=8)
  fig.tight_layout()
  return fig


def confusion_matrix(result: Mapping[str, Any], *, max_labelled: int = 30) -> Figure:
  """The confusion matrix of `interpret.interpretation` (true class down, predicted
  across), counts written in the cells and class names on the axes up to `max_labelled`
  classes."""
  counts = np.asarray(result["confusion"])
  names = result["class_names"]
  k = len(names)
  side = min(2.5 + 0.4 * k, 14)
  fig = Figure(figsize=(side + 1.2, side), layout="constrained")
  ax = fig.subplots()
  image = ax.imshow(counts, cmap="Blues", interpolation="nearest")
  if k <= max_labelled:
    ax.set_xticks(range(k), names, rotation=90, fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    top = counts.max() if counts.size else 0
    for (t, p), n in np.ndenumerate(counts):
      if n:
        ax.text(p, t, str(n), ha="center", va="center", fontsize=7,
                color="white" if n > top / 2 else "black")
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  fig.colorbar(image, ax=ax, shrink=0.8, label="images")
  accuracy = "n/a" if result["accuracy"] is None else f"{result['accuracy']:.2f}"
  ax.set_title(f"{result['num_images']} test images at {result.get('size', '?')} px, "
               f"accuracy {accuracy}", fontsize=9)
  return fig


def _image_grid(images: Sequence[np.ndarray], titles: Sequence[str], *, columns: int,
                cell: float = 1.8, suptitle: str | None = None) -> Figure:
  """Images in rows of `columns`, each titled; empty cells blank."""
  n = max(len(images), 1)
  columns = max(1, min(columns, n))
  rows = -(-n // columns)
  fig = Figure(figsize=(cell * columns, (cell + 0.35) * rows + (0.3 if suptitle else 0)),
               layout="constrained")
  axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
  for ax in axes:
    ax.set_axis_off()
  for ax, image, title in zip(axes, images, titles):
    ax.imshow(np.asarray(image, np.uint8), interpolation="nearest")
    ax.set_title(title, fontsize=7)
  if suptitle:
    fig.suptitle(suptitle, fontsize=9)
  return fig


def top_losses(result: Mapping[str, Any], images: np.ndarray, *, columns: int = 3) -> Figure:
  """fastai's `plot_top_losses`: the test images with the highest loss, each titled with
  its true and predicted class, the loss and the predicted class's probability."""
  rows = result["top_losses"]
  titles = [f"true {r['true']}\npredicted {r['predicted']}\nloss {r['loss']:.2f}, "
            f"p {r['probability']:.2f}" for r in rows]
  return _image_grid(list(images[:len(rows)]), titles, columns=columns, cell=2.0,
                     suptitle=f"top losses of {result['num_images']} test images at "
                              f"{result.get('size', '?')} px")


def show_batch(stages: Sequence[Mapping[str, Any]], class_names: Sequence[str]) -> Figure:
  """fastai's `show_batch` for every stage: one row per stage of its first training
  inputs at the stage's size, drawn to one pixel scale (a 16 px stage's images half as
  wide as a 32 px stage's), each labelled with its class."""
  stages = [s for s in stages if len(s["image"])]
  if not stages:
    return Figure(figsize=(4, 1))
  gap = max(s["size"] for s in stages) // 8
  widths = [len(s["image"]) * (s["size"] + gap) - gap for s in stages]
  fig = Figure(figsize=(min(2 + 0.05 * max(widths), 18), 1.2 + 0.045 * sum(s["size"] + 3 * gap
                                                                           for s in stages)),
               layout="constrained")
  axes = np.atleast_1d(fig.subplots(len(stages), 1, squeeze=False,
                                    height_ratios=[s["size"] + 3 * gap for s in stages]).ravel())
  for ax, stage, width in zip(axes, stages, widths):
    size = stage["size"]
    mosaic = np.full((size, width, 3), 255, np.uint8)
    centres = []
    for i, image in enumerate(stage["image"]):
      left = i * (size + gap)
      mosaic[:, left:left + size] = image
      centres.append(left + size / 2)
    ax.imshow(mosaic, interpolation="nearest", extent=(0, width, size, 0))
    ax.set_xlim(0, max(widths))
    ax.set_xticks(centres, [str(class_names[int(c)]) for c in stage["label"]], fontsize=7,
                  rotation=30 if len(stage["label"]) > 6 else 0)
    ax.set_yticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
      spine.set_visible(False)
    ax.set_ylabel(f"stage {stage['stage']}\n{size} px", fontsize=8, rotation=0, ha="right",
                  va="center")
  fig.suptitle("first training inputs of each stage, as the pipeline made them", fontsize=9)
  return fig


def training_curves(curves: Mapping[str, Any]) -> Figure:
  """Loss and accuracy against steps (`interpret.training_curves`): training rows as
  lines, evaluation at each stage's size as dots, stage boundaries dashed."""
  fig = Figure(figsize=(10, 3.4), layout="constrained")
  axes = fig.subplots(1, 2)

  def values(series):
    return [np.nan if v is None else v for v in series]

  for ax, key in zip(axes, ("loss", "accuracy")):
    train, evals = curves["train"], curves["eval"]
    if train["step"]:
      ax.plot(train["step"], values(train[key]), color="tab:blue", label="train",
              marker="." if len(train["step"]) < 20 else None)
    if evals["step"]:
      ax.plot(evals["step"], values(evals[key]), "o", color="tab:orange",
              label="eval at the stage size")
    ax.set_title(key)
    ax.set_xlabel("step")
    if key == "accuracy":
      ax.set_ylim(-0.02, 1.02)
    if train["step"] or evals["step"]:
      ax.legend(fontsize=8)
    _mark_stages(ax, curves.get("boundaries"), curves.get("stage_sizes"))
  return fig
