"""Architecture arithmetic: sizes, jumps and receptive fields, checked by hand and by shape."""

import json
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from progressive import models
from progressive.models import geometry, layers

ROOT = pathlib.Path(__file__).parents[1]


def _model_config(**overrides):
  config = default.get_config("smoke").model
  config.update(overrides)
  return config


def _geometry(table, kinds=("conv", "max_pool", "avg_pool", "blur", "gap", "flatten")):
  return [(r["kind"], r["n"], r["j"], r["rf"]) for r in table if r["kind"] in kinds]


def test_simple_cnn_by_hand():
  # Smoke simple CNN, 32 px: 5x5 s2 p2, then 3x3 s2 p1 twice; gap over the 4x4 map.
  table = geometry.layer_table(_model_config(), 32, num_classes=12)
  assert _geometry(table) == [
      ("conv", 16, 2, 5), ("conv", 8, 4, 9), ("conv", 4, 8, 17), ("gap", 1, 32, 17 + 3 * 8),
  ]
  assert [r["params"] for r in table] == [
      5 * 5 * 3 * 8, 3 * 3 * 8 * 16, 3 * 3 * 16 * 32, 0, 32 * 12 + 12,
  ]
  assert [r["norm_params"] for r in table[:3]] == [16, 32, 64]
  assert geometry.totals(table)["params"] == sum(r["params"] + r["norm_params"] for r in table)
  assert geometry.totals(table)["total_stride"] == 8  # Three stride-2 convs; not the gap's jump.


def test_simple_cnn_blur_by_hand():
  # Each conv at stride 1, then BlurPool(3, stride 2): k=3 adds 2 * j before the jump doubles.
  table = geometry.layer_table(_model_config(downsample="blur"), 32)
  assert _geometry(table) == [
      ("conv", 32, 1, 5), ("blur", 16, 2, 7),
      ("conv", 16, 2, 11), ("blur", 8, 4, 15),
      ("conv", 8, 4, 23), ("blur", 4, 8, 31),
      ("gap", 1, 32, 31 + 3 * 8),
  ]
  assert [r["name"] for r in table[:2]] == ["conv0/conv", "conv0/blur"]


def test_simple_cnn_max_on_an_odd_size_by_hand():
  table = geometry.layer_table(_model_config(downsample="max"), 33)
  assert _geometry(table)[:6] == [
      ("conv", 33, 1, 5), ("max_pool", 16, 2, 6),
      ("conv", 16, 2, 10), ("max_pool", 8, 4, 12),
      ("conv", 8, 4, 20), ("max_pool", 4, 8, 24),
  ]


def test_dilation_by_hand():
  # conv1 and conv2: 3x3 with dilation 2 is k_eff = 5, padding 2.
  table = geometry.layer_table(_model_config(dilation=2), 32)
  assert _geometry(table)[:3] == [("conv", 16, 2, 5), ("conv", 8, 4, 13), ("conv", 4, 8, 29)]
  assert [r["dilation"] for r in table[:3]] == [1, 2, 2]


def test_asymmetric_blur_padding_by_hand():
  # Filter 4 pads 1 before and 2 after; max pool 2x2 stride 1 first (MaxBlurPool).
  config = _model_config(name="vgg", vgg_layers=(8, "M"), downsample="blur", blur_size=4)
  table = geometry.layer_table(config, 9)
  assert _geometry(table)[:3] == [("conv", 9, 1, 3), ("max_pool", 8, 1, 4), ("blur", 4, 2, 7)]
  assert table[2]["padding"] == [1, 2] and table[2]["kernel"] == 4


def _row(table, name):
  (row,) = [r for r in table if r["name"] == name]
  return row


@pytest.mark.parametrize(
    "downsample,expected",
    [
        # Block input rf 11 (stem 3, four 3x3 convs at j=1). Main: 3x3 s2 -> 13, 3x3 at j=2 -> 17.
        # Shortcut: 1x1 s2 -> 11. The next block starts from max(17, 11) = 17: 17 + 2 * 2.
        ("stride", {"stage2_block0/conv1/conv": 13, "stage2_block0/conv2/conv": 17,
                    "stage2_block0/shortcut/conv": 11, "stage2_block1/conv1/conv": 21}),
        # Main: conv 13, blur 15 (j 2), conv 19; shortcut: blur 13 then 1x1 13; next: 19 + 4.
        ("blur", {"stage2_block0/conv1/blur": 15, "stage2_block0/conv2/conv": 19,
                  "stage2_block0/shortcut_blur": 13, "stage2_block0/shortcut/conv": 13,
                  "stage2_block1/conv1/conv": 23}),
    ],
)
def test_residual_receptive_fields_follow_the_graph(downsample, expected):
  config = _model_config(name="resnet18", width=0.125, small_stem=True, downsample=downsample)
  table = geometry.layer_table(config, 32)
  assert _row(table, "stage1_block1/conv2/conv")["rf"] == 11
  assert {name: _row(table, name)["rf"] for name in expected} == expected
  assert _row(table, "stage2_block0/shortcut/conv")["j"] == 2


def test_published_receptive_fields_at_224():
  resnet18 = geometry.layer_table(_model_config(name="resnet18"), 224, num_classes=1000)
  assert _row(resnet18, "stage4_block1/conv2/conv")["rf"] == 435  # The commonly cited value.
  assert geometry.totals(resnet18) == {
      "params": 11_689_512, "rf": 435 + 6 * 32, "features_rf": 435, "total_stride": 32,
  }
  # torchvision's v1.5 bottleneck (stride in the 3x3): stem 7 -> pool 11 (j 4); stage 1
  # +3*8 = 35; stage 2 +8 +3*16 = 91; stage 3 +16 +5*32 = 267; stage 4 +32 +2*64 = 427.
  resnet50 = geometry.layer_table(_model_config(name="resnet50"), 224, num_classes=1000)
  assert geometry.totals(resnet50)["features_rf"] == 427
  vgg16 = geometry.layer_table(_model_config(name="vgg16"), 224, num_classes=1000)
  assert _row(vgg16, "conv12/conv")["rf"] == 196 and _row(vgg16, "pool4/max")["rf"] == 212
  assert _row(vgg16, "pool4/max")["n"] == 7 and _row(vgg16, "pool4/max")["j"] == 32
  assert geometry.totals(vgg16)["total_stride"] == 32


ZOO = {
    "simple_cnn": {},
    "vgg": dict(vgg_layers=(8, "M", 16, "M", 16, "M")),
    "vgg11": dict(width=0.125),
    "vgg16": dict(width=0.125),
    "resnet18": dict(width=0.125),
    "resnet34": dict(width=0.125),
    "resnet50": dict(width=0.125),
}


@pytest.mark.parametrize("downsample", ["stride", "max", "avg", "blur"])
@pytest.mark.parametrize("name", sorted(ZOO))
def test_table_sizes_match_the_shapes_apply_produces(name, downsample):
  config = _model_config(name=name, downsample=downsample, **ZOO[name])
  model = models.build(config, num_classes=12)
  size = 45  # Odd sizes are where floor and ceil differ.
  table = geometry.layer_table(config, size, num_classes=12)
  x = jnp.zeros((1, size, size, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  _, state = jax.eval_shape(
      lambda v: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"]), variables
  )
  for row in table:
    node = state["intermediates"]
    for part in row["name"].split("/"):
      node = node[part]
    (out,) = node["__call__"]
    expected = (row["n"], row["n"], row["channels"]) if out.ndim == 4 else (row["channels"],)
    assert out.shape[1:] == expected, row
  params = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(variables["params"]))
  assert geometry.totals(table)["params"] == params
  assert geometry.totals(table)["rf"] >= size  # The global pool covers the whole input.


class _Tiny(nn.Module):
  """A conv VALID stride 2, a dilated conv, a max pool: any Linen module can be traced."""

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(4, (3, 3), strides=2, padding="VALID")(x)
    x = nn.relu(nn.Conv(4, (3, 3), kernel_dilation=2, padding=((2, 2), (2, 2)))(x))
    x = layers.MaxPool(3, 2, 1)(x)
    return nn.Dense(2)(layers.GlobalAvgPool()(x))


def test_any_module_by_hand():
  table = geometry.trace_table(_Tiny(), 21)
  # 21 -> (21 - 3) // 2 + 1 = 10, rf 3; dilated k_eff 5 at j 2: rf 3 + 4 * 2 = 11;
  # pool 3 s2 p1: (10 + 2 - 3) // 2 + 1 = 5, rf 11 + 2 * 2 = 15, j 4; gap: 15 + 4 * 4 = 31.
  assert _geometry(table) == [
      ("conv", 10, 2, 3), ("conv", 10, 2, 11), ("max_pool", 5, 4, 15), ("gap", 1, 20, 31),
  ]
  assert [r["params"] for r in table] == [3 * 3 * 3 * 4 + 4, 3 * 3 * 4 * 4 + 4, 0, 0, 4 * 2 + 2]


def test_covering_layer():
  table = geometry.layer_table(_model_config(name="vgg16", width=0.125), 32)
  assert geometry.covering_layer(table, 24)["name"] == "conv4/conv"  # rf 24 exactly.
  assert geometry.covering_layer(table, 25)["name"] == "conv5/conv"
  assert geometry.covering_layer(table, 1)["name"] == "conv0/conv"
  assert geometry.covering_layer(table, 10_000) is None


def _run_cli(*args):
  result = subprocess.run(
      [sys.executable, "-m", "progressive", "arch", "--config=configs/default.py", *args],
      capture_output=True, text=True, timeout=120, cwd=ROOT, check=True,
  )
  return result.stdout


@pytest.mark.slow
def test_cli_json_and_text():
  rows = json.loads(
      _run_cli("--config.model.name=vgg16", "--size=32", "--num_classes=10", "--json")
  )
  assert {"name", "kind", "n", "j", "rf", "params"} <= set(rows[0])
  assert [r["n"] for r in rows if r["kind"] == "max_pool"] == [16, 8, 4, 2, 1]
  # torchvision's 14,714,688 conv parameters less their 4,224 biases (batch norm follows),
  # plus 2 * 4,224 norm parameters, plus the dense layer 512 * 10 + 10.
  assert sum(r["params"] + r["norm_params"] for r in rows) == 14_714_688 + 4224 + 5130
  text = _run_cli(
      "--config.model.name=vgg16", "--size=32", "--num_classes=10", "--object_px=24"
  )
  assert "parameters 14,724,042; receptive field 212 px" in text
  assert "an object of 24 px is covered from conv4/conv (rf 24) on" in text
