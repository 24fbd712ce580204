"""Tests of the built-in `scale_shapes` dataset: rendering, metadata, the TFDS builder."""

import numpy as np
import pytest

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
