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


def _geometry(
    table, kinds=("conv", "max_pool", "avg_pool", "blur", "gap", "flatten", "adaptive_pool")
):
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


def test_a_table_is_remembered_per_model_config_and_size():
  """The analyses ask for the same model's table at every point of a sweep."""
  geometry._remembered_table.cache_clear()
  first = geometry.layer_table(_model_config(), 32)
  first[0]["rf"] = 0  # The caller's own rows.
  assert geometry.layer_table(_model_config(), 32)[0]["rf"] == 5
  assert geometry._remembered_table.cache_info()[:2] == (1, 1)
  assert geometry.layer_table(_model_config(downsample="max"), 32) != first  # Another model.
  assert geometry._remembered_table.cache_info()[:2] == (1, 2)


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


def test_adaptive_head_by_hand():
  # conv 3, pool 4 (j 2), conv 8, pool 10 (j 4) on an 8x8 map; the adaptive pool's 7 cells
  # of 8 rows are 2 wide ([0, 2), [1, 3), ...) and its dense layers read all of them: the
  # whole map, 10 + 7 * 4 = 38, as a gap head would see.
  config = _model_config(name="vgg", vgg_layers=(8, "M", 16, "M"), head="adaptive",
                         head_hidden=(32,))
  table = geometry.layer_table(config, 32, num_classes=12)
  assert _geometry(table) == [
      ("conv", 32, 1, 3), ("max_pool", 16, 2, 4), ("conv", 16, 2, 8), ("max_pool", 8, 4, 10),
      ("adaptive_pool", 7, None, 38),
  ]
  pool = _row(table, "head/adaptive")
  assert (pool["kernel"], pool["stride"], pool["channels"], pool["params"]) == (2, None, 16, 0)
  assert [(r["name"], r["rf"], r["params"]) for r in table[-2:]] == [
      ("head/hidden0", 38, 7 * 7 * 16 * 32 + 32), ("head/dense", 38, 32 * 12 + 12),
  ]
  assert geometry.totals(table) == {
      "params": 3 * 3 * 3 * 8 + 16 + 3 * 3 * 8 * 16 + 32 + 7 * 7 * 16 * 32 + 32 + 32 * 12 + 12,
      "rf": 38, "features_rf": 10, "total_stride": 4,
  }
  # 3x3 maps at 12 px: cells of 3 rows into 7 repeat rows, at most 2 wide.
  small = geometry.layer_table(config, 12, num_classes=12)
  assert _row(small, "head/adaptive")["kernel"] == 2 and _row(small, "head/adaptive")["n"] == 7


@pytest.mark.parametrize(
    "max_blur_pool,expected",
    [
        # Stem conv 7x7 at stride 1 (rf 7), BlurPool 3 (n 32, j 2, rf 9); then the stem pool.
        # "same": the published 3x3 window, padding 1, stride 1: n 32, rf 9 + 2 * 2 = 13.
        ("same", [("max_pool", 32, 2, 13), ("blur", 16, 4, 17)]),
        # "zhang": 2x2, no padding: n 31, rf 9 + 2; its BlurPool (31 + 2 - 3) // 2 + 1 = 16.
        ("zhang", [("max_pool", 31, 2, 11), ("blur", 16, 4, 15)]),
    ],
)
def test_max_blur_pool_in_the_resnet_stem_by_hand(max_blur_pool, expected):
  config = _model_config(name="resnet18", width=0.125, downsample="blur",
                         max_blur_pool=max_blur_pool)
  table = geometry.layer_table(config, 64)
  assert _geometry(table)[:2] == [("conv", 64, 1, 7), ("blur", 32, 2, 9)]
  assert [r["name"] for r in table[2:4]] == ["stem_pool/max", "stem_pool/blur"]
  assert _geometry(table)[2:4] == expected
  window = {"same": (3, 1), "zhang": (2, 0)}[max_blur_pool]
  assert (table[2]["kernel"], table[2]["stride"], table[2]["padding"]) == (window[0], 1, window[1])


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
def test_cli_shows_zhangs_stem_pool_and_the_adaptive_head():
  text = _run_cli(
      "--config.model.name=resnet18", "--config.model.downsample=blur",
      "--config.model.max_blur_pool=zhang", "--config.model.head=adaptive", "--size=64",
      "--num_classes=10",
  )
  rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[2:-1]}
  # kind, k, s, p, d, n, j, rf: the 2x2 unpadded max pool at stride 1; the 2x2 stage-4 map
  # pooled to 7x7 cells (at most 2 wide), no single stride or jump.
  assert rows["stem_pool/max"][:8] == ["max_pool", "2", "1", "0", "1", "31", "2", "11"]
  assert rows["head/adaptive"][:7] == ["adaptive_pool", "2", "-", "0", "1", "7", "-"]
  assert rows["head/dense"][-3:] == ["10", "250,890", "0"]  # 7 * 7 * 512 * 10 + 10.


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
