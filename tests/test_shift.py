"""Shift measures: every scale_shapes scene shifted over the whole period on a grown
canvas, and Azulay & Weiss's canvas protocol against a hand computation."""

import types

import numpy as np
import pytest

from progressive import config as config_lib
from progressive.analysis import plots, shift
from progressive.data import pipeline, scale_shapes
from progressive.sweeps import measure

SIZE, PERIOD = 32, 8


@pytest.fixture(scope="module")
def info():
  data = config_lib.default_config().data
  data.builder_config = "small"
  return pipeline.dataset_info(data)


def _test_batch(num: int = 10) -> dict[str, np.ndarray]:
  """A `small` test batch, its last two scenes at the largest scales (0.9, and 1.0: the
  object touches every border of its canvas)."""
  config = scale_shapes.builder_config("small")
  fields = {"storage_size": config.storage_size, "texture_periods": config.texture_periods,
            "period_mode": config.period_mode}
  examples = [scale_shapes.sample_example(i, seed=0, split="test", scale_range=config.scale_range,
                                          **fields) for i in range(num - 2)]
  examples += [scale_shapes.sample_example(i, seed=0, split="test", scale_range=(s, s), **fields)
               for i, s in ((num - 2, 0.9), (num - 1, 1.0))]
  return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in examples[0]}


class _Recorder:
  """A predictor that keeps every batch of views it is shown (logits all zero)."""

  def __init__(self):
    self.views = []

  def __call__(self, images):
    self.views.append(np.asarray(images))
    return np.zeros((len(images), scale_shapes.NUM_CLASSES), np.float32)


def _object_pixels(view: np.ndarray, background: np.ndarray) -> int:
  return int(np.any(view != background, axis=-1).sum())


def test_every_scene_is_shifted_over_the_whole_period(info):
  examples = _test_batch()
  n = len(examples["label"])
  extent = shift.period_extent(PERIOD)
  # The old protocol could not keep the largest objects inside a 32 px canvas.
  room = examples["object_scale"] / 2 + (extent + 1) / SIZE
  assert np.sum(room > 0.5) >= 2
  record = _Recorder()
  result = shift.period_sweep(record, examples, info, size=SIZE, period=PERIOD)
  assert result["n_images"] == result["num_images"] == n
  assert result["inside"]["left_out"] == 0 and result["inside"]["total"] == n
  assert result["inside"]["would_leave"] >= 2
  assert result["canvas"] == SIZE + PERIOD
  assert result["consistency"] is not None
  shifts = shift.period_shifts(PERIOD)
  for d, (dx, dy) in enumerate(shift.PERIOD_DIRECTIONS):
    views = record.views[d].reshape(n, len(shifts), SIZE + PERIOD, SIZE + PERIOD, 3)
    for i in range(n):
      # The stored image is the scene rendered at 32 px; its pixels are kept at every shift.
      scene = examples["image"][i]
      background = views[i, 0, 0, 0] if (dx, dy) != (1, 1) else views[i, 0, -1, -1]
      assert _object_pixels(scene, background) > 0
      for t, step in enumerate(shifts):
        top, left = extent + step * dy, extent + step * dx
        np.testing.assert_array_equal(views[i, t, top:top + SIZE, left:left + SIZE], scene)
        # Outside the scene only background: the whole object moved, nothing cut off.
        assert _object_pixels(views[i, t], background) == _object_pixels(scene, background)
  # Shift 0 shows the unshifted render in the middle of the grown canvas.
  zero = shifts.index(0)
  first = record.views[0].reshape(n, len(shifts), SIZE + PERIOD, SIZE + PERIOD, 3)[:, zero]
  np.testing.assert_array_equal(first[:, extent:extent + SIZE, extent:extent + SIZE],
                                examples["image"])


def test_sweep_and_consistency_measure_every_scene_on_the_grown_canvas(info):
  examples = _test_batch(6)
  record = _Recorder()
  sweep = shift.shift_sweep(record, examples, info, size=SIZE, max_shift=3)
  assert sweep["n_images"] == 6 and sweep["canvas"] == SIZE + 6
  assert record.views[0].shape[1:3] == (SIZE + 6, SIZE + 6)
  cons = shift.shift_consistency(record, examples, info, size=SIZE, max_shift=3)
  assert cons["n_images"] == 6 and cons["canvas"] == SIZE + 6
  # Modes that pad and crop keep the input size.
  flat = shift.shift_sweep(record, examples, info, size=SIZE, max_shift=3, mode="edge")
  assert flat["canvas"] == SIZE and flat["n_images"] == 6


def test_render_translated_moves_the_whole_scene_and_margin_zero_keeps_the_canvas():
  examples = _test_batch(3)
  options = scale_shapes.render_options("small")
  offsets = np.array([[[0, 0], [2, 0], [0, -3]]] * 3)
  grown = shift.render_translated(examples, offsets, SIZE, render_options=options)
  assert grown.shape == (3, 3, SIZE + 6, SIZE + 6, 3)
  for v in grown.astype(int):
    np.testing.assert_array_equal(v[1], np.roll(v[0], 2, axis=1))
    np.testing.assert_array_equal(v[2], np.roll(v[0], -3, axis=0))
  same = shift.render_translated(examples, offsets, SIZE, render_options=options, margin=0)
  np.testing.assert_array_equal(same[:, 0], examples["image"])
  np.testing.assert_array_equal(same[:, 1, :, 2:], examples["image"][:, :, :-2])


# --- Azulay & Weiss's canvas protocol ---------------------------------------------------

# Three 4 px images, each one flat value, on an 8 px black canvas: the content's left
# column is at x = 0 .. 4. The toy network reads the value (which image) and that column.
VALUES, LABELS = (1.0, 2.0, 3.0), np.array([0, 1, 2])


def _toy_predict(views):
  """Image 1 (label 0): class 0 where the content starts at an even x, else class 1 (class 0
  second). Image 2 (label 1): class 1 where x < 2, else class 0 (class 1 last). Image 3
  (label 2): always class 2."""
  views = np.asarray(views)
  logits = np.zeros((len(views), 3), np.float32)
  for b, view in enumerate(views[..., 0]):
    columns = np.flatnonzero(view.any(axis=0))
    x0, value = columns[0], round(float(view.max()))  # Resizing may leave 0.99999.
    if value == 1:
      logits[b] = [1, 2, 0] if x0 % 2 else [2, 1, 0]
    elif value == 2:
      logits[b] = [0, 2, 1] if x0 < 2 else [2, 0, 1]
    else:
      logits[b] = [0, 0, 1]
  return logits


def _toy_images():
  return np.stack([np.full((4, 4, 1), v, np.float32) for v in VALUES])


def test_canvas_protocol_matches_a_hand_computation():
  result = shift.canvas_protocol(_toy_predict, _toy_images(), LABELS, size=4, canvas=8,
                                 direction=(1, 0))
  assert result["positions"] == [0, 1, 2, 3, 4] and result["n_images"] == 3
  assert result["correct"] == [[1, 0, 1, 0, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
  assert result["changes"] == [4, 1, 0]
  assert result["mean_changes"] == pytest.approx(5 / 3)
  assert result["frac_changed"] == pytest.approx(2 / 3)
  assert result["accuracy"] == pytest.approx(10 / 15)
  assert result["accuracy_by_position"] == pytest.approx([1, 2 / 3, 2 / 3, 1 / 3, 2 / 3])
  low, high = result["mean_changes_ci"]
  assert low <= 5 / 3 <= high
  # Top-2: image 1's class is second where it is not first; image 2's is last for x >= 2.
  top2 = shift.canvas_protocol(_toy_predict, _toy_images(), LABELS, size=4, canvas=8,
                               direction=(1, 0), topk=2)
  assert top2["correct"] == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
  assert top2["mean_changes"] == pytest.approx(1 / 3)


def test_canvas_protocol_moves_down_in_a_filled_canvas_in_batches():
  corners = shift.canvas_positions(4, 8, (0, 1))
  np.testing.assert_array_equal(corners, [[2, 0], [2, 1], [2, 2], [2, 3], [2, 4]])
  views = shift.embed(_toy_images(), corners, 8, fill=-1.0)
  assert views.shape == (3, 5, 8, 8, 1)
  np.testing.assert_array_equal(views[1, 3, 3:7, 2:6, 0], 2.0)  # Down 3, centred across.
  assert (views[1, 3] == -1.0).sum() == 64 - 16
  # The toy reads columns: moving down, every image keeps its centred column, x = 2.
  seen = []

  def predict(batch):
    seen.append(len(batch))
    return _toy_predict(batch)

  result = shift.canvas_protocol(predict, _toy_images(), LABELS, size=4, canvas=8, batch_size=10)
  assert result["correct"] == [[1] * 5, [0] * 5, [1] * 5] and result["mean_changes"] == 0.0
  assert max(seen) <= 10 and sum(seen) == 15
  # Images at another size are resized to `size` first.
  big = np.repeat(np.repeat(_toy_images(), 2, axis=1), 2, axis=2)
  again = shift.canvas_protocol(_toy_predict, big, LABELS, size=4, canvas=8, direction=(1, 0))
  assert again["correct"] == [[1, 0, 1, 0, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
  with pytest.raises(ValueError, match="larger than the image"):
    shift.canvas_positions(8, 8)


def test_canvas_protocol_plot_and_sweep_summary():
  result = shift.canvas_protocol(_toy_predict, _toy_images(), LABELS, size=4, canvas=8,
                                 direction=(1, 0))
  fig = plots.canvas_protocol(result)
  assert len(fig.axes) == 2 and "1.67 changes per image" in fig._suptitle.get_text()  # pylint: disable=protected-access

  def predict_at(views, side):
    assert views.shape[1] == side == 4 + 2 * 2
    return _toy_predict(views)

  examples = {"image": _toy_images(), "label": LABELS}
  summary = measure.canvas_summary(predict_at, examples, size=4, period=2, topk=1)
  # Moving down, the content stays at x = 2: image 2 is wrong everywhere, no changes.
  assert summary == {"aw_jag_top1": 0.0, "aw_jag_top1_ci": [0.0, 0.0], "aw_changed_top1": 0.0,
                     "aw_acc_top1": pytest.approx(2 / 3), "aw_canvas": 8, "aw_images": 3}
  settings = measure.Settings(canvas_topk=5)
  assert settings.options(_config())["canvas_topk"] == 5
  assert "canvas_protocol" in [m.name for m in settings.measures(_config())]
  assert "canvas_protocol" not in [m.name for m in measure.Settings().measures(_config())]


def _config():
  from configs import default  # pylint: disable=import-outside-toplevel

  return default.get_config("smoke")


def test_a_sweep_summary_counts_the_images_of_every_shift_measure(info):
  config = _config()
  size = int(config.stages[-1]["size"])
  sides = []

  def predict_at(images, side):
    sides.append((np.shape(images)[1], side))
    return np.zeros((len(images), info.num_classes), np.float32)

  run = types.SimpleNamespace(config=config, info=info, predict=predict_at)
  summary = measure.shift_summary(run, _test_batch(5), num_images=0, max_shift=3)
  period = summary["shift_period"]
  assert summary["shift_images"] == summary["shift_period_images"] == 5
  assert summary["shift_canvas"] == size + 6
  assert summary["shift_period_canvas"] == size + 2 * shift.period_extent(period)
  assert summary["shift_inside"]["left_out"] == 0
  assert all(shown == side for shown, side in sides)  # Each canvas seen at its own side.


def test_a_network_fixed_at_its_size_sees_the_central_frame_of_a_grown_canvas():
  """A flatten head runs only at its training size: it gets each view's central `size`
  window (the scene shifted inside a `size` frame), never a zoomed canvas."""
  seen = []
  views = np.arange(2 * 40 * 40 * 3, dtype=np.float32).reshape(2, 40, 40, 3)
  predict = shift.in_frame(lambda images, size: seen.append((images, size)) or np.zeros((2, 3)), 32)
  predict(views)
  (images, size), = seen
  assert size == 32 and images.shape == (2, 32, 32, 3)
  np.testing.assert_array_equal(images, views[:, 4:36, 4:36])
