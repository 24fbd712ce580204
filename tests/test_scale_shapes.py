"""Tests of the built-in `scale_shapes` dataset: rendering, metadata, the TFDS builder."""

import hashlib
import io
import itertools

import numpy as np
import pytest
from PIL import Image

from progressive.data import scale_shapes as ss
from progressive.data.resize import resize_images

SHAPES = [i for i, f in enumerate(ss.CLASS_FAMILY) if f == 0]
TEXTURES = [i for i, f in enumerate(ss.CLASS_FAMILY) if f == 1]
SEEDS = range(8)


def label_of(name):
  return ss.CLASS_NAMES.index(name)


def read_all(builder, split):
  source = builder.as_data_source(split=split)
  return [source[i] for i in range(len(source))]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
  return ss.prepare("small", data_dir=str(tmp_path_factory.mktemp("scale_shapes")))


def interior(size, center, radius):
  """Pixels whose centres lie within `radius` (canvas fractions) of `center`."""
  coords = (np.arange(size) + 0.5) / size
  return (coords[None, :] - center[0])**2 + (coords[:, None] - center[1])**2 <= radius**2


def colour_set(pixels):
  return {tuple(int(c) for c in p) for p in pixels.reshape(-1, 3)}


def run_period(line):
  """Period in pixels of a two-colour square wave `[n, 3]`; None if it never changes."""
  changes = np.flatnonzero(np.any(line[1:] != line[:-1], axis=-1)) + 1
  if changes.size == 0:
    return None
  runs = np.diff(changes)  # Whole runs only: the first and last may be cut off.
  assert runs.size >= 2 and np.all(runs == runs[0]), runs
  return 2 * int(runs[0])


def test_names_and_families():
  assert len(ss.CLASS_NAMES) == len(ss.CLASS_FAMILY) == 12
  assert ss.CLASS_NAMES[:6] == ("disc", "square", "triangle", "cross", "ring", "star")
  assert [ss.CLASS_NAMES[i] for i in TEXTURES] == list(ss.TEXTURE_PERIODS)
  assert ss.FAMILY_NAMES == ("shape", "texture")
  assert [ss.TEXTURE_PERIODS[ss.CLASS_NAMES[i]] for i in TEXTURES] == [2, 4, 8, 2, 4, 8]


def test_render_is_deterministic_and_seed_dependent():
  for label in range(12):
    a = ss.render(label, 0.6, (0.4, 0.55), 64, seed=7)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, ss.render(label, 0.6, (0.4, 0.55), 64, seed=7))
    assert not np.array_equal(a, ss.render(label, 0.6, (0.4, 0.55), 64, seed=8))


def test_render_rejects_bad_arguments():
  with pytest.raises(ValueError, match="label"):
    ss.render(12, 0.5, (0.5, 0.5), 32)
  with pytest.raises(ValueError, match="object_scale"):
    ss.render(0, 0.0, (0.5, 0.5), 32)


def test_builder_info(small):
  info = small.info
  assert small.name == "scale_shapes" and str(info.version) == "1.0.0"
  assert info.supervised_keys == ("image", "label")
  assert info.features["image"].shape == (32, 32, 3)
  assert info.features["label"].names == list(ss.CLASS_NAMES)
  assert info.features["family"].names == list(ss.FAMILY_NAMES)
  assert info.splits["train"].num_examples == 1024
  assert info.splits["test"].num_examples == 256


def test_prepare_is_deterministic(small, tmp_path):
  again = ss.prepare("small", data_dir=str(tmp_path))
  for split in ("train", "test"):
    a, b = small.as_data_source(split=split), again.as_data_source(split=split)
    for i in (0, 1, 5, 17, 100, 255):
      x, y = a[i], b[i]
      assert x.keys() == y.keys()
      for key in x:
        np.testing.assert_array_equal(x[key], y[key], err_msg=f"{split}[{i}].{key}")


def test_stored_examples_match_their_metadata(small):
  config = small.builder_config
  size, (lo, hi) = config.storage_size, config.scale_range
  for split in ("train", "test"):
    for x in read_all(small, split):
      label, scale, center = int(x["label"]), float(x["object_scale"]), x["center"]
      assert x["family"] == ss.CLASS_FAMILY[label]
      assert center.shape == (2,) and center.dtype == np.float32
      assert lo <= scale <= hi
      assert np.all(center >= scale / 2 - 1e-6) and np.all(center <= 1 - scale / 2 + 1e-6)
      expected = ss.render(label, scale, tuple(float(c) for c in center), size,
                           seed=int(x["seed"]), storage_size=size)
      np.testing.assert_array_equal(x["image"], expected)


def test_labels_balanced_and_splits_distinct(small):
  train, test = read_all(small, "train"), read_all(small, "test")
  counts = np.bincount([x["label"] for x in train], minlength=12)
  assert counts.max() - counts.min() <= 1, counts
  assert len({int(x["seed"]) for x in train + test}) == len(train) + len(test)
  train_images = {x["image"].tobytes() for x in train}
  assert not any(x["image"].tobytes() in train_images for x in test)


def test_sample_example_matches_builder_draws():
  x = ss.sample_example(3, seed=0, split="test", storage_size=32, scale_range=(0.3, 0.9))
  y = ss.sample_example(3, seed=0, split="test", storage_size=32, scale_range=(0.3, 0.9))
  z = ss.sample_example(3, seed=0, split="train", storage_size=32, scale_range=(0.3, 0.9))
  np.testing.assert_array_equal(x["image"], y["image"])
  assert x["label"] == z["label"] == 3 and x["seed"] != z["seed"]


@pytest.mark.parametrize("pattern", ["stripes", "checks"])
def test_texture_classes_differ_only_in_period(pattern):
  size, center, scale = 64, (0.5, 0.5), 0.8
  for seed in SEEDS:
    nz = ss.nuisances(seed)
    colours = {tuple(int(c) for c in nz.foreground), tuple(int(c) for c in nz.foreground2)}
    images = {}
    for period in (2, 4, 8):
      name = f"{pattern}_p{period}"
      image = ss.render(label_of(name), scale, center, size, seed=seed)
      coverage = ss.object_coverage(label_of(name), scale, center, size, seed=seed)
      inside = coverage == 1.0
      # At the storage size every band edge is a pixel edge: only the two colours.
      assert colour_set(image[inside]) == colours
      row, column = image[size // 2, inside[size // 2]], image[inside[:, size // 2], size // 2]
      periods = {run_period(row), run_period(column)}
      if pattern == "checks":
        assert periods == {period}
      else:
        assert periods == {period, None}
      images[period] = image
    outside = ss.object_coverage(label_of(f"{pattern}_p2"), scale, center, size, seed=seed) == 0
    assert outside.mean() > 0.3
    for period in (4, 8):
      np.testing.assert_array_equal(images[period][outside], images[2][outside])


def test_stripes_and_checks_share_silhouettes():
  for seed in SEEDS:
    for period in (2, 4, 8):
      stripes = ss.render(label_of(f"stripes_p{period}"), 0.7, (0.45, 0.5), 64, seed=seed)
      checks = ss.render(label_of(f"checks_p{period}"), 0.7, (0.45, 0.5), 64, seed=seed)
      background = stripes[0, 0]
      np.testing.assert_array_equal(checks[0, 0], background)
      np.testing.assert_array_equal(np.any(stripes != background, -1),
                                    np.any(checks != background, -1))


def test_shape_classes_differ_only_in_outline():
  size = 64
  for seed in SEEDS:
    nz = ss.nuisances(seed)
    background = tuple(int(c) for c in nz.background)
    foreground = tuple(int(c) for c in nz.foreground)
    masks = []
    for label in SHAPES:
      image = ss.render(label, 0.8, (0.5, 0.5), size, seed=seed)
      colours, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
      dominant = {tuple(int(c) for c in colours[i]) for i in np.argsort(counts)[-2:]}
      assert dominant == {background, foreground}
      pure = np.all(image == background, -1) | np.all(image == foreground, -1)
      assert pure.mean() > 0.8  # The rest are antialiased edge pixels.
      masks.append(np.all(image == foreground, -1))
    for i in range(len(masks)):
      for j in range(i):
        assert np.mean(masks[i] != masks[j]) > 0.02, (ss.CLASS_NAMES[i], ss.CLASS_NAMES[j])


def contrast(images, region):
  """Mean over images of the per-channel std of the pixels in `region`, `[B, H, W, 3]`."""
  return np.asarray(images)[:, region].std(axis=1).mean(axis=-1)


def test_fine_periods_vanish_when_the_image_is_halved():
  storage, scale, center = 64, 0.8, (0.5, 0.5)
  radius = 0.5 * scale / 2  # Well inside both silhouettes and the resize filter's reach.
  # Checks lose more than stripes: the filter blurs them along both axes.
  for name, lo, hi in [("stripes_p2", None, 0.1), ("checks_p2", None, 0.1),
                       ("stripes_p4", None, None), ("checks_p4", None, None),
                       ("stripes_p8", 0.5, None), ("checks_p8", 0.4, None)]:
    full = np.stack([ss.render(label_of(name), scale, center, storage, seed=s)
                     for s in SEEDS])
    half = resize_images(full, storage // 2)
    before = contrast(full, interior(storage, center, radius))
    after = contrast(half, interior(storage // 2, center, radius))
    assert np.all(before > 20), (name, before)
    ratio = after / before
    assert lo is None or np.all(ratio > lo), (name, ratio)
    assert hi is None or np.all(ratio < hi), (name, ratio)


def test_rendering_at_a_lower_size_is_a_box_average():
  # Half size: each output pixel covers two storage pixels, one of each p2 band.
  for seed in SEEDS:
    nz = ss.nuisances(seed)
    image = ss.render(label_of("stripes_p2"), 0.8, (0.5, 0.5), 32, seed=seed)
    mean = np.rint((nz.foreground + nz.foreground2) / 2)
    coverage = ss.object_coverage(label_of("stripes_p2"), 0.8, (0.5, 0.5), 32, seed=seed)
    np.testing.assert_array_equal(image[coverage == 1.0], np.broadcast_to(mean, (
        int(np.sum(coverage == 1.0)), 3)))


@pytest.mark.parametrize("label", [label_of("triangle"), label_of("star"),
                                   label_of("checks_p4")])
def test_other_sizes_show_the_same_scene(label):
  center, scale = (0.37, 0.61), 0.5

  def centre_of_mass(size):
    coverage = ss.object_coverage(label, scale, center, size, seed=3)
    image = ss.render(label, scale, center, size, seed=3).astype(float)
    assert image.shape == (size, size, 3)
    background = ss.nuisances(3).background
    weight = np.abs(image - background).sum(-1) if ss.CLASS_FAMILY[label] == 0 else coverage
    coords = (np.arange(size) + 0.5) / size
    total = weight.sum()
    return np.array([(weight.sum(0) * coords).sum(), (weight.sum(1) * coords).sum()]) / total

  reference = centre_of_mass(64)
  for size in (16, 24, 37, 48, 100, 128):
    assert np.all(np.abs(centre_of_mass(size) - reference) < 1.0 / size), size


def test_pattern_shift_with_center_translates_the_whole_object():
  """Moving the centre and the bands by whole pixels is a pure translation."""
  for label in (ss.CLASS_NAMES.index("stripes_p4"), ss.CLASS_NAMES.index("checks_p2")):
    base = ss.render(label, 0.5, (0.5, 0.5), 32, seed=3, storage_size=32)
    moved = ss.render(label, 0.5, (0.5 + 2 / 32, 0.5 + 1 / 32), 32, seed=3,
                                storage_size=32, pattern_shift=(2 / 32, 1 / 32))
    np.testing.assert_array_equal(moved[1:, 2:], base[:-1, :-2])


# --- Builder configs for the claim-1 controls ---------------------------------------------

CONTROLS = ("offladder", "object_period", "one_scale")
NEW_CONFIGS = CONTROLS + tuple(f"small_{name}" for name in CONTROLS)
LUMA = np.array([0.299, 0.587, 0.114])


def config_fields(name):
  """The keyword arguments of `sample_example` that builder config `name` sets."""
  config = ss.builder_config(name)
  return {"storage_size": config.storage_size, "scale_range": tuple(config.scale_range),
          "texture_periods": tuple(config.texture_periods), "period_mode": config.period_mode,
          "classes": config.classes}


def dominant_period(profile):
  """Period in pixels of the strongest frequency of a 1-D profile (Hann window, FFT)."""
  profile = (profile - profile.mean()) * np.hanning(len(profile))
  power = np.abs(np.fft.rfft(profile, 8192))**2
  return 1.0 / np.fft.rfftfreq(8192)[1 + power[1:].argmax()]


def measured_periods(name, label, scale, seeds=range(40)):
  """Dominant period (stored px) along a central row of `label` drawn at the centre with
  `scale`, for the seeds with a disc silhouette and vertical stripes."""
  options = ss.render_options(name)
  size = options.storage_size
  periods = []
  for seed in seeds:
    nz = ss.nuisances(seed, texture_periods=options.texture_periods,
                      period_mode=options.period_mode)
    if nz.horizontal or nz.silhouette != 0:
      continue
    image = ss.render(label, scale, (0.5, 0.5), size, seed=seed, **options._asdict())
    cover = ss.object_coverage(label, scale, (0.5, 0.5), size, seed=seed, **options._asdict())
    # The central row with the most contrast: one of odd-period checks' y bands, not an
    # edge between two.
    profiles = [image[row, cover[row] == 1.0] @ LUMA for row in range(size // 2 - 2, size // 2 + 3)]
    periods.append(dominant_period(max(profiles, key=np.std)))
  assert len(periods) >= 5
  return np.array(periods)


def test_default_and_small_are_unchanged():
  """Hashes of images drawn before the controls were added (committed results use them)."""
  expected = {("default", "train"): "45e800ef4088bee4", ("default", "test"): "97e1c20edcf7d37f",
              ("small", "train"): "13c831a876e389a5", ("small", "test"): "14bc1322a919a5e8"}
  for (name, split), digest in expected.items():
    assert ss.builder_config(name).class_names() == ss.CLASS_NAMES
    h = hashlib.sha256()
    for i in range(24):
      h.update(ss.sample_example(i, seed=0, split=split, **config_fields(name))["image"].tobytes())
    assert h.hexdigest()[:16] == digest, (name, split)
  h = hashlib.sha256()
  for label in range(12):
    for size in (24, 37, 48):
      h.update(ss.render(label, 0.55, (0.45, 0.52), size, seed=label + 3, storage_size=64,
                         pattern_shift=(1 / size, -2 / size)).tobytes())
  assert h.hexdigest()[:16] == "b9aa5590044ac55b"


def test_control_configs_and_their_class_names():
  configs = ss.ScaleShapes.builder_configs
  originals = set(NEW_CONFIGS) | set(PARTS) | {"default", "small", "sweep32"}
  assert originals | {f"{name}_fresh" for name in originals - {"small"}} == set(configs)
  assert (configs["sweep32"].storage_size, configs["sweep32"].num_train) == (32, 4096)
  assert configs["sweep32"].class_names() == ss.CLASS_NAMES
  for name in NEW_CONFIGS:
    config = configs[name]
    assert (config.storage_size, config.num_train, config.num_test) == (
        (32, 4096, 1024) if name.startswith("small_") else (64, 10_000, 2_000))
  assert configs["offladder"].class_names()[6:] == (
      "stripes_p5", "stripes_p9", "stripes_p16", "checks_p5", "checks_p9", "checks_p16")
  assert configs["small_object_period"].class_names()[6:] == (
      "stripes_c2", "stripes_c3", "stripes_c4", "checks_c2", "checks_c3", "checks_c4")
  assert configs["one_scale"].class_names() == ss.CLASS_NAMES
  assert ss.class_family((3, 5, 7, 11)) == (0,) * 6 + (1,) * 8


@pytest.mark.parametrize("name", ["sweep32", "default", "small_offladder", "small_parts"])
def test_a_fresh_config_draws_new_test_images_and_the_same_training_images(name, tmp_path):
  """`<name>_fresh`: the same distribution (labels cycling, scales in range, metadata that
  redraw each image), its training split identical to `<name>`'s, its test split images
  that neither of `<name>`'s splits holds."""
  old = ss.ScaleShapes(config=name, data_dir=str(tmp_path))
  fresh = ss.ScaleShapes(config=f"{name}_fresh", data_dir=str(tmp_path))
  config = fresh.builder_config
  assert config.test_seed == ss.FRESH_TEST_SEED != config.seed == old.builder_config.seed
  assert (config.num_train, config.num_test, config.storage_size, config.class_names()) == (
      old.builder_config.num_train, old.builder_config.num_test,
      old.builder_config.storage_size, old.builder_config.class_names())
  indices = range(24)
  for i in indices:
    a, b = old.sample(i, "train"), fresh.sample(i, "train")
    np.testing.assert_array_equal(a["image"], b["image"])
    assert a["seed"] == b["seed"]
  seen = {old.sample(i, split)["image"].tobytes() for i in indices for split in ("train", "test")}
  lo, hi = config.scale_range
  for i in indices:
    x = fresh.sample(i, "test")
    assert x["image"].tobytes() not in seen and x["label"] == i % len(config.class_names())
    assert lo <= x["object_scale"] <= hi
    expected = ss.render(int(x["label"]), float(x["object_scale"]),
                         tuple(float(c) for c in x["center"]), config.storage_size,
                         seed=int(x["seed"]), **config.render_options()._asdict())
    np.testing.assert_array_equal(x["image"], expected)
  # The stored split is the one the builder generates (what the sweeps' points read).
  (index, example), = itertools.islice(fresh._generate_examples("test", 1), 1)  # pylint: disable=protected-access
  assert index == 0 and example["label"] == fresh.sample(0, "test")["label"]
  image = np.asarray(Image.open(io.BytesIO(example["image"])))
  np.testing.assert_array_equal(image, fresh.sample(0, "test")["image"])


def test_offladder_periods_stay_apart_under_the_zooms_used():
  """No period lands within 10% of another's under zooms of 1/2, 3/4, 5/4 or 3/2, and all
  span at least MIN_PERIOD_PX at half the stored size."""
  periods = ss.OFFLADDER_PERIODS
  for zoom in (0.5, 0.75, 1.25, 1.5):
    for p in periods:
      assert p * 0.5 >= ss.MIN_PERIOD_PX
      for q in periods:
        assert p == q or abs(p * zoom / q - 1) >= 0.1 - 1e-9, (p, q, zoom)
  ladder = ss.DEFAULT_PERIODS  # The counter-example: the 2x ladder fails the same check.
  assert any(abs(p * 0.5 / q - 1) < 0.1 for p in ladder for q in ladder if p != q)


@pytest.mark.parametrize("name", ["offladder", "small_offladder", "object_period",
                                  "small_object_period"])
def test_rendered_periods_are_the_configured_ones(name):
  options = ss.render_options(name)
  for pattern in range(2):  # Stripes, then checks: both repeat along a row.
    for i, period in enumerate(options.texture_periods):
      label = 6 + pattern * len(options.texture_periods) + i
      # Canvas periods on the largest object (most periods, least FFT bias); object
      # periods (2 to 4 per object) on a large and a small one.
      for scale in ((1.0,) if options.period_mode == "canvas" else (0.5, 1.0)):
        expected = (period if options.period_mode == "canvas" else
                    scale * options.storage_size / period)
        measured = measured_periods(name, label, scale)
        assert np.all(np.abs(measured / expected - 1) < 0.03), (label, scale, measured)


def test_object_periods_scale_with_the_object_and_canvas_periods_do_not():
  for name, ratio in (("object_period", 2.0), ("offladder", 1.0)):
    label = ss.builder_config(name).class_names().index(
        "stripes_c3" if name == "object_period" else "stripes_p9")
    small, large = measured_periods(name, label, 0.45), measured_periods(name, label, 0.9)
    np.testing.assert_allclose(large / small, ratio, rtol=0.04, err_msg=name)


def test_object_anchored_bands_move_with_the_object_and_ignore_pattern_shift():
  options = ss.render_options("small_object_period")
  for label in (7, 11):
    base = ss.render(label, 0.5, (0.5, 0.5), 32, seed=3, **options._asdict())
    moved = ss.render(label, 0.5, (0.5 + 2 / 32, 0.5 + 1 / 32), 32, seed=3,
                      **options._asdict())
    np.testing.assert_array_equal(moved[1:, 2:], base[:-1, :-2])
    shifted = ss.render(label, 0.5, (0.5, 0.5), 32, seed=3, pattern_shift=(2 / 32, 0.0),
                        **options._asdict())
    np.testing.assert_array_equal(shifted, base)


def test_one_scale_configs_draw_every_object_at_one_scale():
  for name in ("one_scale", "small_one_scale"):
    lo, hi = ss.builder_config(name).scale_range
    assert lo == hi == ss.ONE_SCALE[0]
    scales = {float(ss.sample_example(i, seed=0, split="test", **config_fields(name))
                    ["object_scale"]) for i in range(36)}
    assert scales == {float(np.float32(lo))}, name
  varied = {float(ss.sample_example(i, seed=0, **config_fields("small"))["object_scale"])
            for i in range(36)}
  assert len(varied) == 36


def test_texture_options_are_checked():
  with pytest.raises(ValueError, match="period_mode"):
    ss.render(6, 0.5, (0.5, 0.5), 32, period_mode="pixels")
  with pytest.raises(ValueError, match="texture_periods"):
    ss.render(6, 0.5, (0.5, 0.5), 32, texture_periods=(4, 4, 8))
  with pytest.raises(ValueError, match="texture_periods"):
    ss.render(6, 0.5, (0.5, 0.5), 32, texture_periods=(1, 4))
  with pytest.raises(ValueError, match=r"label must be in \[0, 10\)"):
    ss.render(10, 0.5, (0.5, 0.5), 32, texture_periods=(3, 5))
  ss.render(13, 0.5, (0.5, 0.5), 32, texture_periods=(3, 5, 7, 11))
  with pytest.raises(ValueError, match="config_name must be one of"):
    ss.render_options("tiny")


def test_builder_draws_its_configs_examples(tmp_path):
  builder = ss.ScaleShapes(config="small_object_period", data_dir=str(tmp_path))
  assert builder.info.features["label"].names == list(ss.builder_config(
      "small_object_period").class_names())
  for index, example in builder._generate_examples("test", 13):  # pylint: disable=protected-access
    expected = ss.sample_example(index, seed=0, split="test",
                                 **config_fields("small_object_period"))
    image = np.asarray(Image.open(io.BytesIO(example["image"])))
    np.testing.assert_array_equal(image, expected["image"])
    assert example["label"] == expected["label"] == index % 12


@pytest.mark.parametrize("name", NEW_CONFIGS)
def test_analysis_redraws_a_configs_examples(name):
  from progressive.analysis import scale, shift  # pylint: disable=import-outside-toplevel

  options = ss.render_options(name)
  examples = [ss.sample_example(i, seed=0, split="test", **config_fields(name))
              for i in range(6, 12)]  # The texture classes.
  stacked = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
  views = shift.render_translated(stacked, np.zeros((6, 1, 2), np.int64),
                                  options.storage_size, render_options=options)
  np.testing.assert_array_equal(views[:, 0], stacked["image"])
  bins = scale.render_scale_bins((0.5, 0.6), 12, options.storage_size, render_options=options,
                                 num_classes=12)
  default = scale.render_scale_bins((0.5, 0.6), 12, options.storage_size,
                                    render_options=ss.RenderOptions(options.storage_size),
                                    num_classes=12)
  same = [np.array_equal(a, b) for a, b in zip(bins["image"], default["image"])]
  # Shapes are drawn alike; textures differ unless the config keeps the default periods.
  assert same[:6] == [True] * 6
  assert same[6:] == [name.endswith("one_scale")] * 6


def test_dataset_info_gives_the_configs_classes():
  from progressive import config as config_lib  # pylint: disable=import-outside-toplevel
  from progressive.data import pipeline  # pylint: disable=import-outside-toplevel

  data = config_lib.default_config().data
  for name in ("default", "small_offladder", "object_period"):
    data.builder_config = name
    info = pipeline.dataset_info(data)
    config = ss.builder_config(name)
    assert info.class_names == config.class_names() and info.num_classes == 12
    assert info.class_family == ss.CLASS_FAMILY
    assert info.render_options == config.render_options()
    assert (info.image_size, info.num_train, info.num_test) == (
        config.storage_size, config.num_train, config.num_test)


def test_period_table_marks_what_each_size_keeps():
  default = {row["period"]: row for row in ss.period_check("default")}
  assert default[8]["px"][32] == 4 and default[8]["reads_as"][32] == 4  # The 2x ladder.
  assert not default[8]["ok"][32] and default[8]["ok"][48] and default[2]["ok"][64]
  assert not default[2]["ok"][48]  # 1.5 px: under Nyquist, a 3 px alias is left...
  assert default[2]["alias"][48] == pytest.approx(3) and default[2]["alias"][32] == np.inf
  assert default[8]["alias"][48] is None  # ...and none above it.
  offladder = {row["period"]: row for row in ss.period_check("offladder")}
  assert all(row["reads_as"][n] is None for row in offladder.values() for n in row["px"])
  assert [n for n, ok in offladder[5]["ok"].items() if ok] == [32, 48, 64, 80, 96]
  assert [n for n, ok in offladder[9]["ok"].items() if ok] == [24, 32, 48, 64, 80, 96]
  assert all(all(row["ok"].values()) for row in ss.period_check("small_offladder"))
  obj = {row["period"]: row for row in ss.period_check("object_period", (32, 48))}
  assert obj[4]["px"][32] == (0.3 * 32 / 4, 0.9 * 32 / 4) and not obj[4]["ok"][32]
  assert obj[4]["min_scale"][32] == pytest.approx(0.3125) and obj[4]["ok"][48]
  table = ss.period_table("small_offladder").splitlines()
  assert table[0] == "| classes | 16 px | 24 px | 32 px | 40 px | 48 px | distinguishable at |"
  assert table[2].startswith("| stripes_p5 / checks_p5 | 2.5 | 3.75 |")
  assert len(table) == 2 + 3
  assert "| 4 (as p4) |" in ss.period_table("default")
  assert "| 1.5 (alias 3) |" in ss.period_table("default")


# The parts classes: ears (self-similar) and an eye (fixed period) on one silhouette.
PARTS = ("parts", "small_parts")


def bounding_radii(size, center, object_scale):
  """Distance of each pixel centre from `center`, in units of the bounding radius."""
  coords = (np.arange(size) + 0.5) / size
  return np.hypot(coords[None, :] - center[0], coords[:, None] - center[1]) / (object_scale / 2)


def test_parts_configs_name_their_classes_and_families():
  from progressive import config as config_lib  # pylint: disable=import-outside-toplevel
  from progressive.data import pipeline  # pylint: disable=import-outside-toplevel

  assert ss.PARTS_PERIODS == tuple(2 * p for p in ss.SMALL_PARTS_PERIODS)
  for name, periods, sizes in (("parts", ss.PARTS_PERIODS, (64, 10_000, 2_000)),
                               ("small_parts", ss.SMALL_PARTS_PERIODS, (32, 20_480, 2_048))):
    config = ss.builder_config(name)
    assert (config.storage_size, config.num_train, config.num_test) == sizes
    assert config.class_names() == ("ears_pointed", "ears_round", "ears_square") + tuple(
        f"eye_p{p}" for p in periods)
    assert config.class_family() == (0, 0, 0, 1, 1, 1)
    assert config.family_names() == ss.PART_FAMILY_NAMES == ("self_similar_part",
                                                              "fixed_period_part")
    assert config.scale_range == ss.builder_config("default").scale_range
  data = config_lib.default_config().data
  for name, families in (("small_parts_fresh", ss.PART_FAMILY_NAMES), ("small", ss.FAMILY_NAMES)):
    data.builder_config = name
    info = pipeline.dataset_info(data)
    assert info.family_names == families and len(info.class_family) == info.num_classes
    assert info.render_options == ss.render_options(name)
  assert ss.render_options("small_parts").classes == "parts"
  with pytest.raises(ValueError, match="classes"):
    ss.render(0, 0.5, (0.5, 0.5), 32, classes="kittens")
  with pytest.raises(ValueError, match=r"label must be in \[0, 6\)"):
    ss.render(6, 0.5, (0.5, 0.5), 32, classes="parts")


def test_parts_pairs_differ_only_in_their_part():
  """Same seed and metadata: two ear classes differ only beyond the head (the ears), two
  eye classes only inside the eye; an eye class has the ears its seed names, and an ear
  class a plain eye."""
  options = ss.render_options("parts")._asdict()
  size, scale, center = 64, 0.8, (0.47, 0.52)
  radii = bounding_radii(size, center, scale)
  margin = np.sqrt(0.5) / size / (scale / 2)  # Half a pixel's diagonal.
  for seed in range(4):
    image = [ss.render(label, scale, center, size, seed=seed, **options) for label in range(6)]
    for pair, inside in (((0, 1), (radii >= ss.HEAD_RADIUS - margin) & (radii <= 1 + margin)),
                         ((0, 2), (radii >= ss.HEAD_RADIUS - margin) & (radii <= 1 + margin)),
                         ((1, 2), (radii >= ss.HEAD_RADIUS - margin) & (radii <= 1 + margin)),
                         ((3, 4), radii <= ss.EYE_RADIUS + margin),
                         ((3, 5), radii <= ss.EYE_RADIUS + margin),
                         ((4, 5), radii <= ss.EYE_RADIUS + margin)):
      differ = np.any(image[pair[0]] != image[pair[1]], axis=-1)
      assert differ.any() and not (differ & ~inside).any(), (seed, pair)
    ears = ss.nuisances(seed, texture_periods=options["texture_periods"]).ears
    eye = radii <= ss.EYE_RADIUS - margin
    for label in (3, 4, 5):
      differ = np.any(image[label] != image[ears], axis=-1)
      assert differ.any() and not (differ & (radii > ss.EYE_RADIUS + margin)).any()
    assert len(colour_set(image[ears][eye])) == 1  # A plain eye.


def test_the_eye_keeps_its_pixel_period_when_the_ears_double():
  """Drawn at twice the object scale (same seed, same centre), the eye's stripes are the
  same pixels with the same period, while the ears' outline doubles in size."""
  options = ss.render_options("parts")._asdict()
  size, center = 64, (0.5, 0.5)
  eye_p6 = ss.builder_config("parts").class_names().index("eye_p6")
  coords = (np.arange(size) + 0.5) / size
  for seed in range(4):
    small, large = (ss.render(eye_p6, s, center, size, seed=seed, **options) for s in (0.45, 0.9))
    inner = interior(size, center, 0.45 / 2 * ss.EYE_RADIUS - np.sqrt(0.5) / size)
    np.testing.assert_array_equal(small[inner], large[inner])
    assert len(colour_set(small[inner])) == 2  # Stripes, not a plain eye.
    across = np.abs(coords - 0.5) <= 0.9 / 2 * ss.EYE_RADIUS - 1 / size  # Inside the large eye.
    horizontal = ss.nuisances(seed, texture_periods=options["texture_periods"]).horizontal
    line = large[across, size // 2] if horizontal else large[size // 2, across]
    assert run_period(line) == 6
    # Pixels' worth of outline by which pointed and round ears differ, and how far out.
    ears = [np.abs(ss.object_coverage(0, s, center, size, seed=seed, **options)
                   - ss.object_coverage(1, s, center, size, seed=seed, **options))
            for s in (0.45, 0.9)]
    reach = [bounding_radii(size, center, 1.0)[e > 0].max() for e in ears]
    assert ears[1].sum() / ears[0].sum() == pytest.approx(4, rel=0.05)
    assert reach[1] / reach[0] == pytest.approx(2, rel=0.1)


def test_parts_periods_stay_apart_under_the_zooms_used():
  for name in PARTS:
    rows = ss.period_check(name)
    assert [r["names"] for r in rows] == [(n,) for n in ss.builder_config(name).class_names()[3:]]
    assert all(r["reads_as"][n] is None for r in rows for n in r["px"]), name
  small = {r["period"]: r for r in ss.period_check("small_parts")}
  assert [n for n, ok in small[3]["ok"].items() if ok] == [32, 40, 48]
  assert all(small[5]["ok"].values()) and all(small[9]["ok"].values())


def test_parts_examples_are_redrawn_from_their_metadata(tmp_path):
  from progressive.analysis import shift  # pylint: disable=import-outside-toplevel

  builder = ss.ScaleShapes(config="small_parts", data_dir=str(tmp_path))
  assert builder.info.features["family"].names == list(ss.PART_FAMILY_NAMES)
  examples = []
  for index, example in builder._generate_examples("test", 12):  # pylint: disable=protected-access
    expected = ss.sample_example(index, seed=0, split="test", **config_fields("small_parts"))
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(example["image"]))),
                                  expected["image"])
    assert example["label"] == index % 6 and example["family"] == (index % 6 >= 3)
    examples.append(expected)
  stacked = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
  options = ss.render_options("small_parts")
  views = shift.render_translated(stacked, np.zeros((12, 1, 2), np.int64), 32,
                                  render_options=options)
  np.testing.assert_array_equal(views[:, 0], stacked["image"])


def test_the_parts_sweep_hypothesises_claim_1_within_one_family():
  import pathlib  # pylint: disable=import-outside-toplevel

  from progressive.sweeps import spec  # pylint: disable=import-outside-toplevel

  sweep = spec.load(str(pathlib.Path(__file__).parents[1] / "configs/parts.py"))
  assert {p.config.data.builder_config for p in sweep.expand()} == {"small_parts_fresh"}
  assert [h.name for h in sweep.hypotheses] == ["fixed_period_part_retains_less_at_48",
                                                "fixed_period_part_retains_less_at_24"]
  for h, size in zip(sweep.hypotheses, (48, 24)):
    assert (h.claim, h.predicted, h.contrast.groups()) == (1, "< 0", ["flip32"])
    assert {m for _, m in h.contrast.metrics()} == {
        f"acc_bn_{family}@{s}" for family in ss.PART_FAMILY_NAMES for s in (size, 32)}
    # The fixed-period part keeping 0.5 of its accuracy, the self-similar part 0.9: < 0.
    values = {f"acc_bn_fixed_period_part@{size}": 0.4, "acc_bn_fixed_period_part@32": 0.8,
              f"acc_bn_self_similar_part@{size}": 0.72, "acc_bn_self_similar_part@32": 0.8}
    assert h.contrast.part_value("flip32", values) == pytest.approx(0.5 - 0.9)


def test_the_parts_check_trains_both_arms_twice_as_long_on_two_seeds():
  import pathlib  # pylint: disable=import-outside-toplevel

  from progressive.sweeps import spec  # pylint: disable=import-outside-toplevel

  configs = pathlib.Path(__file__).parents[1] / "configs"
  first, check = (spec.load(f"{configs}/parts.py{arg}") for arg in ("", ":long"))
  stages = {o["name"]: o["stages"][0] for o in first.overrides}
  assert {o["seed"] for o in check.overrides} == set(spec.CHECK_SEEDS)
  for o in check.overrides:
    assert o["stages"][0] == {**stages[o["name"]], "epochs": 2 * stages[o["name"]]["epochs"]}
  assert spec.arm_names(check.overrides) == spec.arm_names(first.overrides)
  assert [str(h.contrast) for h in check.hypotheses] == [str(h.contrast) for h in first.hypotheses]
