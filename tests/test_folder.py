"""Image-folder datasets and host decoding at each stage's size, on real photographs."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from configs import folder as folder_config
from progressive import config as config_lib
from progressive.data import augment, decode, folder, pipeline
from progressive.data.resize import resize_images
from progressive.training import train
from progressive.training.metrics import read_rows
from tests.runs import Killed, assert_same_params, die_after_save, train_rows

CLASSES = ("brick", "camera", "coffee")


def _jpeg(image: Image.Image, **kwargs) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format="JPEG", quality=90, **kwargs)
  return buffer.getvalue()


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory):
  """Real photographs in every form a folder may hold: JPEGs, a PNG, a greyscale, an
  RGBA, a palette, a CMYK and an EXIF-rotated JPEG."""
  root = folder.write_photo_folder(tmp_path_factory.mktemp("photos"), {"train": 10, "val": 4},
                                   size=(200, 150), classes=CLASSES)
  brick = Image.open(root / "train" / "brick" / "00000.jpg")
  brick.convert("L").save(root / "train" / "brick" / "grey.png")
  Image.open(root / "train" / "camera" / "00001.jpg").convert("RGBA").save(
      root / "train" / "camera" / "alpha.png")
  Image.open(root / "train" / "coffee" / "00002.jpg").convert("P").save(
      root / "train" / "coffee" / "palette.gif")
  Image.open(root / "val" / "coffee" / "00000.jpg").convert("CMYK").save(
      root / "val" / "coffee" / "cmyk.jpg")
  exif = Image.Exif()
  exif[0x0112] = 6  # Rotate 90 degrees clockwise to display.
  (root / "train" / "brick" / "rotated.jpg").write_bytes(
      _jpeg(brick.transpose(Image.Transpose.ROTATE_90), exif=exif))
  return root


def _config(root, arg="smoke"):
  config = folder_config.get_config(arg)
  config.data.data_dir = str(root)
  return config


def test_index_is_sorted_classes_fixed_order_and_cached(photo_root):
  config = _config(photo_root)
  info = pipeline.dataset_info(config.data)
  assert info.class_names == CLASSES and info.num_classes == 3
  assert info.num_train == 3 * 10 + 4 and info.num_test == 3 * 4 + 1
  assert info.stage_sized and info.train_image_size(16) == 16 and info.image_size == 32
  index = folder.split_index(config.data, "train")
  assert sorted(index.paths) != list(index.paths)  # Classes mixed for contiguous shards.
  assert all(CLASSES[label] == path.split("/")[0] for path, label in zip(index.paths, index.labels))
  cache = photo_root / folder.INDEX_DIR / "train.json"
  assert cache.exists()
  # A cached index is read back as it was; a changed class folder rebuilds it.
  assert folder.split_index(config.data, "train") == index
  extra = photo_root / "train" / "camera" / "extra.jpg"
  extra.write_bytes((photo_root / "train" / "camera" / "00000.jpg").read_bytes())
  try:
    assert len(folder.split_index(config.data, "train").paths) == len(index.paths) + 1
  finally:
    extra.unlink()
  assert folder.split_index(config.data, "train") == index
  # A TFDS-style slice is a contiguous part of the fixed order.
  part = folder.split_index(config.data, "train[80%:]")
  assert part.paths == index.paths[-len(part.paths):] and 0 < len(part.paths) < len(index.paths)


def test_every_image_mode_becomes_rgb_with_orientation(photo_root):
  for name in ("brick/grey.png", "camera/alpha.png", "coffee/palette.gif"):
    image = decode.decode((photo_root / "train" / name).read_bytes())
    assert image.dtype == np.uint8 and image.shape == (150, 200, 3)
  grey = decode.decode((photo_root / "train" / "brick" / "grey.png").read_bytes())
  assert np.array_equal(grey[..., 0], grey[..., 2])
  assert decode.decode((photo_root / "val" / "coffee" / "cmyk.jpg").read_bytes()).shape == (150, 200, 3)
  upright = decode.decode((photo_root / "train" / "brick" / "00000.jpg").read_bytes())
  rotated = decode.decode((photo_root / "train" / "brick" / "rotated.jpg").read_bytes())
  assert rotated.shape == upright.shape  # The EXIF rotation undone.
  assert np.abs(rotated.astype(int) - upright).mean() < 3
  assert decode.image_size(photo_root / "train" / "brick" / "rotated.jpg") == (150, 200)


def test_stage_size_decoding_matches_full_decode_then_resize():
  """For the same crop box, decoding at reduced DCT scale and resizing once is within a
  stated tolerance of decoding in full and resizing: mean |difference| under 2 of 255."""
  import skimage.data  # pylint: disable=import-outside-toplevel

  photo = Image.fromarray(skimage.data.chelsea()).resize((500, 375))
  data = _jpeg(photo)
  full = decode.decode(data)
  rng = np.random.default_rng(0)
  for size in (32, 64, 128, 224):
    box = augment.rrc_box(375, 500, rng)
    fast = decode.decode_region(data, size, lambda h, w, box=box: box)
    slow = augment.resize_box(full, size, box)
    unreduced = decode.decode_region(data, size, lambda h, w, box=box: box, reduce=False)
    np.testing.assert_array_equal(unreduced, slow)
    difference = np.abs(fast.astype(int) - slow)
    assert fast.shape == (size, size, 3)
    assert difference.mean() < 2.0, (size, difference.mean())
    assert np.percentile(difference, 99) < 16, (size, np.percentile(difference, 99))
    # And what training saw before: the crop resized to 224 px on the host, then zoomed
    # to the stage size on the device (two resamplings instead of one).
    before = np.asarray(resize_images(augment.resize_box(full, 224, box)[None], size)[0])
    assert np.abs(fast - before).mean() < 2.0, (size, np.abs(fast - before).mean())


def test_draft_actually_reduces_the_decode():
  import skimage.data  # pylint: disable=import-outside-toplevel

  data = _jpeg(Image.fromarray(skimage.data.astronaut()))
  with Image.open(io.BytesIO(data)) as image:
    image.draft("RGB", (64, 64))
    assert image.size == (64, 64)  # 512 / 8: the scaled IDCT this module relies on.


def test_training_batches_come_at_the_stage_size(photo_root):
  config = _config(photo_root)
  split = pipeline.open_split(config.data, "train", train=True)
  assert next(split.train_iterator(8, seed=0, size=16))["image"].shape == (8, 16, 16, 3)
  batch = next(split.train_iterator(8, seed=0, size=24))
  assert batch["image"].shape == (8, 24, 24, 3) and batch["image"].dtype == np.uint8
  eval_batch = next(split.eval_batches(8))
  assert eval_batch["image"].shape == (8, 32, 32, 3)


@pytest.mark.slow
def test_folder_trains_two_stages_and_resumes_exactly(photo_root, tmp_path, monkeypatch):
  config = _config(photo_root)
  config.checkpoint_every_steps = 2
  reference = train.train_and_evaluate(config, str(tmp_path / "reference"))
  assert reference.step == 8
  assert {r["size"] for r in reference.compile if r["kind"] == "train"} == {16, 32}
  die_after_save(monkeypatch, 6)  # Mid-way through stage 1.
  with pytest.raises(Killed):
    train.train_and_evaluate(config, str(tmp_path / "killed"))
  monkeypatch.undo()
  resumed = train.train_and_evaluate(config, str(tmp_path / "killed"))
  assert_same_params(resumed.state.params, reference.state.params)
  assert train_rows(tmp_path / "killed") == train_rows(tmp_path / "reference")


@pytest.fixture
def broken_root(photo_root, tmp_path):
  root = tmp_path / "broken"
  for split in ("train", "val"):
    for name in CLASSES:
      (root / split / name).mkdir(parents=True)
      for file in sorted(os.listdir(photo_root / split / name))[:6]:
        (root / split / name / file).write_bytes((photo_root / split / name / file).read_bytes())
  return root


def _refused(root, match, **fields):
  config = _config(root)
  for key, value in fields.items():
    config.data[key] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(config, 1)


@pytest.mark.slow  # A training run in this process, 7 s on 2 cores: full suite only.
def test_corrupt_file_is_named_before_compiling_or_skipped_and_counted(broken_root, tmp_path, capsys):
  bad = broken_root / "train" / "camera" / "notes.jpg"
  bad.write_bytes(b"not an image at all")
  _refused(broken_root, r"notes\.jpg is not a readable image.*skip_unreadable=True")
  config = _config(broken_root)
  config.data.skip_unreadable = True
  config_lib.validate(config, 1)
  info = pipeline.dataset_info(config.data)
  assert info.num_skipped == 1 and info.num_train == 18
  result = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert result.step == 8
  rows = [r for r in read_rows(tmp_path / "run" / "metrics.jsonl") if r["event"] == "data"]
  assert len(rows) == 1 and rows[0].items() >= {"step": 0, "skipped_unreadable": 1}.items()


def test_bad_layouts_are_refused_with_the_fix(broken_root):
  empty = broken_root / "train" / "zebra"
  empty.mkdir()
  _refused(broken_root, r"class folder .*zebra has no images")
  (empty / "1.jpg").write_bytes((broken_root / "train" / "brick" / "00000.jpg").read_bytes())
  _refused(broken_root, r"class folders of 'train' and 'val' differ.*only in the first: \['zebra'\]")
  _refused(broken_root, r"no folder .*validation.*split folders \['train', 'val'\]",
           eval_split="validation")
  _refused(broken_root / "nowhere", r"data_dir=.*nowhere' is not a folder")
  _refused(broken_root, r"data_dir must be the dataset root", data_dir=None)
  _refused(broken_root, r"image_size must be set", image_size=None)


def test_tfds_images_stay_encoded_and_decode_at_the_stage_size(tmp_path):
  """A prepared TFDS dataset is read as encoded bytes and decoded at the stage's size;
  with the same draws, the batches equal those made from decoded arrays (PNG: no DCT)."""
  from progressive.data import scale_shapes  # pylint: disable=import-outside-toplevel

  builder = scale_shapes.prepare("small", str(tmp_path))
  encoded = pipeline._encoded_source(builder, "train")  # pylint: disable=protected-access
  assert isinstance(encoded[0]["image"], bytes)
  transform = augment.Transform(32, "rrc_flip")

  def batch(source, size):
    split = pipeline.Split(pipeline._TfdsReader(source, "image", "label"),  # pylint: disable=protected-access
                           num_examples=64, offset=0, start=0, transform=transform, train=True,
                           num_workers=0, stage_sized=True)
    return next(split.train_iterator(8, seed=3, size=size))["image"]

  decoded = builder.as_data_source(split="train")
  for size in (16, 24):
    assert batch(encoded, size).shape == (8, size, size, 3)
    np.testing.assert_array_equal(batch(encoded, size), batch(decoded, size))


@pytest.mark.slow  # A benchmark: 6 s.
def test_pipeline_bench_measures_every_size_and_the_cores_a_rate_needs(photo_root):
  from progressive.training import benchmark  # pylint: disable=import-outside-toplevel

  config = _config(photo_root)
  report = benchmark.measure_pipeline(config, sizes=[16, 32], workers=[1], data_dir=photo_root,
                              batch_size=8, seconds=0.2, device_rate={32: 1e6})
  assert [r["size"] for r in report["rows"]] == [16, 32]
  for row in report["rows"]:
    assert row["images"] == 34 and row["core_img_s"] > 0 and row["fixed_core_img_s"] > 0
    assert row["workers_1_img_s"] > 0
    assert row["workers_1_efficiency"] == pytest.approx(row["workers_1_img_s"] / row["core_img_s"])
    assert row["workers_1_scaling"] == pytest.approx(1.0)
  small, large = report["rows"]
  assert small["device_img_s"] is None and small["cores_needed"] is None
  assert large["cores_needed"] == -(-1e6 // large["core_img_s"])
  table = benchmark.pipeline_table(report, [1])
  assert table.count("\n") == 3 and "| 32 |" in table
  assert benchmark.parse_rates(["128:14000", "224:5700"]) == {128: 14000.0, 224: 5700.0}
  with pytest.raises(ValueError, match="SIZE:IMAGES_PER_SECOND"):
    benchmark.parse_rates(["128"])
