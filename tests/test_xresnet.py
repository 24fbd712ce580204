"""XResNet-18/34/50 against fastai 2.7.18's: parameter counts, logits, every downsample mode,
the ceil-mode shortcut pool, the architecture table and FLOPs.

The references are fastai's own, from tests/make_xresnet_fixtures.py (torch 1.13).
"""

import json
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from progressive import models
from progressive.config import ConfigError, validate
from progressive.models import flops, geometry, layers, xresnet

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
INFO = json.loads((FIXTURES / "xresnet_fastai.json").read_text())
MODES = layers.DOWNSAMPLE_MODES


def _config(name, **overrides):
  config = default.get_config().model
  config.name = name
  config.update(overrides)
  return config


def _param_count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _abstract_variables(model, size):
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))


@pytest.mark.parametrize("name", ["xresnet18", "xresnet34", "xresnet50"])
def test_parameter_counts_equal_fastais(name):
  variables = _abstract_variables(models.build(_config(name), num_classes=1000), 32)
  assert _param_count(variables["params"]) == INFO["params"][name]


_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
           "var": "running_var"}


def _fastai_key(path, state):
  """fastai's state-dict key of the zoo variable at `path` (collection, modules..., leaf).

  fastai's XResNet is one `nn.Sequential`: the stem's ConvLayers 0-2, the max pool 3, the
  stages 4-7 of ResBlocks (`convpath`, `idpath`: a pool first where it subsamples), and
  the linear layer 11. A ConvLayer is conv 0, norm 1.
  """
  _, top, *inner, leaf = path
  if top == "head":
    return f"11.{_LEAVES[leaf]}"
  if top.startswith("stem"):
    prefix = top[len("stem"):]
  else:
    stage, block = re.fullmatch(r"stage(\d)_block(\d+)", top).groups()
    prefix = f"{3 + int(stage)}.{block}"
    layer = inner.pop(0)
    if layer == "shortcut":
      pooled = f"{prefix}.idpath.1.0.weight" in state
      prefix += f".idpath.{int(pooled)}"
    else:
      prefix += f".convpath.{int(layer[len('conv'):]) - 1}"
  (sub,) = inner
  return f"{prefix}.{ {'conv': 0, 'bn': 1}[sub] }.{_LEAVES[leaf]}"


def _from_fastai(fixture, name, model, size):
  """The zoo's variables of `model` from fastai's state dict in `fixture`, each tensor used
  once: convolutions OIHW -> HWIO, the linear layer [out, in] -> [in, out]."""
  state = {k[len(name) + 1:]: v for k, v in fixture.items()
           if k.startswith(f"{name}/") and "/logits" not in k}
  abstract = _abstract_variables(model, size)
  used = []

  def fill(path, leaf):
    names = tuple(getattr(p, "key", p) for p in path)
    key = _fastai_key(names, state)
    used.append(key)
    value = np.asarray(state[key], np.float32)
    if value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)
    elif value.ndim == 2:
      value = value.T
    assert value.shape == leaf.shape, (names, key)
    return jnp.asarray(value)

  variables = jax.tree_util.tree_map_with_path(fill, abstract)
  assert sorted(used) == sorted(state), set(state) ^ set(used)
  return variables


@pytest.mark.parametrize("name", ["xresnet18", pytest.param("xresnet50", marks=pytest.mark.slow)])
def test_logits_equal_fastais(name):
  fixture = dict(np.load(FIXTURES / "xresnet_fastai.npz"))
  config = _config(name, width=INFO["widen"])
  model = models.build(config, num_classes=INFO["num_classes"])
  variables = _from_fastai(fixture, name, model, 32)
  for size in INFO["sizes"] if name == "xresnet18" else INFO["sizes"][-1:]:  # 65: odd maps.
    images = fixture[f"images{size}"].astype(np.float32).transpose(0, 2, 3, 1)
    logits = np.asarray(jax.jit(model.apply)(variables, images))
    expected = fixture[f"{name}/logits{size}"]
    scale = np.abs(expected).max()
    assert np.abs(logits - expected).max() <= 1e-5 * scale, size
    assert scale > 1  # Not a degenerate network.


def test_ceil_avg_pool_is_torchs():
  # torch's AvgPool2d(2, ceil_mode=True) of arange(9) as 3x3: the windows cut by the edge
  # average the pixels they cover, the corner alone.
  x = jnp.arange(9.0).reshape(1, 3, 3, 1)
  y = xresnet.CeilAvgPool().apply({}, x)
  np.testing.assert_array_equal(y[0, :, :, 0], [[2.0, 3.5], [6.5, 8.0]])
  pool = xresnet.CeilAvgPool()
  assert [pool.pads(n) for n in (1, 2, 3, 4, 65)] == [(0, 1), (0, 0), (0, 1), (0, 0), (0, 1)]
  # A 3-wide window with stride 2 on 6 px: torch's ceil mode adds a third window at 4.
  assert xresnet.CeilAvgPool(3, 2).pads(6) == (0, 1)


@pytest.mark.parametrize("expansion,last", [(1, "conv2"), (4, "conv3")])
def test_the_last_norm_of_a_block_starts_at_zero(expansion, last):
  block = xresnet.ResBlock(4, layers.ConvNormAct, expansion, stride=2)
  params = jax.jit(block.init)(jax.random.key(0), jnp.zeros((1, 5, 5, 8)))["params"]
  assert set(params) == {f"conv{i}" for i in range(1, 2 + (expansion > 1) + 1)} | {"shortcut"}
  for layer, values in params.items():
    scale = np.asarray(values["bn"]["scale"])
    assert (scale == 0).all() if layer == last else (scale == 1).all(), layer


def _macs_by_hand(size, num_classes):
  """XResNet-18's multiply-adds at `size` (a multiple of 32), from its layers."""
  n = size // 2
  macs = n * n * 9 * (3 * 32 + 32 * 32 + 32 * 64)
  n //= 2
  c_in = 64
  for i, c in enumerate((64, 128, 256, 512)):
    if i:
      n //= 2
      macs += n * n * c_in * c  # The shortcut's 1x1 conv, after its pool.
    macs += n * n * 9 * (c_in * c + 3 * c * c)  # Two blocks of two 3x3 convs.
    c_in = c
  return macs + 512 * num_classes


def test_flops_count_the_layers():
  model = models.build(_config("xresnet18"), num_classes=10)
  assert flops.forward_macs(model, 64) == _macs_by_hand(64, 10)


def _concrete(abstract, seed=0):
  """Random variables of the shapes in `abstract` (numpy, so nothing is compiled):
  weights N(0, 0.1), batch-norm means 0 and variances 1."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if getattr(path[-1], "key", None) == "var":
      return jnp.ones(leaf.shape, leaf.dtype)
    if getattr(path[-1], "key", None) == "mean":
      return jnp.zeros(leaf.shape, leaf.dtype)
    return jnp.asarray(0.1 * rng.standard_normal(leaf.shape), leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


# xresnet50: 9 s here, so in the full suite only.
@pytest.mark.parametrize("name", ["xresnet18", pytest.param("xresnet50", marks=pytest.mark.slow)])
def test_every_downsample_mode_builds_with_the_same_parameters(name):
  counts = set()
  for mode in MODES:
    config = _config(name, width=0.0625, downsample=mode, blur_size=4)
    model = models.build(config, num_classes=5)
    # The traced table checks every layer's size against the shape it produced. 35 px: the
    # shortcuts subsample odd maps in every mode (9, 5, 3 px at stride and blur; 9 px at
    # max and avg). At the minimum size, max rounds down to 1 px before the head.
    for size in (models.min_input_size(config), 35) if mode == "max" else (35,):
      table = geometry.trace_table(model, size)
      counts.add(geometry.totals(table)["params"])
      assert geometry.totals(table)["total_stride"] == 32
    rows = {r["name"]: r for r in table}
    site = "blur" if mode == "blur" else "pool"
    shortcut = rows[f"stage2_block0/shortcut_{site}"]
    assert shortcut["kind"] == {"stride": "avg_pool", "max": "max_pool", "avg": "avg_pool",
                                "blur": "blur"}[mode]
    # The main branch (its strided conv, or its pool after the conv) and the shortcut round
    # an odd side the same way: 9 -> 5 at stride and blur (up), 9 -> 4 at max and avg (down).
    main = rows["stage2_block0/" + ("conv1" if name == "xresnet18" else "conv2") + "/" +
                ("conv" if mode == "stride" else site)]
    assert main["n"] == shortcut["n"] == (4 if mode in ("max", "avg") else 5), mode
  assert len(counts) == 1  # Pools and BlurPool have no parameters.


@pytest.mark.slow  # 3 s; every mode's trace and parameter count stay quick above.
def test_every_downsample_mode_runs():
  images = np.random.default_rng(1).standard_normal((2, 35, 35, 3)).astype(np.float32)
  outputs = {}
  for mode in ("max", "avg", "blur"):  # The logits test runs "stride".
    model = models.build(_config("xresnet18", width=0.0625, downsample=mode), num_classes=5)
    variables = _concrete(_abstract_variables(model, 35))
    outputs[mode] = np.asarray(jax.jit(model.apply)(variables, images))
    assert outputs[mode].shape == (2, 5) and np.isfinite(outputs[mode]).all(), mode
  # The same weights, subsampled three ways: three different functions.
  assert len({o.tobytes() for o in outputs.values()}) == 3


def test_published_rows_at_an_odd_size():
  rows = {r["name"]: r for r in geometry.layer_table(_config("xresnet18"), 65)}
  # 65 -> 33 (stem) -> 17 (pool) -> 9: the ceil-mode pool's last window holds one column.
  pool = rows["stage2_block0/shortcut_pool"]
  assert (pool["kind"], pool["kernel"], pool["stride"], pool["padding"], pool["n"]) == (
      "avg_pool", 2, 2, [0, 1], 9)
  assert [rows[f"stem{i}/conv"]["n"] for i in range(3)] == [33, 33, 33]
  assert rows["stem_pool/max"]["n"] == 17


def test_stem_switches():
  def stem_rows(**overrides):
    table = geometry.layer_table(_config("xresnet18", downsample="blur", **overrides), 64)
    return {r["name"]: r for r in table if r["name"].startswith("stem")}

  rows = stem_rows()  # The first conv at stride 1, then BlurPool; the pool 3x3 at stride 1.
  assert (rows["stem0/conv"]["stride"], rows["stem0/blur"]["stride"]) == (1, 2)
  assert (rows["stem_pool/max"]["kernel"], rows["stem_pool/max"]["stride"]) == (3, 1)
  rows = stem_rows(subsample_stem=False, max_blur_pool="zhang")
  assert rows["stem0/conv"]["stride"] == 2 and "stem0/blur" not in rows
  assert (rows["stem_pool/max"]["kernel"], rows["stem_pool/max"]["padding"]) == (2, 0)


def test_small_stem_is_refused():
  config = default.get_config()
  config.model.name = "xresnet34"
  config.model.small_stem = True
  with pytest.raises(ConfigError, match="small_stem only applies to resnet18/34/50"):
    validate(config, num_devices=4)
  config.model.small_stem = False
  validate(config, num_devices=4)


@pytest.mark.slow
def test_arch_prints_the_xresnet50_table():
  result = subprocess.run(
      [sys.executable, "-m", "progressive", "arch", "--config=configs/default.py",
       "--config.model.name=xresnet50", "--size=224", "--num_classes=1000"],
      capture_output=True, text=True, timeout=120, cwd=ROOT, check=True,
  )
  lines = result.stdout.splitlines()
  assert lines[0] == "xresnet50, downsample=stride, 1000 classes"
  rows = {line.split()[0]: line.split()[1:] for line in lines[2:-1]}
  # kind, k, s, p, d, n, j, rf, channels
  assert rows["stem0/conv"][:9] == ["conv", "3", "2", "1", "1", "112", "2", "3", "32"]
  assert rows["stem_pool/max"][:6] == ["max_pool", "3", "2", "1", "1", "56"]
  # rf: the stem's 15 px, three bottlenecks' 3x3 convs at j=4 (+24), the 2x2 pool (+4).
  assert rows["stage2_block0/shortcut_pool"][:9] == [
      "avg_pool", "2", "2", "0", "1", "28", "8", "43", "256"]
  assert rows["head/dense"][-3:] == ["1000", "2,049,000", "0"]
  assert lines[-1].startswith(f"input 224 px; parameters {INFO['params']['xresnet50']:,};")
