"""FLOPs counted from the traced architecture: a hand count for the simple CNN, and no
backend involved in counting."""

import jax

from progressive.models import flops, simple_cnn
from tests.runs import backend_compiles


def _hand_count(size: int, channels=(32, 64, 128, 256), num_classes: int = 10, stride: int = 2):
  """Multiply-adds of the simple CNN by hand: per conv, output pixels x c_out x k x k x c_in
  (stride-2 convs with padding k // 2 halve the side; with `stride=1` the conv keeps it,
  and a pool after it halves), then the dense head on the pooled features."""
  total, side, c_in = 0, size, 3
  for i, c_out in enumerate(channels):
    k = 5 if i == 0 else 3
    out_side = side // 2 if stride == 2 else side
    total += out_side * out_side * c_out * k * k * c_in
    side, c_in = side // 2, c_out
  return total + channels[-1] * num_classes


def test_the_simple_cnn_matches_a_hand_count():
  model = simple_cnn.SimpleCNN(num_classes=10, channels=(32, 64, 128, 256))
  per_layer = flops.layer_macs(model, 32)
  # 16x16x32 x 5x5x3, then 8x8x64, 4x4x128 and 2x2x256 each x 3x3 x the channels before.
  assert per_layer == {"conv0/conv": 614_400, "conv1/conv": 1_179_648, "conv2/conv": 1_179_648,
                       "conv3/conv": 1_179_648, "head/dense": 2_560}
  assert flops.forward_macs(model, 32) == _hand_count(32) == 4_155_904
  assert flops.forward_macs(model, 64) == _hand_count(64)  # Convs scale with the pixels.
  assert flops.train_flops(model, 32) == 3 * 2 * 4_155_904
  # Max pooling after stride-1 convolutions: every conv computes 4x the outputs.
  pooled = simple_cnn.SimpleCNN(num_classes=10, channels=(32, 64, 128, 256), downsample="max")
  assert flops.forward_macs(pooled, 32) == _hand_count(32, stride=1) == 4 * (4_155_904 - 2_560) + 2_560


def test_counting_reads_shapes_and_compiles_nothing(fresh_compiles):
  """The count comes from the traced program's shapes, before any backend lowers it: no
  XLA compile happens, so every backend gives the same number."""
  model = simple_cnn.SimpleCNN(num_classes=10, channels=(32, 64, 128, 256))
  flops._layer_macs.cache_clear()  # Counted here, not remembered from another test.
  with backend_compiles() as compiles:
    count = flops.forward_macs(model, 32)
    counted = list(compiles)
    jax.jit(lambda x: x * 3.0)(jax.numpy.ones(7))  # The listener hears a compile.
  assert counted == [] and count == _hand_count(32) and compiles


def test_a_count_is_remembered_per_model_and_size():
  """A sweep counts every point's model: an equal module at the same size is counted once,
  and each caller gets a dict of its own."""
  flops._layer_macs.cache_clear()
  first = flops.layer_macs(simple_cnn.SimpleCNN(num_classes=10, channels=(32, 64, 128, 256)), 32)
  first["conv0/conv"] = 0
  again = flops.layer_macs(simple_cnn.SimpleCNN(num_classes=10, channels=(32, 64, 128, 256)), 32)
  assert again["conv0/conv"] == 614_400
  assert flops._layer_macs.cache_info()[:2] == (1, 1)  # One hit, one miss.
  flops.layer_macs(simple_cnn.SimpleCNN(num_classes=10, channels=(32, 64, 128, 256)), 64)
  assert flops._layer_macs.cache_info()[:2] == (1, 2)  # Another size, counted.


def test_scans_count_their_body_per_iteration():
  def fn(x, w):
    return jax.lax.scan(lambda carry, _: (carry @ w, None), x, None, length=5)[0]

  counted = flops.traced_macs(fn, jax.ShapeDtypeStruct((2, 4), "float32"),
                              jax.ShapeDtypeStruct((4, 4), "float32"))
  assert sum(counted.values()) == 5 * 2 * 4 * 4  # Five [2, 4] @ [4, 4] products.


def test_a_config_counts_the_model_it_builds():
  """`config_train_flops` (what a sweep file matches budgets with) is `train_flops` of the
  model the config's `model` group builds: the hand count, 4x the convolutions with max
  pooling."""
  from configs import default  # pylint: disable=import-outside-toplevel

  config = default.get_config().model
  config.channels = (32, 64, 128, 256)
  assert flops.config_train_flops(config, 32, 10) == 3 * 2 * _hand_count(32)
  config.downsample = "max"
  assert flops.config_train_flops(config, 32, 10) == 3 * 2 * _hand_count(32, stride=1)
