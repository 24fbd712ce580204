"""Tests of the built-in `photos` dataset: regions, cutting again, camera shifts, the
pipeline, and a smoke run of configs/photos.py with the shift and scale analyses on it."""

import numpy as np
import pytest
from PIL import Image

from progressive import config as config_lib
from progressive.analysis import plots, scale, shift
from progressive.analysis import run as run_lib
from progressive.data import photos, pipeline
from progressive.sweeps import measure
from progressive.training import train
from progressive.training.metrics import read_rows

SIZE = 32  # Stored side of the "small" config.
# A whole-pixel shift reproduces the unshifted cut's pixels up to PIL's fixed-point
# rounding (the view box moves by a float): at most one grey level, in under 0.1% of the
# pixels of a few dozen patches.
SHIFT_MAX_DIFF = 1
SHIFT_DIFF_FRACTION = 1e-3


@pytest.fixture(scope="module")
def photos_dir(tmp_path_factory):
  """A TFDS data_dir holding the prepared `photos/small`, built once for this module."""
  path = str(tmp_path_factory.mktemp("photos_tfds"))
  photos.prepare("small", path)
  return path


@pytest.fixture(scope="module")
def stored(photos_dir):
  """Every stored example of photos/small, by split."""
  builder = photos.prepare("small", photos_dir)
  out = {}
  for split in photos.SPLITS:
    source = builder.as_data_source(split=split)
    out[split] = [source[i] for i in range(len(source))]
  return out


def data_config(photos_dir, builder_config="small"):
  data = config_lib.default_config().data
  data.name, data.builder_config, data.data_dir = "photos", builder_config, photos_dir
  return data


def metadata(example):
  return int(example["label"]), float(example["zoom"]), example["center"]


def test_sixteen_photographs_in_three_families():
  assert photos.NUM_CLASSES == len(set(photos.CLASS_NAMES)) == 16
  assert photos.FAMILY_NAMES == ("periodic", "stochastic", "object")
  assert np.bincount(photos.CLASS_FAMILY, minlength=3).tolist() == [2, 5, 9]
  for label in range(photos.NUM_CLASSES):
    grey, colour = photos.photograph(label), photos.photograph(label, colour=True)
    assert grey.mode == "L" and colour.size == grey.size
  assert photos.photograph(photos.CLASS_NAMES.index("chelsea"), colour=True).mode == "RGB"
  assert photos.photograph(photos.CLASS_NAMES.index("brick"), colour=True).mode == "L"


def test_regions_tile_each_photograph_in_two_disjoint_rectangles():
  need = photos.min_region_side()
  for label in range(photos.NUM_CLASSES):
    width, height = photos.photo_size(label)
    train_box, test_box = (photos.regions(label)[s] for s in photos.SPLITS)
    covered = np.zeros((height, width), np.int64)
    for x0, y0, x1, y1 in (train_box, test_box):
      assert min(x1 - x0, y1 - y0) >= need, photos.CLASS_NAMES[label]
      covered[y0:y1, x0:x1] += 1
    assert np.all(covered == 1), photos.CLASS_NAMES[label]  # Every pixel in exactly one.


def test_stored_footprints_never_cover_the_other_splits_pixels(stored):
  """Pixel-exact: the source pixels each stored example may be read from (the patch, the
  guard and the filter's reach) stay in its split's region, so no pixel of a photograph
  is covered by both a train and a test footprint."""
  covered = {}
  for split in photos.SPLITS:
    for example in stored[split]:
      label, zoom, center = metadata(example)
      box = photos.footprint(zoom, center, SIZE)
      # The guard: GUARD stored px on every side of the patch, with the filter's reach.
      assert photos.inside(photos.read_box(zoom, center, SIZE + 2 * photos.GUARD), box)
      assert photos.inside(box, photos.regions(label)[split])
      assert photos.split_of(label, center) == split
      width, height = photos.photo_size(label)
      mask = covered.setdefault((label, split), np.zeros((height, width), bool))
      mask[box[1]:box[3], box[0]:box[2]] = True
  assert len(covered) == 2 * photos.NUM_CLASSES  # Every photograph feeds both splits.
  for label in range(photos.NUM_CLASSES):
    both = covered[(label, "train")] & covered[(label, "test")]
    assert not both.any(), (photos.CLASS_NAMES[label], np.argwhere(both)[:3])


def _scrambled_outside(label, box, seed=0):
  """Photograph `label` with every pixel outside integer `box` replaced by noise."""
  pixels = np.asarray(photos.photograph(label)).copy()
  noise = np.random.default_rng(seed).integers(0, 256, pixels.shape).astype(np.uint8)
  outside = np.ones(pixels.shape, bool)
  outside[box[1]:box[3], box[0]:box[2]] = False
  pixels[outside] = noise[outside]
  return Image.fromarray(pixels)


def test_read_box_holds_every_pixel_a_cut_reads():
  rng = np.random.default_rng(1)
  for trial in range(60):
    label = trial % photos.NUM_CLASSES
    width, height = photos.photo_size(label)
    zoom = float(np.exp(rng.uniform(np.log(0.2), np.log(3.0))))
    size = int(rng.integers(8, 70))
    shift_px = tuple(int(s) for s in rng.integers(-4, 5, size=2))
    margin = (size / 2 + 6) / zoom + 4
    center = rng.uniform([margin, margin], [width - margin, height - margin])
    box = photos.read_box(zoom, center, size, shift_px)
    clean = photos.cut(label, zoom, center, size, shift=shift_px)
    scrambled = photos.cut_from(_scrambled_outside(label, box), zoom, center, size, shift=shift_px)
    np.testing.assert_array_equal(scrambled, clean, err_msg=f"trial {trial}")


def test_guard_shifts_never_read_outside_the_footprint(stored):
  """Shifts up to GUARD px at the stored size, GUARD / 2 at half of it, read the same
  pixels from a photograph whose every pixel outside the footprint is noise."""
  half = SIZE // 2
  g = photos.GUARD
  for example in stored["train"][:8] + stored["test"][:8]:
    label, zoom, center = metadata(example)
    scrambled = _scrambled_outside(label, photos.footprint(zoom, center, SIZE))
    for size, step in ((SIZE, g), (half, g // 2)):
      view = photos.view_zoom(zoom, size, SIZE)
      for offset in ((step, step), (-step, step), (step, -step), (-step, -step), (0, 0)):
        clean = photos.cut(label, view, center, size, shift=offset,
                           split=photos.split_of(label, center))
        np.testing.assert_array_equal(
            photos.cut_from(scrambled, view, center, size, shift=offset), clean)


def test_cutting_again_reproduces_every_stored_image(stored):
  lo, hi = photos.ZOOM_RANGE
  for split in photos.SPLITS:
    for example in stored[split]:
      label, zoom, center = metadata(example)
      assert example["family"] == photos.CLASS_FAMILY[label]
      assert center.dtype == np.float32 and center.shape == (2,)
      assert lo <= zoom <= hi
      image = example["image"]
      assert image.shape == (SIZE, SIZE, 3)
      np.testing.assert_array_equal(image[..., 0], image[..., 2])  # Grey: equal channels.
      np.testing.assert_array_equal(photos.cut(label, zoom, center, SIZE), image)


def test_colour_examples_cut_again_in_colour():
  cat = photos.CLASS_NAMES.index("chelsea")
  index = cat + photos.NUM_CLASSES  # Labels cycle through the classes.
  colour = photos.sample_example(index, seed=0, split="test", storage_size=64, colour=True)
  grey = photos.sample_example(index, seed=0, split="test", storage_size=64)
  assert colour["label"] == grey["label"] == cat and colour["zoom"] == grey["zoom"]
  assert np.abs(colour["image"][..., 0].astype(int) - colour["image"][..., 2]).mean() > 5
  np.testing.assert_array_equal(grey["image"][..., 0], grey["image"][..., 1])
  np.testing.assert_array_equal(
      photos.cut(cat, float(colour["zoom"]), colour["center"], 64, colour=True), colour["image"])


@pytest.mark.parametrize("offset", [(1, 0), (0, 1), (-1, 0), (1, -1)])
def test_a_one_pixel_shift_moves_the_content_one_pixel(stored, offset):
  """A shifted cut is a window of a wider cut at the same zoom: the pixels that enter
  are the photograph's, never padding."""
  dx, dy = offset
  windows, overlaps, moved_by = [], [], []
  for example in stored["test"][:48]:
    label, zoom, center = metadata(example)
    base = photos.cut(label, zoom, center, SIZE).astype(int)
    moved = photos.cut(label, zoom, center, SIZE, shift=offset).astype(int)
    wide = photos.cut(label, zoom, center, SIZE + 2).astype(int)  # One more pixel each side.
    window = wide[1 - dy:1 - dy + SIZE, 1 - dx:1 - dx + SIZE]  # window[y, x] = base[y - dy, x - dx]
    windows.append(np.abs(moved - window))
    overlaps.append(np.abs(moved[max(dy, 0):SIZE + min(dy, 0), max(dx, 0):SIZE + min(dx, 0)]
                           - base[max(-dy, 0):SIZE + min(-dy, 0), max(-dx, 0):SIZE + min(-dx, 0)]))
    moved_by.append(np.abs(moved - base).mean())
  for diffs in (windows, overlaps):
    diffs = np.concatenate([d.ravel() for d in diffs])
    assert diffs.max() <= SHIFT_MAX_DIFF and np.mean(diffs > 0) < SHIFT_DIFF_FRACTION
  assert np.mean(moved_by) > 3  # The content did move: the patches are not flat.


def test_cuts_refuse_to_pad_or_to_read_the_other_split(stored):
  label, zoom, center = metadata(stored["test"][0])
  with pytest.raises(ValueError, match="outside its test region"):
    photos.cut(label, zoom, center, SIZE, shift=(3 * photos.GUARD, 0), split="test")
  photos.cut(label, zoom, center, SIZE, shift=(photos.GUARD, 0), split="test")  # Within the guard.
  width, _ = photos.photo_size(label)
  with pytest.raises(ValueError, match="nothing is padded"):
    photos.cut(label, 1.0, (width - 4.0, 100.0), SIZE)


def test_zoom_bin_cuts_come_from_the_test_regions():
  canvas = 24
  data = photos.zoom_bin_cuts(photos.ZOOM_BINS, 16, canvas, storage_size=SIZE, seed=3)
  edges = photos.ZOOM_BINS
  assert data["image"].shape == (16 * (len(edges) - 1), canvas, canvas, 3)
  for image, label, zoom, center, b in zip(*(data[k] for k in ("image", "label", "zoom",
                                                                "center", "bin"))):
    assert edges[b] <= zoom <= edges[b + 1]
    assert photos.split_of(int(label), center) == "test"
    np.testing.assert_array_equal(
        photos.cut(int(label), zoom * canvas / SIZE, center, canvas, split="test"), image)


def test_pipeline_describes_and_opens_photos(photos_dir):
  data = data_config(photos_dir)
  info = pipeline.dataset_info(data)
  assert (info.name, info.num_classes, info.class_names) == ("photos", 16, photos.CLASS_NAMES)
  assert (info.image_size, info.num_train, info.num_test) == (SIZE, 512, 128)
  assert (info.family_names, info.class_family) == (photos.FAMILY_NAMES, photos.CLASS_FAMILY)
  assert (info.mean, info.std) == pipeline.NORMALIZATION["photos"]
  assert info.render_options == photos.CutOptions(storage_size=SIZE, colour=False)
  colour = pipeline.dataset_info(data_config(photos_dir, "colour"))  # Described, not built.
  assert (colour.mean, colour.std) == pipeline.NORMALIZATION["photos/colour"]
  assert colour.render_options == photos.CutOptions(storage_size=64, colour=True)
  assert pipeline.dataset_info({**data, "train_split": "train[:75%]"}).num_train == 384
  with pytest.raises(ValueError, match="builder_config must be one of"):
    pipeline.dataset_info(data_config(photos_dir, "tiny"))
  with pytest.raises(ValueError, match="leave it None"):
    pipeline.dataset_info({**data, "image_size": 64})

  examples = pipeline.builtin_examples(data, "test")[0]
  assert examples["zoom"].dtype == np.float32 and examples["center"].shape == (128, 2)
  batches = list(pipeline.open_split(data, "test").eval_batches(64))
  assert len(batches) == 2
  for i, batch in enumerate(batches):
    assert batch["image"].shape == (64, SIZE, SIZE, 3) and batch["image"].dtype == np.uint8
    assert batch["mask"].all()
    np.testing.assert_array_equal(batch["image"], examples["image"][64 * i:64 * (i + 1)])
    np.testing.assert_array_equal(batch["family"], np.asarray(photos.CLASS_FAMILY)[batch["label"]])
  train_batch = pipeline.open_split(data, "train", train=True).train_dataset(64, seed=0)[0]
  assert train_batch["image"].shape == (64, SIZE, SIZE, 3)


def test_normalization_is_the_stored_pixels(stored):
  """The table's grey entry (measured on the 64 px default train split) is also the
  small train split's mean and std to within 0.02."""
  pixels = np.stack([x["image"] for x in stored["train"]]).astype(np.float64) / 255
  mean, std = pipeline.NORMALIZATION["photos"]
  assert pixels.mean() == pytest.approx(mean[0], abs=0.02)
  assert pixels.std() == pytest.approx(std[0], abs=0.02)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, photos_dir):
  from configs import photos as photos_config

  config = photos_config.get_config("smoke")
  config.data.data_dir = photos_dir
  config.progress_bar = False
  workdir = tmp_path_factory.mktemp("photos_smoke")
  summary = train.train_and_evaluate(config, str(workdir))
  return config, workdir, summary


@pytest.mark.slow  # On the module's smoke run (12 s on 2 cores): full suite only.
def test_smoke_run_trains_through_every_stage(smoke_run):
  config, workdir, summary = smoke_run
  assert config.data.name == "photos" and config.data.builder_config == "small"
  rows = read_rows(workdir / "metrics.jsonl")
  train_rows = [r for r in rows if r["event"] == "train"]
  assert summary.step == 24
  assert [r["size"] for r in train_rows] == [16, 16, 24, 24, 32, 32]
  assert train_rows[-1]["loss"] < train_rows[0]["loss"] - 0.1
  evals = [r for r in rows if r["event"] == "eval" and r["step"] == 24]
  assert sorted(r["size"] for r in evals) == [16, 32]
  for row in evals:
    assert {f"accuracy_{f}" for f in photos.FAMILY_NAMES} <= set(row)


@pytest.mark.slow  # On the module's smoke run (12 s on 2 cores): full suite only.
def test_shift_analyses_cut_camera_shifts_on_the_run(smoke_run):
  _, workdir, _ = smoke_run
  run = run_lib.load_run(workdir)
  assert run_lib.shift_mode(run.config.data) == "render"
  examples = run.test_examples(16)
  assert {"image", "label", "family", "zoom", "center"} <= set(examples)
  offsets = np.broadcast_to(shift.sweep_offsets(2, (1, 1)), (16, 5, 2))
  views = shift.shifted_views(examples, offsets, size=SIZE, render_options=run.info.render_options)
  np.testing.assert_array_equal(views[:, 2], examples["image"])  # The zero shift.
  for i in range(16):
    label, zoom = int(examples["label"][i]), float(examples["zoom"][i])
    np.testing.assert_array_equal(
        views[i, 4], photos.cut(label, zoom, examples["center"][i], SIZE, shift=(2, 2)))
  sweep = shift.shift_sweep(run.predictor(SIZE), examples, run.info, size=SIZE, mode="render")
  assert sweep["num_images"] == 16 and set(sweep["family"]) == set(photos.FAMILY_NAMES)
  period = shift.period_sweep(run.predictor(SIZE), examples, run.info, size=SIZE, period=8)
  assert period["inside"] == {"total": 16, "would_leave": 0, "moved": 0, "left_out": 0}
  assert period["num_images"] == 16 and period["consistency"] is not None
  # Within the guard at half the stored size every example stays; far past it, none.
  options = run.info.render_options
  _, counts = shift.keep_inside(examples, photos.GUARD // 2, SIZE // 2, render_options=options)
  assert counts["left_out"] == 0
  kept, counts = shift.keep_inside(examples, 4 * photos.GUARD, SIZE, render_options=options)
  assert counts["left_out"] == 16 and len(kept["label"]) == 0


@pytest.mark.slow  # On the module's smoke run (12 s on 2 cores): full suite only.
def test_object_scale_analysis_bins_zoom_on_the_run(smoke_run):
  _, workdir, _ = smoke_run
  run = run_lib.load_run(workdir)
  result = scale.object_scale_accuracy(run.predictor(SIZE), run.info, canvas_size=SIZE,
                                       per_bin=16, features_rf=20)
  assert result["quantity"] == "zoom" and result["bin_edges"] == list(photos.ZOOM_BINS)
  assert result["count"] == [16] * (len(photos.ZOOM_BINS) - 1)
  assert result["rf_scale"] is None and set(result["accuracy"]) == {"all", *photos.FAMILY_NAMES}
  np.testing.assert_allclose(result["source_px"], SIZE / np.asarray(result["bin_centers"]))
  axes = plots.object_scale(result).axes[0]
  assert axes.get_xscale() == "log" and axes.get_xlabel().startswith("zoom")
  summary = measure.object_scale_summary(run, per_bin=16)
  assert list(summary["object_scale"]) == [f"{c:.2f}" for c in result["bin_centers"]]
  assert summary["object_scale"]["0.59"]["accuracy"] == result["accuracy"]["all"][0]


def test_page_is_lit_alike_in_both_regions():
  """`page`'s scan is darker on the left (train) than on the right (test) by 0.5 of the
  grey range; flattening leaves the two regions' means within 0.05."""
  label = photos.CLASS_NAMES.index("page")
  image = np.asarray(photos.photograph(label), np.float64) / 255
  means = {split: image[y0:y1, x0:x1].mean()
           for split, (x0, y0, x1, y1) in photos.regions(label).items()}
  assert abs(means["train"] - means["test"]) < 0.05, means
