"""Invariance analyses on photographs: the standard view against torchvision's own output,
Azulay & Weiss's canvas and crop shifts, Zhang's consistency and the resolution sweep on
constructed predictors whose answers are known at every position, and `progressive
invariance` end to end on a trained folder run (slow)."""

import json
import pathlib
import shutil
import types

import ml_collections
import numpy as np
import pytest
from PIL import Image

from configs import folder as folder_config
from progressive import analysis, cli
from progressive.analysis import invariance, plots
from progressive.commands import invariance as invariance_command
from progressive.data import folder, views
from progressive.training import train
from tests.test_console import progressive

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "views"


# --- The standard view -----------------------------------------------------------------------


def test_standard_view_is_torchvision_pixel_for_pixel():
  """tests/make_views_fixture.py saved torchvision 0.14's Resize + CenterCrop (Pillow 9.4) of
  a landscape, a portrait and a small photograph; here Pillow is another version and every
  pixel still agrees (measured: no difference at all)."""
  reference = np.load(FIXTURES / "views.npz")
  assert len(reference.files) == 9
  for key in reference.files:
    name, resize_px, crop_px, interpolation = key.split("_")
    image = Image.open(FIXTURES / f"{name}.png").convert("RGB")
    view = views.standard_view(image, int(resize_px), int(crop_px), interpolation)
    assert view.dtype == np.uint8 and view.shape == reference[key].shape, key
    np.testing.assert_array_equal(view, reference[key], err_msg=key)
  # Bilinear and bicubic differ: the comparison can tell them apart.
  chelsea = Image.open(FIXTURES / "chelsea.png").convert("RGB")
  assert not np.array_equal(views.standard_view(chelsea, 146, 128, "bilinear"),
                            reference["chelsea_146_128_bicubic"])


def _fake_run(pretrained=None, size=32, head="gap"):
  config = ml_collections.ConfigDict({"model": {"head": head}})
  if pretrained is not None:
    config.pretrained = pretrained
  return types.SimpleNamespace(config=config, train_size=size, workdir=pathlib.Path("/runs/x"))


def test_view_settings_of_imported_and_trained_runs():
  imported = _fake_run({"arch": "resnet50", "resize_px": 232, "crop_px": 224,
                        "interpolation": "bicubic"})
  assert views.view_settings(imported) == (232, 224, "bicubic")
  assert views.view_settings(_fake_run(size=32)) == (37, 32, "bilinear")  # round(32 * 8 / 7).
  assert views.view_settings(_fake_run(size=224)) == (256, 224, "bilinear")
  trained = _fake_run({"arch": None, "resize_px": None, "crop_px": None, "interpolation": None})
  assert views.view_settings(trained) == (37, 32, "bilinear")


# --- Folders of images -------------------------------------------------------------------------


def test_a_folder_is_read_by_class_name_stratified_and_unreadable_files_counted(tmp_path):
  rng = np.random.default_rng(0)
  for name, count in (("n02", 5), ("n01", 2), ("n03", 1)):
    (tmp_path / name).mkdir()
    for i in range(count):
      pixels = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
      Image.fromarray(pixels).save(tmp_path / name / f"{i}.jpg", quality=90)
  good = (tmp_path / "n02" / "0.jpg").read_bytes()
  (tmp_path / "n02" / "broken.jpg").write_bytes(good[:len(good) // 2])  # Truncated.
  (tmp_path / "n02" / ".hidden").write_text("x")
  files = views.list_folder(tmp_path)
  assert list(files) == ["n01", "n02", "n03"] and len(files["n02"]) == 6
  order = views.choose(files, seed=3)
  assert sorted(p for _, p in order) == sorted(p for ps in files.values() for p in ps)
  assert {c for c, _ in order[:3]} == {"n01", "n02", "n03"}  # One of each class first.
  assert [c for c, _ in order[3:5]].count("n02") == 1  # Then the two with more, in turn.
  assert order == views.choose(files, seed=3) and order != views.choose(files, seed=4)
  broken_first = sorted(order, key=lambda entry: "broken" not in entry[1])
  loaded = views.load_images(broken_first, 4)
  assert len(loaded["images"]) == 4 and loaded["images"][0].mode == "RGB"
  assert len(loaded["unreadable"]) == 1 and "broken.jpg" in loaded["unreadable"][0]
  everything = views.load_images(order, None)
  assert len(everything["images"]) == 8 and len(everything["unreadable"]) == 1

  labels = views.class_labels(list(files), ["n00", "n01", "n02", "n03"], tmp_path, "resnet50")
  assert labels == {"n01": 1, "n02": 2, "n03": 3}
  with pytest.raises(views.ImagesError) as error:
    views.class_labels(list(files), ["n00", "n01", "n02"], tmp_path, "resnet50")
  message = cli.one_line(error.value)
  assert str(tmp_path / "n03") in message and "n00, n01, n02" in message
  assert message == str(error.value)
  with pytest.raises(views.ImagesError, match="is not a folder"):
    views.list_folder(tmp_path / "missing")
  (tmp_path / "empty" / "n01").mkdir(parents=True)
  with pytest.raises(views.ImagesError, match="holds no images"):
    views.list_folder(tmp_path / "empty")


# --- Azulay & Weiss's canvas protocol on a predictor whose ranks are known ------------------

OBJECT, CANVAS, CLASSES = 4, 10, 8  # 7 positions, the other axis centred at 3.
# The true class's rank at each position, per image: moving down (x = 3) and across (y = 3).
DOWN = [[0, 0, 0, 0, 0, 0, 0], [1, 0, 1, 0, 1, 0, 1], [5, 4, 4, 4, 4, 4, 5]]
ACROSS = [[6, 6, 0, 0, 0, 6, 6], [2, 2, 2, 0, 7, 7, 7], [4, 4, 4, 4, 4, 4, 4]]


def _rank_predict(views_batch):
  """Finds each image (its grey level 50, 100 or 150 names it: labels 0, 1, 2) and its
  top-left corner in the black canvas, and puts its class at the rank the tables give."""
  views_batch = np.asarray(views_batch)
  logits = np.zeros((len(views_batch), CLASSES), np.float32)
  for b, view in enumerate(views_batch[..., 0]):
    ys, xs = np.nonzero(view)
    label = round(float(view.max()) / 50) - 1
    x, y = xs.min(), ys.min()
    rank = DOWN[label][y] if x == 3 else ACROSS[label][x]
    others = [c for c in range(CLASSES) if c != label]
    order = others[:rank] + [label] + others[rank:]
    logits[b, order] = np.arange(CLASSES, 0, -1)
  return logits


def test_canvas_shifts_give_the_jaggedness_the_ranks_imply_in_both_directions():
  images = np.stack([np.full((OBJECT, OBJECT, 3), 50.0 * (i + 1)) for i in range(3)])
  calls = []

  def predict(batch):
    calls.append(len(batch))
    return _rank_predict(batch)

  result = invariance.canvas_shifts(predict, images, np.arange(3), object_px=OBJECT,
                                    canvas_px=CANVAS, fill="black")
  assert calls == [21, 21]  # Each direction's 3 x 7 views predicted once, for top-1 and top-5.
  down, across = result["directions"]["vertical"], result["directions"]["horizontal"]
  assert down["direction"] == [0, 1] and across["direction"] == [1, 0]
  for entry, ranks in ((down, DOWN), (across, ACROSS)):
    for k in (1, 5):
      correct = (np.asarray(ranks) < k).astype(int)
      assert entry[f"top{k}"]["correct"] == correct.tolist()
      assert entry[f"top{k}"]["positions"] == list(range(7))
  # Hand counts: changes per image, the fraction that change, accuracy over the 21 views.
  expected = {("vertical", 1): ([0, 6, 0], 1 / 3, 10 / 21),
              ("vertical", 5): ([0, 0, 2], 1 / 3, 19 / 21),
              ("horizontal", 1): ([2, 2, 0], 2 / 3, 4 / 21),
              ("horizontal", 5): ([2, 1, 0], 2 / 3, 14 / 21)}
  for (name, k), (changes, changed, accuracy) in expected.items():
    measures = result["directions"][name][f"top{k}"]
    assert measures["changes"] == changes, (name, k)
    assert measures["mean_changes"] == pytest.approx(np.mean(changes))
    assert measures["frac_changed"] == pytest.approx(changed)
    assert measures["accuracy"] == pytest.approx(accuracy)
    low, high = measures["mean_changes_ci"]
    assert low <= np.mean(changes) <= high
  assert down["top5"]["accuracy_by_position"] == pytest.approx([2 / 3, 1, 1, 1, 1, 1, 2 / 3])
  fig = plots.shift_grids(result, topk=5)
  assert len(fig.axes) == 4 and "0.67 changes per image" in fig.axes[0].get_title()


def test_the_canvas_is_the_mean_colour_the_network_sees_as_zero():
  seen = []

  def predict(batch):
    seen.append(np.asarray(batch)[:, 0, 0])
    return np.zeros((len(batch), 2), np.float32)

  images = np.full((1, 8, 8, 3), 200, np.uint8)  # Resized to the 4 px object first.
  result = invariance.canvas_shifts(predict, images, [0], object_px=4, canvas_px=6,
                                    mean=(0.5, 0.25, 0.125), directions=("horizontal",))
  assert result["fill"] == [127.5, 63.75, 31.875]
  np.testing.assert_allclose(np.concatenate(seen), [[127.5, 63.75, 31.875]] * 3)
  np.testing.assert_array_equal(invariance.fill_colour("black"), [0, 0, 0])
  for bad in ("grey", (1, 2), (0, 0, 300)):
    with pytest.raises(ValueError, match="fill must be"):
      invariance.fill_colour(bad)


# --- Their crop protocol, and the object box ------------------------------------------------


def _coordinates(width: int, height: int) -> Image.Image:
  """Red = x, green = y of each pixel: a window's top-left pixel says where it was cut."""
  y, x = np.mgrid[:height, :width]
  return Image.fromarray(np.stack([x, y, np.zeros_like(x)], axis=-1).astype(np.uint8))


def _corner_predict(batch):
  """Class 1 where the window's left edge is a multiple of 3, else class 0."""
  left = np.asarray(batch)[:, 0, 0, 0].astype(int)
  return np.stack([left % 3 != 0, left % 3 == 0], axis=1).astype(np.float32)


def test_crop_shifts_move_the_window_and_keep_the_box_inside():
  image = _coordinates(60, 40)  # Resize 40: unchanged. Centre crop of 32: left 14, top 4.
  plain = invariance.crop_shifts(_corner_predict, [image], [1], crop_px=32, resize_px=40)
  assert plain["max_shift"] == 4 and plain["positions"] == list(range(-4, 5))
  across = plain["directions"]["horizontal"]["top1"]
  lefts = np.arange(10, 19)
  assert across["correct"] == [(lefts % 3 == 0).astype(int).tolist()]
  assert across["changes"] == [5] and across["mean_positions"] == 9
  down = plain["directions"]["vertical"]["top1"]  # Left stays 14: never a multiple of 3.
  assert down["correct"] == [[0] * 9] and down["changes"] == [0]

  # A box from x 12 to 42 and y 5 to 30: windows with left 10..12 hold it, moving across;
  # moving down the window's left (14) cuts it, so the image is left out of that path.
  # The second image has no box: left out of both.
  boxed = invariance.crop_shifts(_corner_predict, [image, image], [1, 1], crop_px=32,
                                 resize_px=40, boxes=[(12, 5, 42, 30), None])
  across = boxed["directions"]["horizontal"]["top1"]
  assert across["correct"] == [[0, 0, 1] + [None] * 6] and across["changes"] == [1]
  assert across["n_images"] == 1 and across["left_out"] == 1 and across["measured"] == [0]
  assert across["accuracy"] == pytest.approx(1 / 3)
  assert across["accuracy_by_position"][:3] == [0, 0, 1] and across["accuracy_by_position"][3] is None
  down = boxed["directions"]["vertical"]["top1"]
  assert down["n_images"] == 0 and down["left_out"] == 2 and down["mean_changes"] is None
  fig = plots.shift_grids(boxed, topk=1)
  assert fig.axes[0].get_title() == "vertical: no images"
  assert "1.00 changes per image" in fig.axes[1].get_title()

  # The box is scaled with the resize: the same photograph at twice the size, its box too.
  big = invariance.crop_shifts(lambda b: np.zeros((len(b), 2)), [image.resize((120, 80))], [1],
                               crop_px=32, resize_px=40, boxes=[(24, 10, 84, 60)])
  kept = [c is not None for c in big["directions"]["horizontal"]["top1"]["correct"][0]]
  assert kept == [True] * 3 + [False] * 6


def test_read_boxes_unites_the_true_class_and_scales_it(tmp_path):
  xml = tmp_path / "ILSVRC2012_val_00000001.xml"
  xml.write_text(
      "<annotation><folder>val</folder><filename>ILSVRC2012_val_00000001</filename>"
      "<size><width>500</width><height>375</height><depth>3</depth></size>"
      "<object><name>n01751748</name><bndbox><xmin>111</xmin><ymin>108</ymin>"
      "<xmax>441</xmax><ymax>193</ymax></bndbox></object>"
      "<object><name>n01751748</name><bndbox><xmin>50</xmin><ymin>150</ymin>"
      "<xmax>200</xmax><ymax>300</ymax></bndbox></object>"
      "<object><name>n09999999</name><bndbox><xmin>0</xmin><ymin>0</ymin>"
      "<xmax>10</xmax><ymax>10</ymax></bndbox></object></annotation>")
  assert invariance.read_boxes(xml, (500, 375), "n01751748") == (50, 108, 441, 300)
  assert invariance.read_boxes(xml, (250, 750), "n01751748") == (25, 216, 220.5, 600)
  assert invariance.read_boxes(xml, (500, 375)) == (0, 0, 441, 300)
  assert invariance.read_boxes(xml, (500, 375), "n00000000") is None
  image = Image.new("RGB", (250, 750))
  found = invariance.find_boxes(tmp_path, [image, image], ["n01751748", "n01751748"],
                                ["/val/n01751748/ILSVRC2012_val_00000001.JPEG", "/val/x/other.JPEG"])
  assert found == [(25, 216, 220.5, 600), None]
  with pytest.raises(invariance.InvarianceError, match="no annotation of these images"):
    invariance.find_boxes(tmp_path, [image], ["n01751748"], ["/val/n01751748/other.JPEG"])


# --- Zhang's consistency ----------------------------------------------------------------------


def test_consistency_of_a_blind_predictor_is_one_and_of_an_offset_rule_what_its_draws_give():
  images = [_coordinates(64, 64) for _ in range(50)]  # Resize 64, crop 32: offsets 0..32.
  blind = invariance.consistency(lambda b: np.tile([0.0, 1.0], (len(b), 1)), images[:5],
                                 resize_px=64, crop_px=32, draws=3)
  assert blind["consistency"] == 1.0 and blind["consistency_ci"] == [1.0, 1.0]
  assert blind["by_draw"] == [1.0, 1.0, 1.0]

  def thirds(batch):  # Class 1 where the window's left edge is a multiple of 3.
    left = np.asarray(batch)[:, 0, 0, 0].astype(int)
    return np.stack([left % 3 != 0, left % 3 == 0], axis=1).astype(np.float32)

  result = invariance.consistency(thirds, images, resize_px=64, crop_px=32, draws=20, seed=1,
                                  labels=np.ones(50, int))
  offsets = np.asarray(result["offsets"])  # [image, draw, view, (x, y)]
  assert offsets.shape == (50, 20, 2, 2) and offsets.min() == 0 and offsets.max() == 32
  agree = (offsets[:, :, 0, 0] % 3 == 0) == (offsets[:, :, 1, 0] % 3 == 0)
  assert result["consistency"] == pytest.approx(agree.mean())
  assert result["by_draw"] == pytest.approx(agree.mean(axis=0))
  assert result["accuracy"] == pytest.approx((offsets[..., 0] % 3 == 0).mean())
  # In expectation: 11 of the 33 lefts are multiples of 3, so p^2 + (1 - p)^2 = 5/9.
  assert abs(result["consistency"] - 5 / 9) < 0.05
  low, high = result["consistency_ci"]
  assert low < result["consistency"] < high


# --- The resolution sweep ---------------------------------------------------------------------


class _SizedRun:
  """A run whose top-1 depends on the test size only through its batch-norm statistics:
  stored ones are right at 32 px, those recomputed at S are right from 28 px up."""

  def __init__(self, recalibrated_at=None, head="gap", seen=None):
    self.config = ml_collections.ConfigDict({"model": {"head": head}})
    self.train_size, self.has_batch_norm, self.workdir = 32, True, pathlib.Path("/runs/sized")
    self.recalibrated_at, self.seen = recalibrated_at, seen if seen is not None else []

  def predict(self, images, size):
    assert images.shape[1:] == (size, size, 3) and images.dtype == np.uint8
    right = size == 32 if self.recalibrated_at is None else size >= 28
    logits = np.zeros((len(images), 6), np.float32)
    logits[:, 2 if right else 0] = 1.0  # Every image's label is 2.
    return logits

  def recalibrated(self, size, images):
    self.seen.append((size, images.shape, images.dtype))
    return _SizedRun(size, seen=self.seen)


def test_resolution_sweep_names_the_statistics_of_every_row():
  photos = [_coordinates(60, 40), _coordinates(40, 50)]
  bn = [_coordinates(30, 30)] * 3
  run = _SizedRun()
  result = invariance.resolution_sweep(run, photos, [2, 2], sizes=(24, 28, 32, 40), bn_images=bn)
  assert [(r["size"], r["resize_px"], r["bn"], r["top1"]) for r in result["rows"]] == [
      (24, 27, "stored", 0.0), (24, 27, "recomputed from 3 images", 0.0),
      (28, 32, "stored", 0.0), (28, 32, "recomputed from 3 images", 1.0),
      (32, 37, "stored", 1.0), (32, 37, "recomputed from 3 images", 1.0),
      (40, 46, "stored", 0.0), (40, 46, "recomputed from 3 images", 1.0)]
  assert run.seen == [(s, (3, s, s, 3), np.uint8) for s in (24, 28, 32, 40)]
  assert result["peak"] == {"stored": 32, "recomputed from 3 images": 28}
  assert result["bn_images"] == 3 and result["left_out"] == {}
  stored_only = invariance.resolution_sweep(_SizedRun(), photos, [2, 2], sizes=(32, 40))
  assert {r["bn"] for r in stored_only["rows"]} == {"stored"} and stored_only["bn_images"] is None
  flatten = invariance.resolution_sweep(_SizedRun(head="flatten"), photos, [2, 2], sizes=(24, 32))
  assert flatten["sizes"] == [32] and "only at 32 px" in flatten["left_out"]["24"]
  assert invariance.default_sizes(224) == list(invariance.SIZES)
  assert invariance.default_sizes(32) == [18, 23, 27, 32, 37, 41, 46, 55, 64]
  fig = plots.resolution_sweep(result)
  assert len(fig.axes[0].get_lines()) == 5  # Two columns of top-1 and top-5, the 32 px line.


def test_a_workdir_that_is_not_a_run_is_one_line(tmp_path, capsys):
  fv = cli.parse(invariance_command.COMMAND, ["progressive invariance", f"--workdir={tmp_path}",
                                              f"--images={tmp_path}"])
  assert cli.execute(invariance_command.COMMAND, fv) == cli.EXIT_ERROR
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "holds no run" in err
  with pytest.raises(cli.Error, match="--experiments=canvas,shapes: choose from"):
    invariance_command._options(cli.parse(  # pylint: disable=protected-access
        invariance_command.COMMAND, ["p", "--workdir=x", "--images=y",
                                     "--experiments=canvas,shapes"]))


# --- On a trained folder run ------------------------------------------------------------------

CLASSES_3 = ("astronaut", "camera", "coffee")


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory):
  return folder.write_photo_folder(tmp_path_factory.mktemp("photos"), {"train": 8, "val": 4},
                                   size=(64, 48), classes=CLASSES_3)


@pytest.fixture(scope="module")
def trained(photo_root, tmp_path_factory):
  """configs/folder.py:smoke, one 32 px stage of 4 steps: batch norm's stored statistics
  have not settled, so recomputing them changes the answers."""
  config = folder_config.get_config("smoke")
  config.data.data_dir = str(photo_root)
  config.stages = ({"size": 32, "steps": 4},)
  config.eval_sizes = (32,)
  workdir = tmp_path_factory.mktemp("run") / "simple_cnn"
  train.train_and_evaluate(config, str(workdir))
  return workdir


def _pil(paths):
  return [views.open_image(p) for p in paths]


@pytest.mark.slow
def test_resolution_sweep_of_a_trained_run_differs_with_recomputed_statistics(trained, photo_root):
  run = analysis.load_run(trained)
  val = sorted(pathlib.Path(photo_root, "val").glob("*/*.jpg"))
  labels = [CLASSES_3.index(p.parent.name) for p in val]
  bn = _pil(sorted(pathlib.Path(photo_root, "train").glob("*/*.jpg")))
  result = invariance.resolution_sweep(run, _pil(val), labels, sizes=(24, 32), bn_images=bn)
  stored = {r["size"]: r["top1"] for r in result["rows"] if r["bn"] == "stored"}
  recomputed = {r["size"]: r["top1"] for r in result["rows"] if r["bn"] == "recomputed from 24 images"}
  assert set(stored) == set(recomputed) == {24, 32}
  assert stored != recomputed, (stored, recomputed)
  # The stored column at the run's own size is the standard view's accuracy, computed apart.
  views_32 = views.standard_views(_pil(val), 37, 32)
  own = float((np.argmax(run.predict(views_32, 32), -1) == labels).mean())
  assert stored[32] == pytest.approx(own)


@pytest.mark.slow
def test_invariance_command_end_to_end_on_two_runs(trained, photo_root, tmp_path):
  """The installed command from another directory, no PYTHONPATH: two runs (the same
  network twice) see the same images and give the same row; the per-run files and the
  table; the one-line refusals of a missing folder and of classes the run lacks."""
  second = tmp_path / "copy"
  shutil.copytree(trained, second)
  shutil.rmtree(second / "analysis", ignore_errors=True)
  out = tmp_path / "table"
  args = ["invariance", f"--workdir={trained},{second}", f"--images={photo_root}/val",
          f"--bn_images={photo_root}/train", "--num_images=9", "--sizes=24,32", f"--out={out}",
          "--draws=2"]
  result = progressive(args, cwd=tmp_path)
  assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
  assert "9 images of 3 classes" in result.stdout
  for workdir in (trained, second):
    folder_out = workdir / "analysis" / "invariance"
    for name in ("summary", "canvas", "crops", "consistency", "resolution"):
      assert (folder_out / f"{name}.json").exists(), name
    for name in ("canvas", "crops", "resolution"):
      assert (folder_out / f"{name}.png").stat().st_size > 1000, name
  summary = json.loads((trained / "analysis" / "invariance" / "summary.json").read_text())
  assert (summary["canvas_px"], summary["object_px"], summary["k"]) == (32, 14, 1)
  assert len(summary["paths"]) == 9 and len({pathlib.Path(p).parent.name
                                             for p in summary["paths"]}) == 3
  canvas = json.loads((trained / "analysis" / "invariance" / "canvas.json").read_text())
  assert len(canvas["directions"]["vertical"]["top1"]["positions"]) == 32 - 14 + 1
  resolution = json.loads((trained / "analysis" / "invariance" / "resolution.json").read_text())
  stored_32 = next(r for r in resolution["rows"] if r["size"] == 32 and r["bn"] == "stored")
  assert stored_32["top1"] == pytest.approx(summary["top1"])
  lines = (out / "invariance.csv").read_text().splitlines()
  assert len(lines) == 3 and lines[0].startswith("name,workdir,size,n_images,top1,top5,k,")
  assert lines[1].split(",")[2:] == lines[2].split(",")[2:]  # The same numbers for both.
  markdown = (out / "invariance.md").read_text()
  assert markdown.count("| simple_cnn |") == 1 and "| copy |" in markdown

  missing = progressive(["invariance", f"--workdir={trained}", f"--images={tmp_path}/none"],
                        cwd=tmp_path)
  assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0
  assert "is not a folder" in missing.stderr
  shutil.copytree(photo_root / "val", tmp_path / "val")
  (tmp_path / "val" / "coffee").rename(tmp_path / "val" / "n01440764")
  foreign = progressive(["invariance", f"--workdir={trained}", f"--images={tmp_path}/val"],
                        cwd=tmp_path)
  assert foreign.returncode == 2 and foreign.stderr.strip().count("\n") == 0
  assert "n01440764" in foreign.stderr and "astronaut, camera, coffee" in foreign.stderr
