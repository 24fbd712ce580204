r"""Writes the torch references of the zoo's pooling layers to tests/fixtures/ (run with
the system python, which has torch, and antialiased-cnns on the path):

    pip download --no-deps antialiased-cnns==0.3 -d /tmp/aa
    PYTHONPATH=/tmp/aa/antialiased_cnns-0.3-py3-none-any.whl /usr/bin/python3 \
        tests/make_zoo_fixtures.py

- `adaptive_pool.npz`: random `[2, 3, H, W]` inputs, H and W from {3, 5, 7, 9, 14, 15}
  (every square and six oblong pairs), and torch's `adaptive_avg_pool2d(x, 7)` of each
  (`x_<H>x<W>`, `y_<H>x<W>`).
- `zhang_stem_pool.npz`: one random `[2, 4, 10, 11]` input (`x`) and antialiased-cnns'
  ResNet stem pool, `nn.Sequential(nn.MaxPool2d(2, stride=1), BlurPool(C, filt_size=f,
  stride=2))`, of it for f in 3, 4, 5 (`y_<f>`).
- `zhang_blocks.npz`: antialiased-cnns' `BasicBlock(8, 16)` and `Bottleneck(8, 4)` (16
  channels out) at stride 2 with `filter_size=4` and their BlurPool-then-1x1 shortcut,
  as `ResNet._make_layer` builds them, random weights and batch-norm statistics, in
  evaluation mode: `<block>.<name>` for every tensor of the state dict, `<block>:x` a
  random `[2, 8, 9, 10]` input and `<block>:y` the block's output.

Arrays are torch's NCHW; tests/test_models.py transposes them. Deterministic (seed 0).
"""

import pathlib

import numpy as np
import torch
import torch.nn.functional as F
from antialiased_cnns.blurpool import BlurPool
from antialiased_cnns.resnet import BasicBlock, Bottleneck
from torch import nn

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
SIDES = (3, 5, 7, 9, 14, 15)
SHAPES = [(h, h) for h in SIDES] + [(3, 15), (15, 3), (5, 9), (14, 7), (9, 14), (7, 5)]
FILTER_SIZES = (3, 4, 5)


def adaptive_pool(rng: np.random.Generator) -> dict[str, np.ndarray]:
  arrays = {}
  for h, w in SHAPES:
    x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
    arrays[f"x_{h}x{w}"] = x
    arrays[f"y_{h}x{w}"] = F.adaptive_avg_pool2d(torch.from_numpy(x), 7).numpy()
  return arrays


def zhang_stem_pool(rng: np.random.Generator) -> dict[str, np.ndarray]:
  x = rng.standard_normal((2, 4, 10, 11)).astype(np.float32)
  arrays = {"x": x}
  for size in FILTER_SIZES:
    pool = nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=1),
                         BlurPool(x.shape[1], filt_size=size, stride=2))
    with torch.no_grad():
      arrays[f"y_{size}"] = pool(torch.from_numpy(x)).numpy()
  return arrays


def zhang_blocks(rng: np.random.Generator) -> dict[str, np.ndarray]:
  torch.manual_seed(0)
  arrays = {}
  for name, block, planes in (("basic", BasicBlock, 16), ("bottleneck", Bottleneck, 4)):
    inplanes, out = 8, planes * block.expansion
    shortcut = nn.Sequential(BlurPool(inplanes, filt_size=4, stride=2),
                             nn.Conv2d(inplanes, out, 1, bias=False), nn.BatchNorm2d(out))
    module = block(inplanes, planes, stride=2, downsample=shortcut, filter_size=4)
    for layer in module.modules():
      if isinstance(layer, nn.BatchNorm2d):  # Statistics and affine terms away from 0 and 1.
        layer.running_mean.uniform_(-0.5, 0.5)
        layer.running_var.uniform_(0.5, 1.5)
        layer.weight.data.uniform_(0.5, 1.5)
        layer.bias.data.uniform_(-0.2, 0.2)
    module.eval()
    x = rng.standard_normal((2, inplanes, 9, 10)).astype(np.float32)
    with torch.no_grad():
      arrays[f"{name}:y"] = module(torch.from_numpy(x)).numpy()
    arrays[f"{name}:x"] = x
    for key, value in module.state_dict().items():
      if not key.endswith(("num_batches_tracked", ".filt")):
        arrays[f"{name}.{key}"] = value.numpy()
  return arrays


def main() -> None:
  FIXTURES.mkdir(exist_ok=True)
  rng = np.random.default_rng(0)
  for name, arrays in (("adaptive_pool", adaptive_pool(rng)),
                       ("zhang_stem_pool", zhang_stem_pool(rng)),
                       ("zhang_blocks", zhang_blocks(rng))):
    path = FIXTURES / f"{name}.npz"
    np.savez_compressed(path, **arrays)
    print(f"{path}: {len(arrays)} arrays, {path.stat().st_size:,} bytes")


if __name__ == "__main__":
  main()
