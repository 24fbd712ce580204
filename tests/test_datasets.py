"""TFDS datasets through the pipeline, under `tfds.testing.mock_data`.

The mock replaces `builder.as_data_source` by random examples of the real builder's
features (Imagenette's images get random heights and widths, 5 to 49 px), but it still
reads the dataset's metadata (splits, class names) from files: each test writes them
from the TFDS builder's code, with split sizes equal to the mock's example count.
"""

import io
import json
import math
import os
import shutil

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from configs import cifar10, imagenette
from progressive import analysis
from progressive.config import ConfigError, validate
from progressive.data import augment, decode, pipeline, splits
from progressive.sweeps import measure
from progressive.training import train
from progressive.training.metrics import read_rows
from tests import runs

NUM_EXAMPLES = 48
SPLITS = {"cifar10": ("train", "test"), "imagenette/320px-v2": ("train", "validation")}
CONFIGS = {"cifar10": cifar10, "imagenette/320px-v2": imagenette}


def write_metadata(name: str, data_dir, num_examples: int) -> None:
  """The `dataset_info.json` and `features.json` a prepared `name` would have."""
  builder = tfds.builder(name, data_dir=str(data_dir), file_format="array_record")
  template = tfds.core.ShardedFileTemplate(
      data_dir=builder.data_path, dataset_name=builder.name, filetype_suffix="array_record")
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=split, shard_lengths=[num_examples], num_bytes=0,
                          filename_template=template.replace(split=split))
      for split in SPLITS[name]
  ]))
  builder.data_path.mkdir(parents=True)
  builder.info.write_to_directory(builder.data_path)


@pytest.fixture(scope="module")
def metadata_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tfds_metadata")
  for name in SPLITS:
    write_metadata(name, path, NUM_EXAMPLES)
  return path


@pytest.fixture
def mock_tfds(metadata_dir):
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES, data_dir=str(metadata_dir),
                              policy=tfds.testing.MockPolicy.USE_FILES):
    yield


def tfds_config(name, **data):
  config = CONFIGS[name].get_config("smoke")
  config.data.update(data)
  config.progress_bar = False
  return config


def first_batches(split, batch_size, seed, count):
  dataset = split.train_dataset(batch_size, seed)
  return [dataset[i] for i in range(count)]


@pytest.mark.parametrize("name", list(SPLITS))
def test_dataset_info_from_the_prepared_builder(mock_tfds, name):
  info = pipeline.dataset_info(tfds_config(name).data)
  assert info.name == name and info.num_classes == 10 and len(info.class_names) == 10
  assert info.num_train == info.num_test == NUM_EXAMPLES
  assert info.family_names is None
  if name == "cifar10":
    assert info.image_size == 32  # As stored. (Class names come with the prepared data.)
    assert info.mean == pipeline.NORMALIZATION["cifar10"][0]
  else:
    assert info.class_names[0] == "n01440764" and info.image_size == 32  # The smoke size.
    assert info.mean == pipeline.NORMALIZATION["imagenet2012"][0]
  overridden = pipeline.dataset_info(tfds_config(name, mean=(0.1, 0.2, 0.3), std=(1, 1, 1)).data)
  assert overridden.mean == (0.1, 0.2, 0.3) and overridden.std == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("name", list(SPLITS))
def test_train_batches_have_the_fixed_shape(mock_tfds, name):
  config = tfds_config(name, image_size=40)
  source = tfds.data_source(name, split="train")
  shapes = {source[i]["image"].shape for i in range(8)}
  if name.startswith("imagenette"):  # Variable sizes, mostly not square.
    assert len(shapes) > 4 and any(h != w for h, w, _ in shapes)
  split = pipeline.open_split(config.data, "train", train=True)
  assert split.num_examples == NUM_EXAMPLES
  iterator = split.train_iterator(16, seed=0)
  for _ in range(4):  # Past the end of the first epoch.
    batch = next(iterator)
    assert set(batch) == {"image", "label", "unreadable"} and not batch["unreadable"].any()
    assert batch["image"].shape == (16, 40, 40, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].dtype == np.int32
    assert np.all((batch["label"] >= 0) & (batch["label"] < 10))


def test_shards_split_the_examples(mock_tfds):
  config = tfds_config("cifar10")
  shards = [pipeline.open_split(config.data, "test", shard=i, num_shards=3) for i in range(3)]
  assert [s.num_examples for s in shards] == [16, 16, 16]
  whole = next(pipeline.open_split(config.data, "test").eval_batches(NUM_EXAMPLES))
  parts = [next(s.eval_batches(16)) for s in shards]
  np.testing.assert_array_equal(np.concatenate([p["image"] for p in parts]), whole["image"])


def test_augmentation_is_deterministic_and_redrawn_every_epoch(mock_tfds):
  config = tfds_config("imagenette/320px-v2", augment="rrc_flip")
  split = pipeline.open_split(config.data, "train", train=True)
  plain = pipeline.open_split(config.data, "train", train=False)
  # Batches of one epoch each: the same examples, in another order every epoch.
  first = first_batches(split, NUM_EXAMPLES, seed=3, count=2)
  again = first_batches(pipeline.open_split(config.data, "train", train=True), NUM_EXAMPLES, 3, 2)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a["image"], b["image"])
  other_seed = first_batches(split, NUM_EXAMPLES, seed=4, count=1)[0]
  assert not np.array_equal(other_seed["image"], first[0]["image"])
  # The unaugmented split has the same order: it tells which example each row holds.
  order = first_batches(plain, NUM_EXAMPLES, seed=3, count=2)
  keys = [[row.tobytes() for row in batch["image"]] for batch in order]
  assert sorted(keys[0]) == sorted(keys[1]) and keys[0] != keys[1]
  position = {key: i for i, key in enumerate(keys[1])}
  changed = [
      not np.array_equal(first[0]["image"][i], first[1]["image"][position[key]])
      for i, key in enumerate(keys[0])
  ]
  assert np.mean(changed) > 0.75  # Some 5 px mock images crop the same twice.


def test_resumed_iterator_continues_exactly(mock_tfds):
  config = tfds_config("cifar10", augment="rrc_flip")
  split = pipeline.open_split(config.data, "train", train=True)
  iterator = split.train_iterator(16, seed=1)
  for _ in range(4):
    next(iterator)
  resumed = split.train_iterator(16, seed=1)
  resumed.set_state(iterator.get_state())
  for _ in range(3):
    np.testing.assert_array_equal(next(resumed)["image"], next(iterator)["image"])


@pytest.mark.parametrize("augment_name", ["flip", "rrc_flip"])
def test_flip_and_crop_change_the_images(mock_tfds, augment_name):
  config = tfds_config("cifar10", augment=augment_name)  # Eval transform: the identity.
  augmented = first_batches(pipeline.open_split(config.data, "train", train=True), 48, 0, 1)[0]
  plain = first_batches(pipeline.open_split(config.data, "train"), 48, 0, 1)[0]
  np.testing.assert_array_equal(augmented["label"], plain["label"])
  same = [np.array_equal(a, p) for a, p in zip(augmented["image"], plain["image"])]
  mirrored = [np.array_equal(a, p[:, ::-1]) for a, p in zip(augmented["image"], plain["image"])]
  if augment_name == "flip":
    assert all(s or m for s, m in zip(same, mirrored))
    assert 0.2 < np.mean(mirrored) < 0.8
  else:
    assert np.mean(same) < 0.1 and np.mean(mirrored) < 0.1


def test_eval_batches_are_centre_crops_padded_to_the_batch(mock_tfds):
  config = tfds_config("imagenette/320px-v2", image_size=24, eval_crop=0.875)
  split = pipeline.open_split(config.data, "validation")
  batches = list(split.eval_batches(20, num_batches=4))
  assert [int(b["mask"].sum()) for b in batches] == [20, 20, 8, 0]
  for batch in batches:
    assert batch["image"].shape == (20, 24, 24, 3) and set(batch) == {"image", "label", "mask", "unreadable"}
  source = tfds.data_source("imagenette/320px-v2", split="validation")
  for i in (0, 1, 27):
    expected = augment.center_crop(source[i]["image"], 24, 0.875)
    np.testing.assert_array_equal(batches[i // 20]["image"][i % 20], expected)
    assert batches[i // 20]["label"][i % 20] == source[i]["label"]
  assert not batches[3]["image"].any()


def test_centre_crop_takes_the_middle():
  image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
  np.testing.assert_array_equal(augment.center_crop(image, 40), image[:, 10:50])
  np.testing.assert_array_equal(augment.center_crop(image, 20, 0.5), image[10:30, 20:40])
  square = image[:32, :32]
  assert augment.center_crop(square, 32) is square  # Nothing to do.
  np.testing.assert_array_equal(augment.center_crop(square, 28, 0.875), square[2:30, 2:30])


def test_random_resized_crop_boxes_stay_in_range():
  rng = np.random.default_rng(0)
  for height, width in [(32, 32), (320, 480), (300, 200)]:
    boxes = [augment.rrc_box(height, width, rng, scale=(0.35, 1.0)) for _ in range(200)]
    for left, top, right, bottom in boxes:
      assert 0 <= left < right <= width and 0 <= top < bottom <= height
      w, h = right - left, bottom - top
      assert 3 / 4 / 1.1 <= w / h <= 4 / 3 * 1.1  # Up to rounding.
      assert w * h >= 0.35 * 0.85 * height * width
    assert len(set(boxes)) > 150
  assert augment.rrc_box(320, 480, np.random.default_rng(7)) == augment.rrc_box(
      320, 480, np.random.default_rng(7))
  # No crop of ratio >= 3/4 covers 35% of a 500 x 120 image: the centred 3/4 crop instead.
  assert augment.rrc_box(500, 120, rng) == (0, 170, 120, 330)


def test_translate_moves_the_content_and_repeats_the_edges():
  image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
  moved = augment.translate(image, 2, -1)  # 2 px right, 1 px up.
  assert moved.shape == image.shape
  np.testing.assert_array_equal(moved[:3, 2:], image[1:, :3])
  np.testing.assert_array_equal(moved[:3, :2], image[1:, :1].repeat(2, axis=1))  # Left edge.
  np.testing.assert_array_equal(moved[3], moved[2])  # Bottom edge.
  assert augment.translate(image, 0, 0) is image


def _shift_of(out, source, bound):
  """`(dx, dy, flipped)` with `out` equal to `augment.translate(source, dx, dy)` (then
  mirrored if `flipped`), searched within `[-bound, bound]`; None if there is none."""
  c, r = source.shape[0] // 2, 4
  for flipped in (False, True):
    target = out[:, ::-1] if flipped else out
    for dy in range(-bound, bound + 1):
      for dx in range(-bound, bound + 1):
        patch = source[c - r - dy:c + r - dy, c - r - dx:c + r - dx]
        if np.array_equal(target[c - r:c + r, c - r:c + r], patch) and np.array_equal(
            target, augment.translate(source, dx, dy)):
          return dx, dy, flipped
  return None


class _Reader:
  """Examples `images[i]` by index, decoded or PNG-encoded (`decode.Encoded`)."""

  def __init__(self, images, encoded: bool):
    self.images, self.encoded = images, encoded

  def _image(self, image):
    if not self.encoded:
      return image
    data = io.BytesIO()
    Image.fromarray(image).save(data, format="PNG")
    return decode.Encoded(data.getvalue(), "example.png")

  def __call__(self, indices):
    return {"image": [self._image(self.images[i]) for i in indices],
            "label": np.zeros(len(indices), np.int32)}


def test_shift_flip_shifts_within_max_shift_drawn_per_seed_epoch_and_example(mock_tfds):
  """Each example is moved by (dx, dy) in [-3, 3]^2 (every offset of the range drawn),
  then maybe mirrored, from its own (seed, epoch, example) draw: the same for a split
  reopened, for encoded and decoded images, and for another batch size; redrawn every
  epoch and with another seed."""
  config = tfds_config("cifar10", augment="shift_flip", max_shift=3)
  validate(config, jax.device_count())
  split = pipeline.open_split(config.data, "train", train=True)
  shifted = first_batches(split, NUM_EXAMPLES, seed=3, count=2)
  plain = first_batches(pipeline.open_split(config.data, "train"), NUM_EXAMPLES, 3, 2)
  draws = [[_shift_of(out, source, 6) for out, source in zip(a["image"], p["image"])]
           for a, p in zip(shifted, plain)]
  found = [d for epoch in draws for d in epoch]
  assert None not in found
  assert {dx for dx, _, _ in found} == {dy for _, dy, _ in found} == set(range(-3, 4))
  assert 0.2 < np.mean([f for _, _, f in found]) < 0.8
  # Epoch 2 draws again for the same example (the plain split gives the order).
  keys = [[row.tobytes() for row in batch["image"]] for batch in plain]
  second = dict(zip(keys[1], draws[1]))
  assert np.mean([second[k] != d for k, d in zip(keys[0], draws[0])]) > 0.8
  again = first_batches(pipeline.open_split(config.data, "train", train=True), NUM_EXAMPLES, 3, 2)
  for a, b in zip(shifted, again):
    np.testing.assert_array_equal(a["image"], b["image"])
  other_seed = first_batches(split, NUM_EXAMPLES, seed=4, count=1)[0]
  assert not np.array_equal(other_seed["image"], shifted[0]["image"])
  # Encoded images (decoded by the transform) and smaller batches: the same draws.
  source = tfds.data_source("cifar10", split="train")
  images = [source[i]["image"] for i in range(NUM_EXAMPLES)]
  transform = augment.Transform(size=32, augment="shift_flip", max_shift=3)
  for encoded in (False, True):
    split = pipeline.Split(_Reader(images, encoded), num_examples=NUM_EXAMPLES, offset=0,
                           start=0, transform=transform, train=True, num_workers=0)
    batches = first_batches(split, NUM_EXAMPLES // 4, seed=3, count=8)
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in batches]),
                                  np.concatenate([b["image"] for b in shifted]))


@pytest.mark.slow  # End to end: trains and analyses a TFDS run (20 s).
def test_smoke_training_on_mock_cifar10(mock_tfds, tmp_path):
  config = tfds_config("cifar10")
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary.step == 8
  rows = read_rows(tmp_path / "metrics.jsonl")
  assert [r["size"] for r in rows if r["event"] == "train"] == [16, 32]
  evals = [r for r in rows if r["event"] == "eval"]
  assert {(r["step"], r["size"]) for r in evals} == {(4, 16), (4, 32), (8, 16), (8, 32)}
  assert all(r["split"] == "test" and r["examples"] == NUM_EXAMPLES for r in evals)
  assert all(math.isfinite(r["loss"]) for r in evals)
  # A sweep summarises a TFDS run too: shifts by reflection padding, the ensemble over
  # the eval split read as evaluation reads it.
  point = measure.summarize_point(tmp_path, "cifar10", {}, config,
                                  measure.Settings(num_shift_images=8, ensemble_sizes=(16, 32)))
  assert sorted(point["eval"]) == ["16", "32"] and 0 <= point["consistency"] <= 1
  assert 0 <= point["jaggedness"] <= 8 and point["images_seen"] == 8 * config.batch_size
  best = max(r["accuracy"] for r in evals if r["step"] == 8)
  assert point["ensemble_gain"] == pytest.approx(point["ensemble"]["accuracy"] - best, abs=1e-6)
  # So does the analysis report: no object-scale section (scenes cannot be redrawn).
  report = analysis.write_report(analysis.load_run(tmp_path), tmp_path / "analysis",
                                 analysis.Options(num_images=16, stats_images=8))
  shifts = json.loads((tmp_path / "analysis" / "shift.json").read_text())
  assert shifts["sweep"]["mode"] == "reflect" and shifts["sweep"]["num_images"] == 16
  assert "## Multi-size ensemble" in report.read_text() and "object scale" not in report.read_text()
  assert not (tmp_path / "analysis" / "object_scale.png").exists()


def test_imagenette_smoke_config_is_valid(mock_tfds):
  validate(tfds_config("imagenette/320px-v2"), jax.device_count())
  config = tfds_config("imagenette/320px-v2", image_size=None)
  with pytest.raises(ConfigError, match=r"config\.data\.image_size must be set for imagenette"):
    validate(config, jax.device_count())
  config = tfds_config("imagenette/320px-v2", eval_split="test")
  with pytest.raises(ConfigError, match=r"eval_split='test' is not a split .*'validation'"):
    validate(config, jax.device_count())


@pytest.mark.slow
def test_grain_worker_processes_give_the_same_batches(mock_tfds):
  config = tfds_config("cifar10", augment="rrc_flip", num_workers=2)
  split = pipeline.open_split(config.data, "train", train=True)
  iterator = split.train_iterator(16, seed=5)
  expected = first_batches(split, 16, seed=5, count=5)
  for batch in expected[:3]:
    np.testing.assert_array_equal(next(iterator)["image"], batch["image"])
  resumed = split.train_iterator(16, seed=5)
  resumed.set_state(iterator.get_state())
  for batch in expected[3:]:
    np.testing.assert_array_equal(next(resumed)["image"], batch["image"])
  iterator.close()
  resumed.close()


@pytest.fixture
def backend_compiles():
  with runs.backend_compiles() as names:
    yield names


def test_missing_dataset_says_how_to_prepare_it(tmp_path, backend_compiles):
  data_dir, workdir = tmp_path / "tfds", tmp_path / "run"
  data_dir.mkdir()
  config = tfds_config("cifar10", data_dir=str(data_dir))
  with pytest.raises(ConfigError) as error:
    train.train_and_evaluate(config, str(workdir))
  message = str(error.value)
  assert f"tfds build cifar10 --data_dir={data_dir} --file_format=array_record" in message
  assert 'pip install -e ".[prepare]"' in message
  assert not workdir.exists() and not list(data_dir.iterdir())
  assert not [n for n in backend_compiles if "step" in (n or "")]


@pytest.mark.parametrize("edit, pattern", [
    (dict(name="cifar11"), r"config\.data\.name='cifar11' is neither .*list_builders"),
    (dict(augment="crop"),
     r"config\.data\.augment must be one of \['flip', 'none', 'rrc_flip', 'shift_flip'\]"),
    (dict(augment="shift_flip"), r"augment='shift_flip' needs config\.data\.max_shift"),
    (dict(augment="shift_flip", max_shift=0), r"config\.data\.max_shift must be a positive"),
    (dict(augment="flip", max_shift=4), r"max_shift=4 only applies to augment='shift_flip'"),
    (dict(eval_crop=1.5), r"config\.data\.eval_crop must be a number in \(0, 1\], got 1\.5"),
    (dict(rrc_min_scale=0.0), r"config\.data\.rrc_min_scale must be a number in \(0, 1\]"),
    (dict(mean=(0.5, 0.5)), r"config\.data\.mean must be None .* three numbers"),
    (dict(std=(0.2, 0.0, 0.2)), r"config\.data\.std must be positive"),
    (dict(num_workers=-1), r"config\.data\.num_workers must be an integer >= 0"),
    (dict(image_size=0), r"config\.data\.image_size must be a positive integer"),
])
def test_bad_data_fields_name_the_field(edit, pattern):
  config = tfds_config("cifar10")
  config.data.update(edit)
  with pytest.raises(ConfigError, match=pattern):
    validate(config, jax.device_count())


def test_scale_shapes_keeps_its_stored_size(smoke_config):
  smoke_config.data.image_size = 64
  with pytest.raises(ConfigError, match=r"config\.data\.image_size=64 differs from 32"):
    validate(smoke_config, jax.device_count())
  smoke_config.data.image_size = 32
  validate(smoke_config, jax.device_count())


@pytest.mark.slow  # A training run in this process, 9 s on 2 cores: full suite only.
def test_scale_shapes_takes_split_slices_for_validation(smoke_config, tmp_path):
  data = smoke_config.data
  full = pipeline.scale_shapes_examples(data, "train")[0]
  fit = pipeline.scale_shapes_examples(data, "train[:90%]")[0]
  val = pipeline.scale_shapes_examples(data, "train[90%:]")[0]
  assert (len(fit["label"]), len(val["label"])) == (922, 102)
  # Disjoint, and together the whole training split in order.
  np.testing.assert_array_equal(np.concatenate([fit["image"], val["image"]]), full["image"])
  data.train_split, data.eval_split = "train[:90%]", "train[90%:]"
  info = pipeline.dataset_info(data)
  assert (info.num_train, info.num_test) == (922, 102)
  smoke_config.stages = (dict(size=16, steps=2),)
  train.train_and_evaluate(smoke_config, str(tmp_path))
  rows = [r for r in read_rows(tmp_path / "metrics.jsonl") if r["event"] == "eval"]
  assert {r["examples"] for r in rows} == {102} and {r["split"] for r in rows} == {"train[90%:]"}
  data.eval_split = "validation"
  with pytest.raises(ConfigError, match=r"eval_split must be one of \['test', 'train'\] or a slice"):
    validate(smoke_config, 4)


def test_a_built_in_split_is_decoded_once_per_process_until_its_files_change(
    data_dir, tmp_path, monkeypatch):
  """A sweep's points and a notebook's analyses read the split decoded by the first."""
  shutil.copytree(data_dir, tmp_path / "data")
  data = {"name": "scale_shapes", "builder_config": "small", "data_dir": str(tmp_path / "data")}
  reads = []
  as_data_source = tfds.core.DatasetBuilder.as_data_source
  monkeypatch.setattr(tfds.core.DatasetBuilder, "as_data_source",
                      lambda self, **kw: reads.append(kw["split"]) or as_data_source(self, **kw))
  first, start = pipeline.builtin_examples(data, "test")
  again, _ = pipeline.builtin_examples(data, "test")
  assert reads == ["test"] and start == 0
  assert all(again[k] is first[k] for k in first)  # Shared, so read-only.
  with pytest.raises(ValueError, match="read-only"):
    again["image"][0] = 0
  again["extra"] = None  # A caller's own dict: the next caller does not see it.
  assert "extra" not in pipeline.builtin_examples(data, "test")[0]
  pipeline.builtin_examples(data, "test", num=8)  # Another slice, another read.
  assert reads == ["test", "test"]
  # A file of the prepared dataset changed (prepared again): read afresh, same examples.
  record = next(p for p in (tmp_path / "data").rglob("*test.array_record*"))
  os.utime(record, ns=(record.stat().st_atime_ns, record.stat().st_mtime_ns + 1))
  fresh, _ = pipeline.builtin_examples(data, "test")
  assert reads == ["test", "test", "test"]
  assert fresh["image"] is not first["image"]
  np.testing.assert_array_equal(fresh["image"], first["image"])
  # Where the files cannot be listed here (a bucket), every call reads.
  monkeypatch.setattr(os, "scandir", lambda path: (_ for _ in ()).throw(OSError(path)))
  pipeline.builtin_examples(data, "test")
  pipeline.builtin_examples(data, "test")
  assert reads == ["test"] * 5


def test_split_specs_and_shards_follow_tfds_rules():
  counts = {"train": 1000, "test": 200}
  assert splits.split_count("train[:90%]", counts, "f") == 900
  assert splits.split_count("train[90%:]+test", counts, "f") == 300
  assert splits.slice_bounds("train[90%:]", counts, "f") == (900, 1000)
  with pytest.raises(ValueError, match="give one split or one slice"):
    splits.slice_bounds("train+test", counts, "f")
  with pytest.raises(ValueError, match=r"f must be one of \['test', 'train'\]"):
    splits.split_count("val", counts, "f")
  with pytest.raises(ValueError, match="selects no example"):
    splits.split_count("train[5:5]", counts, "f")
  assert splits.folder_and_slice("train[:90%]") == ("train", "[:90%]")
  assert splits.folder_and_slice("val") == ("val", None)
  assert [splits.shard_bounds(10, i, 3) for i in range(3)] == [(0, 3), (3, 6), (6, 10)]
