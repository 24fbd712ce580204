"""How invariant a network is to where an object sits and to the test resolution, measured
on photographs as the research's sources measured pretrained ImageNet networks. Any run
(imported or trained) and any folder of images (`progressive.data.views`).

- `canvas_shifts` (Azulay & Weiss 2019, their first protocol): each image shrunk to
  `object_px`, embedded in a `canvas_px` canvas (the mean colour, or black) and moved one
  pixel at a time down and across; jaggedness (the true class entering or leaving the
  top-k between neighbouring positions, per image), the fraction of images that change,
  and accuracy along the path. Defaults (`progressive invariance`): the canvas is the
  network's own input (224 px for ImageNet networks) and the object 100/224 of it, their
  100 px images in a 224 px canvas as we read their protocol.
- `crop_shifts` (their second protocol): a `crop_px` window of the resized photograph
  moved one pixel at a time across and down through the centre, nothing but the
  photograph's own pixels in view; with object boxes (ImageNet's validation XML,
  `read_boxes`), positions that would cut the box are left out.
- `consistency` (Zhang 2019): two random `crop_px` windows of the `resize_px` centre
  square; the fraction of images whose top-1 agrees, averaged over draws.
- `resolution_sweep` (FixRes, Touvron et al. 2019): accuracy of the standard view at
  each test size with the stored batch-norm statistics and with statistics recomputed
  at that size from other images.

Each shift measure takes `predict(images [B, S, S, 3] uint8 or 0..255 float) -> logits
[B, classes]` at the images' own side (`shift.at_view_size(run.predict)`), so that it
can be checked on constructed predictors; every interval is a 95% bootstrap over images.
"""

import csv
import dataclasses
import io
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from xml.etree import ElementTree

import numpy as np
from etils import epath
from PIL import Image

from progressive import errors
from progressive.analysis import plots, shift
from progressive.data import views
from progressive.training import workdir as workdir_lib

DIRECTIONS = {"vertical": (0, 1), "horizontal": (1, 0)}
TOPK = (1, 5)
# FixRes's test sizes for a network trained at 224 px; other networks scale them.
SIZES = (128, 160, 192, 224, 256, 288, 320, 384, 448)
IMAGENET_SIZE = 224
AW_OBJECT, AW_CANVAS = 100, 224  # Azulay & Weiss: 100 px images in a 224 px canvas.
Box = tuple[float, float, float, float]  # (xmin, ymin, xmax, ymax) in pixels.
EXPERIMENTS = ("canvas", "crops", "consistency", "resolution")


class InvarianceError(errors.Error, ValueError):
  """Settings an invariance analysis cannot run with (a canvas no larger than the object,
  a size the network does not run at, box files that match no image)."""


def fill_colour(fill, mean: Sequence[float] = (0.485, 0.456, 0.406)) -> np.ndarray:
  """A canvas's colour in 0..255 RGB: `"mean"` (the normalisation `mean`, 0..1, times 255:
  the network sees zeros), `"black"`, or three values in 0..255."""
  if isinstance(fill, str):
    if fill == "mean":
      return np.asarray(mean, np.float32) * 255.0
    if fill == "black":
      return np.zeros(3, np.float32)
    raise ValueError(f"fill must be 'mean', 'black' or three values in 0..255, got {fill!r}.")
  colour = np.asarray(fill, np.float32).reshape(-1)
  if colour.shape != (3,) or colour.min() < 0 or colour.max() > 255:
    raise ValueError(f"fill must be 'mean', 'black' or three values in 0..255, got {fill!r}.")
  return colour


def default_object_px(canvas_px: int) -> int:
  """Azulay & Weiss's object side for a `canvas_px` canvas: 100/224 of it."""
  return max(1, round(canvas_px * AW_OBJECT / AW_CANVAS))


def default_sizes(crop_px: int) -> list[int]:
  """FixRes's test sizes (`SIZES`, for 224 px) scaled to a network evaluated at `crop_px`."""
  return sorted({max(1, round(s * crop_px / IMAGENET_SIZE)) for s in SIZES})


def fixed_size(run) -> int | None:
  """The only input size `run`'s network takes (a `"flatten"` head, tied to its training
  size), or None where it runs at every size."""
  return run.train_size if run.config.model.get("head") == "flatten" else None


def _ci(values: np.ndarray, seed: int) -> list[float] | None:
  return shift._bootstrap(values, np.random.default_rng(seed))  # pylint: disable=protected-access


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, topk: Sequence[int] = TOPK) -> dict:
  """`{"top1": ..., "top5": ...}`: the fraction of `logits` `[N, C]` whose label is in the top k."""
  labels = np.asarray(labels, np.int64)
  return {f"top{k}": float(shift.topk_correct(logits, labels, k).mean()) if len(labels) else None
          for k in topk}


def _predict_batches(predict: Callable, views_iter, batch_size: int) -> np.ndarray:
  """Logits of a sequence of equally sized views, `batch_size` at a time: `[N, C]`."""
  out, batch = [], []
  for view in views_iter:
    batch.append(view)
    if len(batch) == batch_size:
      out.append(np.asarray(predict(np.stack(batch))))
      batch = []
  if batch:
    out.append(np.asarray(predict(np.stack(batch))))
  return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


def canvas_shifts(
    predict: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    labels: np.ndarray,
    *,
    object_px: int,
    canvas_px: int,
    fill="mean",
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    topk: Sequence[int] = TOPK,
    directions: Sequence[str] = ("vertical", "horizontal"),
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
  """Azulay & Weiss's canvas protocol along each of `directions` (`DIRECTIONS`).

  `images` `[N, S, S, 3]` (square views, 0..255; resized to `object_px` where `S` differs,
  bilinear) are embedded in a `canvas_px` canvas of `fill_colour(fill, mean)` and moved
  one pixel at a time across its free range (`shift.canvas_positions`; the other axis
  centred). The views of a direction are predicted once and measured for every k of
  `topk` (`shift.canvas_logits`, `shift.canvas_measures`). Returns `object_px`,
  `canvas_px`, `fill` (RGB), `n_images`, `topk`, and per direction its `direction`
  `(dx, dy)` and per k (`"top1"`, `"top5"`) the measures of `shift.canvas_measures`:
  `mean_changes` (jaggedness) and `frac_changed` with bootstrap intervals, `accuracy`,
  `accuracy_by_position`, and the per-image `correct` grid `[N][T]` of the figure.
  """
  colour = fill_colour(fill, mean)
  result = {"object_px": int(object_px), "canvas_px": int(canvas_px),
            "fill": [float(c) for c in colour], "n_images": len(labels),
            "topk": [int(k) for k in topk], "directions": {}}
  for name in directions:
    direction = DIRECTIONS[name]
    corners, logits = shift.canvas_logits(
        predict, images, labels, size=object_px, canvas=canvas_px, direction=direction,
        fill=colour, batch_size=batch_size)
    entry = {"direction": list(direction)}
    for k in topk:
      entry[f"top{k}"] = shift.canvas_measures(
          logits, labels, corners, size=object_px, canvas=canvas_px, topk=k,
          direction=direction, seed=seed)
    result["directions"][name] = entry
  return result


# --- Their second protocol: windows of the photograph itself --------------------------------


def read_boxes(xml_path, image_size: tuple[int, int], class_name: str | None = None) -> Box | None:
  """The union of the object boxes of `class_name` (every object's if None) in an ImageNet
  annotation (`<annotation><size><width>..<object><name>..<bndbox><xmin>..`), scaled from
  the annotation's `<size>` to `image_size` `(width, height)`: `(xmin, ymin, xmax, ymax)`,
  or None if it has no such object."""
  root = ElementTree.parse(str(xml_path)).getroot()
  size = root.find("size")
  width, height = image_size
  if size is not None:
    sx = width / float(size.findtext("width"))
    sy = height / float(size.findtext("height"))
  else:  # No size recorded: the boxes are taken to be in the image's own pixels.
    sx = sy = 1.0
  boxes = []
  for obj in root.iter("object"):
    if class_name is not None and (obj.findtext("name") or "").strip() != class_name:
      continue
    box = obj.find("bndbox")
    x0, y0, x1, y1 = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
    boxes.append((x0 * sx, y0 * sy, x1 * sx, y1 * sy))
  if not boxes:
    return None
  boxes = np.asarray(boxes)
  return (float(boxes[:, 0].min()), float(boxes[:, 1].min()),
          float(boxes[:, 2].max()), float(boxes[:, 3].max()))


def crop_corners(height: int, width: int, crop_px: int, offsets: np.ndarray,
                 direction: Sequence[int], box: Box | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Top-left corners `(x, y)` `[T, 2]` of `crop_px` windows of a `height` x `width` image
  moved by `offsets` px from the centre crop along `direction`, and whether each is kept
  `[T]`: inside the image and, with a `box` (xmin, ymin, xmax, ymax), holding all of it."""
  top, left = views.center_corner(height, width, crop_px)
  dx, dy = (int(d) for d in direction)
  offsets = np.asarray(offsets, np.int64)
  corners = np.stack([left + dx * offsets, top + dy * offsets], axis=1)
  x, y = corners[:, 0], corners[:, 1]
  kept = (x >= 0) & (y >= 0) & (x + crop_px <= width) & (y + crop_px <= height)
  if box is not None:
    x0, y0, x1, y1 = box
    kept &= (x <= np.floor(x0)) & (y <= np.floor(y0))
    kept &= (x + crop_px >= np.ceil(x1)) & (y + crop_px >= np.ceil(y1))
  return corners, kept


def _path_measures(correct: np.ndarray, kept: np.ndarray, seed: int) -> dict[str, Any]:
  """Jaggedness of per-image paths whose kept positions `kept` `[N, T]` may be fewer than
  `T`: changes are counted between neighbouring kept positions; images with fewer than
  two kept positions are left out."""
  pairs = kept[:, 1:] & kept[:, :-1]
  changes = np.sum(pairs & (correct[:, 1:] != correct[:, :-1]), axis=1)
  measured = kept.sum(axis=1) >= 2
  changes = changes[measured]
  views_kept = kept[measured]
  right = np.where(views_kept, correct[measured], False)
  per_position = views_kept.sum(axis=0)
  return {
      "n_images": int(measured.sum()),
      "left_out": int((~measured).sum()),
      "measured": np.flatnonzero(measured).tolist(),  # The rows of `correct`, by image.
      "mean_positions": float(views_kept.sum(axis=1).mean()) if measured.any() else None,
      "mean_changes": float(changes.mean()) if len(changes) else None,
      "frac_changed": float((changes > 0).mean()) if len(changes) else None,
      "mean_changes_ci": _ci(changes, seed),
      "frac_changed_ci": _ci(changes > 0, seed),
      "accuracy": float(right.sum() / views_kept.sum()) if views_kept.any() else None,
      "accuracy_by_position": [float(r / n) if n else None
                               for r, n in zip(right.sum(axis=0), per_position)],
      "changes": changes.tolist(),
      "correct": [[int(c) if k else None for c, k in zip(row_c, row_k)]
                  for row_c, row_k in zip(correct[measured], views_kept)],
  }


def crop_shifts(
    predict: Callable[[np.ndarray], np.ndarray],
    pil_images: Sequence[Image.Image],
    labels: np.ndarray,
    *,
    crop_px: int,
    resize_px: int,
    interpolation: str = "bilinear",
    max_shift: int | None = None,
    boxes: Sequence[Box | None] | None = None,
    topk: Sequence[int] = TOPK,
    directions: Sequence[str] = ("vertical", "horizontal"),
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
  """Azulay & Weiss's crop protocol: each photograph resized (shorter side `resize_px`,
  `views.resize_shorter`) and a `crop_px` window moved one pixel at a time from
  `-max_shift` to `max_shift` px about the centre crop along each of `directions` (by
  default `(resize_px - crop_px) // 2`, the whole range of the shorter side).

  With `boxes` (one per image, in the photograph's pixels, e.g. `read_boxes`; None for
  an image without one) the box is scaled with the resize and positions whose window
  would cut it are left out; an image with fewer than two positions left on a path is
  left out of that direction and counted (`left_out`). Returns per direction and k the
  measures of `canvas_shifts` (changes counted between neighbouring kept positions; the
  `correct` grid holds None where a position was left out) and `mean_positions`.
  """
  labels = np.asarray(labels, np.int64)
  max_shift = (resize_px - crop_px) // 2 if max_shift is None else int(max_shift)
  offsets = np.arange(-max_shift, max_shift + 1)
  resized = [np.asarray(views.resize_shorter(image, resize_px, interpolation))
             for image in pil_images]
  result = {"crop_px": int(crop_px), "resize_px": int(resize_px), "interpolation": interpolation,
            "max_shift": max_shift, "positions": offsets.tolist(), "images": len(labels),
            "boxes": None if boxes is None else int(sum(b is not None for b in boxes)),
            "topk": [int(k) for k in topk], "directions": {}}
  for name in directions:
    direction = DIRECTIONS[name]
    kept = np.zeros((len(labels), len(offsets)), bool)
    windows = []  # (image, position, corner) of every kept window.
    for i, image in enumerate(resized):
      box = None
      if boxes is not None:
        if boxes[i] is None:
          continue  # No box: the image is left out.
        source = pil_images[i].size
        sx, sy = image.shape[1] / source[0], image.shape[0] / source[1]
        x0, y0, x1, y1 = boxes[i]
        box = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
      corners, kept[i] = crop_corners(*image.shape[:2], crop_px, offsets, direction, box)
      windows += [(i, t, corners[t]) for t in np.flatnonzero(kept[i])]
    logits = _predict_batches(
        predict, (resized[i][y:y + crop_px, x:x + crop_px] for i, _, (x, y) in windows),
        batch_size)
    where = tuple(np.asarray([(i, t) for i, t, _ in windows], np.int64).reshape(-1, 2).T)
    entry = {"direction": list(direction)}
    for k in topk:
      correct = np.zeros(kept.shape, bool)
      if windows:
        correct[where] = shift.topk_correct(logits, labels[where[0]], k)
      entry[f"top{k}"] = _path_measures(correct, kept, seed)
    result["directions"][name] = entry
  return result


# --- Zhang's consistency ------------------------------------------------------------------


def consistency(
    predict: Callable[[np.ndarray], np.ndarray],
    pil_images: Sequence[Image.Image],
    *,
    resize_px: int = 256,
    crop_px: int = 224,
    interpolation: str = "bilinear",
    draws: int = 5,
    seed: int = 0,
    labels: np.ndarray | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
  """Zhang's consistency: per draw, two `crop_px` windows of each image's `resize_px`
  centre square (`Resize(resize_px)`, `CenterCrop(resize_px)`, as his evaluation), each
  corner uniform over the `resize_px - crop_px + 1` positions on each axis (his code
  draws `randint(32)`, leaving out the last); the fraction of images whose top-1 classes
  agree, averaged over `draws`.

  Returns `consistency` with a bootstrap interval over images (each image's agreement
  averaged over the draws), `by_draw`, `n_images`, the `offsets` `[N][draws][2][2]`
  (per view its `(x, y)`), and with `labels` the top-1 `accuracy` of the windows.
  """
  squares = views.standard_views(pil_images, resize_px, resize_px, interpolation)
  n, free = len(squares), resize_px - crop_px
  offsets = np.random.default_rng(seed).integers(0, free + 1, size=(n, draws, 2, 2))
  windows = (squares[i, y:y + crop_px, x:x + crop_px]
             for i in range(n) for d in range(draws) for x, y in offsets[i, d])
  logits = _predict_batches(predict, windows, batch_size)
  pred = np.argmax(logits, axis=-1).reshape(n, draws, 2) if n else np.zeros((0, draws, 2), int)
  agree = pred[..., 0] == pred[..., 1]
  per_image = agree.mean(axis=1)
  result = {
      "resize_px": int(resize_px), "crop_px": int(crop_px), "interpolation": interpolation,
      "draws": int(draws), "n_images": n,
      "consistency": float(per_image.mean()) if n else None,
      "consistency_ci": _ci(per_image, seed),
      "by_draw": agree.mean(axis=0).tolist() if n else [],
      "offsets": offsets.tolist(),
  }
  if labels is not None:
    result["accuracy"] = float((pred == np.asarray(labels)[:, None, None]).mean()) if n else None
  return result


# --- FixRes: accuracy against test size -----------------------------------------------------


def bn_label(num_images: int | None) -> str:
  """How a row says which batch-norm statistics it used."""
  return "stored" if num_images is None else f"recomputed from {num_images} images"


def resolution_sweep(
    run,
    pil_images: Sequence[Image.Image],
    labels: np.ndarray,
    *,
    sizes: Sequence[int] | None = None,
    bn_images: Sequence[Image.Image] | None = None,
) -> dict[str, Any]:
  """Top-1 and top-5 accuracy of `run` (an `analysis.Run`) on the standard view of each
  image at each test size `S` of `sizes` (default `default_sizes` of its crop): the
  shorter side resized in the run's own ratio to the crop (`views.view_settings(run, S)`:
  `round(S * 256 / 224)` for an ImageNet network), the centre `S` px cropped, predicted
  at `S`.

  Each size has a row with the stored batch-norm statistics (`"bn": "stored"`) and, with
  `bn_images` (other photographs, e.g. a training folder) and a network with batch norm,
  one with them recomputed at `S` from those images' standard views at `S`
  (`Run.recalibrated`; `"bn": "recomputed from N images"`). A network fixed at one size
  (`fixed_size`) runs only there; the other sizes are listed in `left_out`. `peak`:
  the size of the best top-1 per `bn` column.
  """
  resize_px, crop_px, interpolation = views.view_settings(run)
  labels = np.asarray(labels, np.int64)
  sizes = default_sizes(crop_px) if sizes is None else sorted({int(s) for s in sizes})
  only = fixed_size(run)
  recompute = bn_images is not None and len(bn_images) > 0 and run.has_batch_norm
  result = {"resize_px": resize_px, "crop_px": crop_px, "interpolation": interpolation,
            "n_images": len(labels), "bn_images": len(bn_images) if recompute else None,
            "has_batch_norm": bool(run.has_batch_norm), "sizes": [], "rows": [],
            "left_out": {}, "peak": {}}
  for size in sizes:
    if only is not None and size != only:
      result["left_out"][str(size)] = f"the network runs only at {only} px (a flatten head)"
      continue
    resize = views.view_settings(run, size)[0]
    test = views.standard_views(pil_images, resize, size, interpolation)
    result["sizes"].append(size)
    columns = [(None, run)]
    if recompute:
      bn_views = views.standard_views(bn_images, resize, size, interpolation)
      columns.append((len(bn_images), run.recalibrated(size, images=bn_views)))
    for count, scored in columns:
      row = {"size": size, "resize_px": resize, "bn": bn_label(count)}
      row.update(topk_accuracy(scored.predict(test, size), labels))
      result["rows"].append(row)
  for column in dict.fromkeys(r["bn"] for r in result["rows"]):
    rows = [r for r in result["rows"] if r["bn"] == column and r["top1"] is not None]
    if rows:
      result["peak"][column] = max(rows, key=lambda r: r["top1"])["size"]
  return result


# --- Every experiment on one run, and the table over runs -----------------------------------


@dataclasses.dataclass(frozen=True)
class Options:
  """What `analyze` runs; None means the run's own value (`settings`)."""

  experiments: Sequence[str] = EXPERIMENTS
  object_px: int | None = None  # Default: 100/224 of the canvas (Azulay & Weiss).
  canvas_px: int | None = None  # Default: the run's crop size.
  fill: Any = "mean"  # fill_colour: "mean", "black" or (r, g, b).
  max_shift: int | None = None  # Crops: default (resize_px - crop_px) // 2.
  draws: int = 5  # Consistency: pairs of windows per image.
  sizes: Sequence[int] | None = None  # Resolution: default default_sizes(crop_px).
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class Images:
  """The photographs every run sees: PIL RGB `images`, each one's class folder name in
  `classes`, its file in `paths`, and the object `boxes` (or None)."""

  images: Sequence[Image.Image]
  classes: Sequence[str]
  paths: Sequence[str]
  boxes: Sequence[Box | None] | None = None


def run_name(run) -> str:
  """How the table names a run: an imported network's architecture, else its workdir's name."""
  pretrained = run.config.get("pretrained")
  if pretrained is not None and pretrained.get("arch") is not None:
    return str(pretrained["arch"])
  return epath.Path(run.workdir).name


def settings(run, options: Options) -> dict[str, Any]:
  """The view and canvas sizes of `run` under `options`: `resize_px`, `crop_px`,
  `interpolation` (`views.view_settings`), `canvas_px` and `object_px`;
  `InvarianceError` in one line for a canvas no larger than the object or one the
  network does not run at."""
  resize_px, crop_px, interpolation = views.view_settings(run)
  canvas_px = int(options.canvas_px or crop_px)
  object_px = int(options.object_px or default_object_px(canvas_px))
  if "canvas" in options.experiments:
    if object_px >= canvas_px:
      raise InvarianceError(f"--object_px={object_px} must be smaller than the canvas "
                            f"({canvas_px} px) for the images to move in it.")
    only = fixed_size(run)
    if only is not None and canvas_px != only:
      raise InvarianceError(
          f"{run.workdir} runs only at {only} px (a flatten head), not on a {canvas_px} px "
          f"canvas: pass --canvas_px={only}.")
  return {"resize_px": resize_px, "crop_px": crop_px, "interpolation": interpolation,
          "canvas_px": canvas_px, "object_px": object_px}


def labels_for(run, images: Images, root) -> np.ndarray:
  """The run's class index of each image (its class folder matched by name)."""
  index = views.class_labels(sorted(set(images.classes)), run.info.class_names, root,
                             f"{run_name(run)} ({run.workdir})")
  return np.asarray([index[c] for c in images.classes], np.int64)


def analyze(run, images: Images, labels: np.ndarray, options: Options | None = None, *,
            bn_images: Sequence[Image.Image] | None = None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
  """Every experiment of `options.experiments` on `run` over `images`: a dict with
  `summary` (settings, the images, top-1/top-5 of the standard view) and one result per
  experiment (`canvas`, `crops`, `consistency`, `resolution`); `log` hears a line as
  each ends."""
  options = options or Options()
  view = settings(run, options)
  predict = shift.at_view_size(run.predict)
  pil = list(images.images)
  name = run_name(run)
  started = time.perf_counter()

  def done(what: str) -> None:
    log(f"{name}: {what} ({time.perf_counter() - started:.1f} s)")

  standard = views.standard_views(pil, view["resize_px"], view["crop_px"], view["interpolation"])
  results = {"summary": {"name": name, "workdir": str(run.workdir), **view,
                         "k": table_k(run.info.num_classes), "n_images": len(pil),
                         "paths": list(images.paths),
                         **topk_accuracy(predict(standard), labels)}}
  done(f"standard view at {view['crop_px']} px: top-1 {results['summary']['top1']:.3f}")
  if "canvas" in options.experiments:
    objects = views.standard_views(pil, *views.view_settings(run, view["object_px"]))
    results["canvas"] = canvas_shifts(
        predict, objects, labels, object_px=view["object_px"], canvas_px=view["canvas_px"],
        fill=options.fill, mean=run.info.mean, seed=options.seed)
    done(f"canvas shifts, {view['object_px']} px in {view['canvas_px']} px")
  if "crops" in options.experiments:
    results["crops"] = crop_shifts(
        predict, pil, labels, crop_px=view["crop_px"], resize_px=view["resize_px"],
        interpolation=view["interpolation"], max_shift=options.max_shift, boxes=images.boxes,
        seed=options.seed)
    done("crop shifts")
  if "consistency" in options.experiments:
    results["consistency"] = consistency(
        predict, pil, resize_px=view["resize_px"], crop_px=view["crop_px"],
        interpolation=view["interpolation"], draws=options.draws, seed=options.seed,
        labels=labels)
    done(f"consistency {results['consistency']['consistency']:.3f}")
  if "resolution" in options.experiments:
    results["resolution"] = resolution_sweep(run, pil, labels, sizes=options.sizes,
                                             bn_images=bn_images)
    done(f"resolution sweep, peaks {results['resolution']['peak']}")
  return results


FIGURES = {"canvas": lambda result, k: plots.shift_grids(result, topk=k),
           "crops": lambda result, k: plots.shift_grids(result, topk=k),
           "resolution": lambda result, k: plots.resolution_sweep(result)}


def write(results: Mapping[str, Any], out_dir) -> epath.Path:
  """Each result of `analyze` as `<name>.json` and its figure as `<name>.png` (top-k of
  `table_k`) in `out_dir`, each whole or not at all; returns `out_dir`."""
  out_dir = epath.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  fix = "run `progressive invariance` again, or pass --out=<a folder with room>."
  for name, result in results.items():
    text = json.dumps(result, indent=1) + "\n"
    workdir_lib.write_output(out_dir / f"{name}.json", lambda tmp, t=text: tmp.write_text(t), fix)
    if name in FIGURES:
      fig = FIGURES[name](result, results["summary"]["k"])
      workdir_lib.write_output(out_dir / f"{name}.png",
                               lambda tmp, f=fig: plots.write_png(f, tmp), fix)
  return out_dir


def table_k(num_classes: int) -> int:
  """The k of the table's and figures' top-k measures: 5, as Azulay & Weiss, or 1 for a
  network of 5 classes or fewer (its top 5 always holds the true class)."""
  return 5 if num_classes > 5 else 1


def _measure(results: Mapping[str, Any], experiment: str, direction: str, key: str):
  entry = results.get(experiment, {}).get("directions", {}).get(direction)
  return None if entry is None else entry[f"top{results['summary']['k']}"][key]


def table_row(results: Mapping[str, Any]) -> dict[str, Any]:
  """One network's row of the table: its name, size and accuracy; top-k (`table_k`)
  jaggedness of the canvas and crop shifts per direction (with their intervals) and the
  fraction of images that change; consistency; the size of the best top-1 per
  batch-norm column."""
  summary = results["summary"]
  row = {"name": summary["name"], "workdir": summary["workdir"], "size": summary["crop_px"],
         "n_images": summary["n_images"], "top1": summary["top1"], "top5": summary["top5"],
         "k": summary["k"]}
  for experiment, prefix in (("canvas", "jag"), ("crops", "crop_jag")):
    for direction in DIRECTIONS:
      row[f"{prefix}_topk_{direction}"] = _measure(results, experiment, direction, "mean_changes")
      row[f"{prefix}_topk_{direction}_ci"] = _measure(
          results, experiment, direction, "mean_changes_ci")
  for direction in DIRECTIONS:
    row[f"changed_topk_{direction}"] = _measure(results, "canvas", direction, "frac_changed")
  row["consistency"] = results.get("consistency", {}).get("consistency")
  row["consistency_ci"] = results.get("consistency", {}).get("consistency_ci")
  peak = results.get("resolution", {}).get("peak", {})
  row["peak_bn_stored"] = peak.get(bn_label(None))
  row["peak_bn_recomputed"] = next((v for k, v in peak.items() if k != bn_label(None)), None)
  return row


def table_csv(rows: Sequence[Mapping[str, Any]]) -> str:
  """The rows as CSV, each interval as `<column>_low` and `<column>_high`."""
  flat = []
  for row in rows:
    out = {}
    for key, value in row.items():
      if key.endswith("_ci"):
        low, high = value if value else (None, None)
        out[f"{key[:-3]}_low"], out[f"{key[:-3]}_high"] = low, high
      else:
        out[key] = value
    flat.append(out)
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=list(flat[0]) if flat else [], lineterminator="\n")
  writer.writeheader()
  writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in flat)
  return buffer.getvalue()


def _cell(value, ci=None, spec: str = ".2f") -> str:
  text = "n/a" if value is None else format(value, spec)
  return text if not ci else f"{text} [{ci[0]:{spec}}, {ci[1]:{spec}}]"


def table_markdown(rows: Sequence[Mapping[str, Any]], note: str = "") -> str:
  """The table in Markdown: one row per network, intervals in brackets; k is each row's
  top-k (`table_k`)."""
  head = ["network", "size", "top-1", "top-5", "k", "jag. top-k vertical",
          "jag. top-k horizontal", "changed vertical", "changed horizontal", "crop jag. vertical",
          "crop jag. horizontal", "consistency", "peak size (bn stored)",
          "peak size (bn recomputed)"]
  lines = ["# Invariance of the networks", "", note, "", "| " + " | ".join(head) + " |",
           "|" + "---|" * len(head)]
  for r in rows:
    cells = [r["name"], str(r["size"]), _cell(r["top1"], spec=".3f"), _cell(r["top5"], spec=".3f"),
             str(r["k"])]
    cells += [_cell(r[f"jag_topk_{d}"], r[f"jag_topk_{d}_ci"]) for d in DIRECTIONS]
    cells += [_cell(r[f"changed_topk_{d}"]) for d in DIRECTIONS]
    cells += [_cell(r[f"crop_jag_topk_{d}"], r[f"crop_jag_topk_{d}_ci"]) for d in DIRECTIONS]
    cells += [_cell(r["consistency"], r["consistency_ci"], ".3f")]
    cells += ["n/a" if r[k] is None else f"{r[k]} px" for k in ("peak_bn_stored", "peak_bn_recomputed")]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def write_table(rows: Sequence[Mapping[str, Any]], out_dir, note: str = "") -> list[epath.Path]:
  """`invariance.csv` and `invariance.md` of the rows in `out_dir`."""
  out_dir = epath.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  fix = "run `progressive invariance` again, or pass --out=<a folder with room>."
  paths = []
  for name, text in (("invariance.csv", table_csv(rows)),
                     ("invariance.md", table_markdown(rows, note))):
    workdir_lib.write_output(out_dir / name, lambda tmp, t=text: tmp.write_text(t), fix)
    paths.append(out_dir / name)
  return paths


def find_boxes(box_dir, images: Sequence[Image.Image], classes: Sequence[str],
               paths: Sequence[str]) -> list[Box | None]:
  """Each image's object box from ImageNet's validation annotations in `box_dir`
  (`<box_dir>/<image name>.xml` or `<box_dir>/<class>/<image name>.xml`): the union of
  its class's boxes in the image's pixels, None where there is no file or no such object;
  `InvarianceError` if no image has one."""
  box_dir = os.path.expanduser(str(box_dir))
  if not os.path.isdir(box_dir):
    raise InvarianceError(f"--boxes={box_dir} is not a folder of ImageNet's validation "
                          "annotations (<image name>.xml).")
  boxes = []
  for image, name, path in zip(images, classes, paths):
    stem = os.path.splitext(os.path.basename(path))[0]
    found = [p for p in (os.path.join(box_dir, f"{stem}.xml"),
                         os.path.join(box_dir, name, f"{stem}.xml")) if os.path.isfile(p)]
    boxes.append(read_boxes(found[0], image.size, name) if found else None)
  if paths and not any(b is not None for b in boxes):
    stem = os.path.splitext(os.path.basename(paths[0]))[0]
    raise InvarianceError(
        f"--boxes={box_dir} has no annotation of these images with their class (looked for "
        f"{os.path.join(box_dir, stem + '.xml')} and the like): pass ImageNet's validation "
        "box folder, or leave --boxes out.")
  return boxes
