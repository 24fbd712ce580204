"""Reference files for the pretrained-weights importer, made by the source libraries themselves.

Each network is built from its library's own classes (torchvision 0.14, timm 0.9.16,
antialiased-cnns 0.3) at full depth and a sixteenth of the width, given random weights and
random batch-norm running statistics, saved the way that library's released files are saved,
and run on four photographs: the logits are what the importer must reproduce.

Install (the system python has Debian's torch 1.13 and torchvision 0.14; the rest is pure Python):

  apt-get install python3-yaml             # timm imports yaml
  /usr/bin/python3 -m pip install --break-system-packages safetensors
  /usr/bin/python3 -m pip install --break-system-packages --no-deps antialiased-cnns==0.3 \
    timm==0.9.16    # no deps: timm's would pull a newer torch; huggingface_hub is optional

Run:

  # once, by the pyenv python (it has scikit-image): the photographs -> OUTDIR/images/*.png
  python tests/make_pretrained_fixtures.py tests/fixtures/pretrained --photos
  # the committed files (4.9 MB, about 15 s)
  /usr/bin/python3 tests/make_pretrained_fixtures.py tests/fixtures/pretrained
  # full-size resnet18, resnet50, vgg16 with 1000 classes: 700 MB, 35 s on two busy cores
  # (Debian's torch uses a generic BLAS: resnet50's 1x1 convolutions take most of it)
  /usr/bin/python3 tests/make_pretrained_fixtures.py OUTDIR --full

Every mode reads the photographs from `fixtures/pretrained/images` beside this script, and
writes `OUTDIR/README.md`, which says what each file is and how it was made.
"""

import argparse
import re
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
IMAGES = Path(__file__).resolve().parent / "fixtures" / "pretrained" / "images"
SHORT_SIDE = 288  # the stored photographs' shorter side (LANCZOS from scikit-image's)
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SIZES = (224, 97)
FULL_SIZES = (224, 160)
DIVISOR = 16  # every channel count of the small networks is the library's divided by this
CLASSES = 10
SEED = 0
NUMBER = r"(?<![^.])\d+(?![^.])"  # a purely numeric part of a state-dict key


def make_photos(outdir: Path) -> None:
  """Writes scikit-image's four photographs to `outdir/images/<name>.png`, uncropped, their
  shorter side resized to SHORT_SIDE px (to keep the committed files small)."""
  from skimage import data

  (outdir / "images").mkdir(parents=True, exist_ok=True)
  for name in PHOTOS:
    image = Image.fromarray(getattr(data, name)())
    scale = SHORT_SIDE / min(image.size)
    size = tuple(round(side * scale) for side in image.size)
    image.resize(size, Image.LANCZOS).save(outdir / "images" / f"{name}.png", optimize=True)


def load_photos() -> list:
  """The committed photographs as RGB PIL images, in PHOTOS order."""
  return [Image.open(IMAGES / f"{name}.png").convert("RGB") for name in PHOTOS]


def square_views(photos: list, size: int) -> np.ndarray:
  """The central square of each photograph resized (PIL bilinear) to `size`: uint8 [N,S,S,3]."""
  views = []
  for photo in photos:
    width, height = photo.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = photo.crop((left, top, left + side, top + side))
    views.append(np.asarray(square.resize((size, size), Image.BILINEAR)))
  return np.stack(views)


def torchvision_views(photos: list):
  """torchvision's standard evaluation view of each photograph: the uint8 [N,224,224,3] image
  after Resize(256) and CenterCrop(224), and the float32 [N,3,224,224] network input."""
  import torch
  from torchvision import transforms

  crop = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])
  standard = transforms.Compose([
    transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
    transforms.Normalize(MEAN, STD)])
  uint8 = torch.stack([transforms.PILToTensor()(crop(photo)) for photo in photos])
  inputs = torch.stack([standard(photo) for photo in photos])
  return uint8.permute(0, 2, 3, 1).numpy(), inputs


def normalise(images: np.ndarray):
  """uint8 [N,S,S,3] -> float32 NCHW `((x / 255) - mean) / std`, the importer's convention."""
  import torch

  x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
  mean = torch.tensor(MEAN).view(1, 3, 1, 1)
  std = torch.tensor(STD).view(1, 3, 1, 1)
  return ((x / 255) - mean) / std


def randomise(model) -> None:
  """Draws every parameter and every batch-norm running statistic from the global torch
  generator: conv/linear weights N(0, 2/fan_in), biases N(0, 0.1^2); batch norm weight
  U(0.5, 1.5), bias N(0, 0.1^2), running_mean N(0, 0.1^2), running_var U(0.5, 2). Buffers
  that are not statistics (antialiased-cnns' blur filters `filt`) keep their values."""
  import torch
  from torch import nn

  drawn = set()
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, (nn.Conv2d, nn.Linear)):
        fan_in = module.weight[0].numel()
        module.weight.normal_(0, (2 / fan_in) ** 0.5)
        drawn.add(module.weight)
        if module.bias is not None:
          module.bias.normal_(0, 0.1)
          drawn.add(module.bias)
      elif isinstance(module, nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0, 0.1)
        module.running_mean.normal_(0, 0.1)
        module.running_var.uniform_(0.5, 2)
        drawn.update([module.weight, module.bias])
  missed = [name for name, p in model.named_parameters() if p not in drawn]
  if missed:
    raise RuntimeError(f"parameters left at their initial values: {missed}")


def narrow_torchvision_resnet(block_name: str, layers: list, widths: tuple, classes: int):
  """torchvision's ResNet with stage widths `widths` in place of (64, 128, 256, 512): the
  library's own `_make_layer`, blocks and `forward`; only `__init__` is replaced."""
  from torch import nn
  from torchvision.models import resnet

  class NarrowResNet(resnet.ResNet):
    """torchvision.models.resnet.ResNet.__init__ with the widths as an argument."""

    def __init__(self, block, layers, widths, num_classes):
      nn.Module.__init__(self)
      self._norm_layer = nn.BatchNorm2d
      self.inplanes = widths[0]
      self.dilation = 1
      self.groups = 1
      self.base_width = 64
      self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
      self.bn1 = nn.BatchNorm2d(self.inplanes)
      self.relu = nn.ReLU(inplace=True)
      self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
      self.layer1 = self._make_layer(block, widths[0], layers[0])
      self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
      self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
      self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
      self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
      self.fc = nn.Linear(widths[3] * block.expansion, num_classes)

  return NarrowResNet(getattr(resnet, block_name), layers, widths, classes)


def narrow_antialiased_resnet(block_name: str, layers: list, widths: tuple, filter_size: int):
  """antialiased_cnns' ResNet (pool_only=True, its default) with stage widths `widths`: the
  library's own `_make_layer`, blocks, BlurPool and `forward`; only `__init__` is replaced."""
  from antialiased_cnns import BlurPool, resnet
  from torch import nn

  class NarrowResNet(resnet.ResNet):
    """antialiased_cnns.resnet.ResNet.__init__ (pool_only=True branch) with the widths as an
    argument."""

    def __init__(self, block, layers, widths, num_classes, filter_size):
      nn.Module.__init__(self)
      self._norm_layer = nn.BatchNorm2d
      self.inplanes = widths[0]
      self.dilation = 1
      self.groups = 1
      self.base_width = 64
      self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
      self.bn1 = nn.BatchNorm2d(self.inplanes)
      self.relu = nn.ReLU(inplace=True)
      self.maxpool = nn.Sequential(*[
        nn.MaxPool2d(kernel_size=2, stride=1),
        BlurPool(self.inplanes, filt_size=filter_size, stride=2)])
      self.layer1 = self._make_layer(block, widths[0], layers[0])
      self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2, filter_size=filter_size)
      self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2, filter_size=filter_size)
      self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2, filter_size=filter_size)
      self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
      self.fc = nn.Linear(widths[3] * block.expansion, num_classes)

  return NarrowResNet(getattr(resnet, block_name), layers, widths, CLASSES, filter_size)


def narrow_timm_resnet(layers: list, widths: tuple):
  """timm's ResNet (the `resnet50` variant: 7x7 stem, max pool, Bottleneck) with stage widths
  `widths`: timm 0.9.16 hard-codes (64, 128, 256, 512), so `__init__` is replaced by one that
  calls timm's own `make_blocks` and `create_classifier`; blocks and `forward` are timm's."""
  from timm.layers import create_classifier
  from timm.models import resnet
  from torch import nn

  class NarrowResNet(resnet.ResNet):
    """timm.models.resnet.ResNet.__init__ (default stem) with the widths as an argument."""

    def __init__(self, block, layers, widths, num_classes):
      nn.Module.__init__(self)
      self.num_classes = num_classes
      self.drop_rate = 0.0
      self.grad_checkpointing = False
      inplanes = widths[0]
      self.conv1 = nn.Conv2d(3, inplanes, kernel_size=7, stride=2, padding=3, bias=False)
      self.bn1 = nn.BatchNorm2d(inplanes)
      self.act1 = nn.ReLU(inplace=True)
      self.feature_info = [{"num_chs": inplanes, "reduction": 2, "module": "act1"}]
      self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
      stages, stage_info = resnet.make_blocks(
        block, list(widths), layers, inplanes, act_layer=nn.ReLU, norm_layer=nn.BatchNorm2d,
        aa_layer=None)
      for stage in stages:
        self.add_module(*stage)
      self.feature_info.extend(stage_info)
      self.num_features = widths[3] * block.expansion
      self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type="avg")
      self.init_weights(zero_init_last=True)

  return NarrowResNet(resnet.Bottleneck, layers, widths, CLASSES)


def narrow_vgg(cfg: str, batch_norm: bool):
  """torchvision's VGG over `make_layers(cfg / 16)`, 10 classes, its classifier replaced by
  Linear(C*7*7, 32), ReLU, Dropout, Linear(32, 32), ReLU, Dropout, Linear(32, 10)."""
  from torch import nn
  from torchvision.models import vgg

  layers = [v if v == "M" else v // DIVISOR for v in vgg.cfgs[cfg]]
  model = vgg.VGG(vgg.make_layers(layers, batch_norm=batch_norm), num_classes=CLASSES)
  channels = layers[-2]
  model.classifier = nn.Sequential(
    nn.Linear(channels * 7 * 7, 32), nn.ReLU(True), nn.Dropout(),
    nn.Linear(32, 32), nn.ReLU(True), nn.Dropout(),
    nn.Linear(32, CLASSES))
  return model


def torchvision_model(name: str):
  """A full-size torchvision model by its constructor's name, e.g. 'resnet50'."""
  import torchvision

  return getattr(torchvision.models, name)()


WIDTHS = tuple(w // DIVISOR for w in (64, 128, 256, 512))


class Net(NamedTuple):
  """A fixture network: its library, its constructor call (for the README), a builder, its
  weights file, and how that file holds the state dict (a key of SAVED_AS)."""

  library: str
  call: str
  build: Callable
  filename: str
  saved: str = "state_dict"


SMALL = {
  "resnet18": Net(
    "torchvision", "NarrowResNet(resnet.BasicBlock, [2, 2, 2, 2], WIDTHS, 10)",
    partial(narrow_torchvision_resnet, "BasicBlock", [2, 2, 2, 2], WIDTHS, CLASSES),
    "resnet18.pth"),
  "resnet50": Net(
    "torchvision", "NarrowResNet(resnet.Bottleneck, [3, 4, 6, 3], WIDTHS, 10)",
    partial(narrow_torchvision_resnet, "Bottleneck", [3, 4, 6, 3], WIDTHS, CLASSES),
    "resnet50.pth"),
  "vgg11": Net(
    "torchvision", "vgg.VGG(vgg.make_layers(cfgs['A'] / 16, batch_norm=False), num_classes=10)",
    partial(narrow_vgg, "A", batch_norm=False), "vgg11.pth"),
  "vgg16": Net(
    "torchvision", "vgg.VGG(vgg.make_layers(cfgs['D'] / 16, batch_norm=False), num_classes=10)",
    partial(narrow_vgg, "D", batch_norm=False), "vgg16.pth"),
  "vgg16_bn": Net(
    "torchvision", "vgg.VGG(vgg.make_layers(cfgs['D'] / 16, batch_norm=True), num_classes=10)",
    partial(narrow_vgg, "D", batch_norm=True), "vgg16_bn.pth"),
  "timm_resnet50": Net(
    "timm", "NarrowResNet(resnet.Bottleneck, [3, 4, 6, 3], WIDTHS, 10)",
    partial(narrow_timm_resnet, [3, 4, 6, 3], WIDTHS), "timm_resnet50.safetensors",
    "safetensors"),
  "aa_resnet50_f4": Net(
    "antialiased_cnns", "NarrowResNet(resnet.Bottleneck, [3, 4, 6, 3], WIDTHS, 10, filter_size=4)",
    partial(narrow_antialiased_resnet, "Bottleneck", [3, 4, 6, 3], WIDTHS, filter_size=4),
    "aa_resnet50_f4.pth", "wrapped"),
  "aa_resnet18_f3": Net(
    "antialiased_cnns", "NarrowResNet(resnet.BasicBlock, [2, 2, 2, 2], WIDTHS, 10, filter_size=3)",
    partial(narrow_antialiased_resnet, "BasicBlock", [2, 2, 2, 2], WIDTHS, filter_size=3),
    "aa_resnet18_f3.pth", "wrapped"),
}

# Full-size torchvision networks, 1000 classes, random weights (the --full mode).
FULL = {
  name: Net(
    "torchvision", f"torchvision.models.{name}()", partial(torchvision_model, name),
    f"{name}.pth")
  for name in ("resnet18", "resnet50", "vgg16")}

# What the small networks' constructors are, by library (README).
NARROW = {
  "torchvision": (
    "ResNets: `NarrowResNet`, a subclass of `torchvision.models.resnet.ResNet` that replaces "
    "only `__init__` (the same modules, stage widths WIDTHS = (4, 8, 16, 32) in place of "
    "(64, 128, 256, 512)); `_make_layer`, `BasicBlock`/`Bottleneck` and `forward` are "
    "torchvision's. VGGs: torchvision's `VGG` and `make_layers` over the configuration with "
    "every width divided by 16 (4 ... 32 channels; conv layers keep their bias), then "
    "`model.classifier = Sequential(Linear(32*7*7, 32), ReLU(True), Dropout(), Linear(32, 32), "
    "ReLU(True), Dropout(), Linear(32, 10))`; torchvision's forward with its "
    "AdaptiveAvgPool2d((7, 7)) stays (at 97 px the 3x3 feature map's cells are repeated)."),
  "timm": (
    "`NarrowResNet`, a subclass of `timm.models.resnet.ResNet` (timm 0.9.16 hard-codes the "
    "widths 64/128/256/512 and has no width argument) whose `__init__` builds timm's default "
    "`resnet50` layout (7x7 stem, max pool, Bottleneck, no anti-aliasing) at WIDTHS with "
    "timm's own `make_blocks` and `create_classifier`; blocks and `forward` are timm's."),
  "antialiased_cnns": (
    "`NarrowResNet`, a subclass of `antialiased_cnns.resnet.ResNet` whose `__init__` is its "
    "`pool_only=True` branch (the library's default) at WIDTHS; `_make_layer`, the blocks, "
    "`BlurPool` and `forward` are the library's. Order: stem conv1 (7x7, stride 2) -> bn1 -> "
    "relu -> maxpool = [MaxPool2d(2, stride 1, no padding), BlurPool(stride 2)]; a strided "
    "Bottleneck: conv1 1x1 -> bn1 -> relu -> conv2 3x3 stride 1 -> bn2 -> relu -> conv3 = "
    "[BlurPool, conv 1x1] -> bn3; a strided BasicBlock: conv1 3x3 stride 1 -> bn1 -> relu -> "
    "conv2 = [BlurPool, conv 3x3] -> bn2; their downsample = [BlurPool, conv 1x1 stride 1, "
    "BatchNorm]. BlurPool: ReflectionPad2d((1, 2, 1, 2)) for filter 4, ((1, 1, 1, 1)) for 3 "
    "(left, right, top, bottom), then a depthwise stride-2 conv with the normalised outer "
    "product of (1, 3, 3, 1) / (1, 2, 1), the `filt` buffer [C, 1, k, k]."),
}

SAVED_AS = {
  "state_dict": "torch.save(model.state_dict(), path) (as torchvision's released files)",
  "wrapped": "torch.save({'state_dict': model.state_dict()}, path) (as antialiased-cnns' "
             "released files, read with ['state_dict'])",
  "safetensors": "safetensors.torch.save_file(model.state_dict(), path) (as timm's hub files)",
}


def save(model, path: Path, how: str) -> None:
  """Writes the model's state dict to `path` the way its library's released files hold it."""
  import torch

  state = model.state_dict()
  if how == "safetensors":
    from safetensors.torch import save_file

    save_file(state, str(path))
  elif how == "wrapped":
    torch.save({"state_dict": state}, path)
  else:
    torch.save(state, path)


def logits(model, images: np.ndarray) -> np.ndarray:
  """The model's float32 logits for uint8 [N,S,S,3] images, normalised as `normalise` does."""
  import torch

  with torch.no_grad():
    return model(normalise(images)).numpy().astype(np.float32)


def float32_noise(model, images: np.ndarray) -> float:
  """How far torch's float32 logits are from its float64 ones: max |difference| over
  max |float64 logit| (a floor for the importer's tolerance)."""
  import copy

  import torch

  with torch.no_grad():
    exact = copy.deepcopy(model).double()(normalise(images).double()).numpy()
  return float(np.abs(logits(model, images) - exact).max() / np.abs(exact).max())


def key_summary(state: dict) -> list:
  """The state dict's keys, one line per kind of module: its path with the numbers as
  {sets}, its tensors, how many such modules, and the first one's tensor shapes."""
  modules = {}
  for key, value in state.items():
    path, leaf = key.rsplit(".", 1) if "." in key else ("", key)
    modules.setdefault(path, {})[leaf] = value
  groups = {}
  for path, leaves in modules.items():
    numbers = re.findall(NUMBER, path)
    template = re.sub(NUMBER, "{}", path)
    group = groups.setdefault((template, tuple(leaves)), [0, [set() for _ in numbers], leaves])
    group[0] += 1
    for seen, number in zip(group[1], numbers):
      seen.add(int(number))
  lines = []
  for (template, leaves), (count, numbers, first) in groups.items():
    filled = template.format(*(spans(sorted(n)) for n in numbers))
    names = leaves[0] if len(leaves) == 1 else "{" + ",".join(leaves) + "}"
    shapes = ", ".join(f"{list(value.shape)}" for value in first.values())
    lines.append(f"{filled + '.' if filled else ''}{names}  x{count}  first: {shapes}")
  return lines


def spans(numbers: list) -> str:
  """[0, 1, 2, 5] -> '{0-2,5}'; [3] -> '3'."""
  runs = []
  for n in numbers:
    if runs and n == runs[-1][1] + 1:
      runs[-1][1] = n
    else:
      runs.append([n, n])
  text = ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)
  return text if len(numbers) == 1 else "{" + text + "}"


def versions() -> str:
  """The versions of the Python and the distributions that made the files."""
  from importlib import metadata

  names = ("torch", "torchvision", "timm", "antialiased-cnns", "safetensors", "numpy", "Pillow")
  found = []
  for name in names:
    try:
      found.append(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
      pass
  return ", ".join(found) + f", python {sys.version.split()[0]}"


def make_small(outdir: Path) -> None:
  """The committed fixtures: weights of every SMALL network, references.npz and README.md."""
  import torch

  photos = load_photos()
  images = {size: square_views(photos, size) for size in SIZES}
  arrays = {f"images_{size}": images[size] for size in SIZES}
  arrays["torchvision_view_224"], tv_inputs = torchvision_views(photos)
  sections = []
  for index, (name, net) in enumerate(SMALL.items()):
    model = make(net, SEED + index, outdir)
    for size in SIZES:
      arrays[f"{name}_logits_{size}"] = logits(model, images[size])
    if name == "resnet18":
      with torch.no_grad():
        arrays["resnet18_logits_torchvision_224"] = model(tv_inputs).numpy().astype(np.float32)
    noise = max(float32_noise(model, images[size]) for size in SIZES)
    sections += describe(name, net, model, SEED + index, outdir, SIZES, noise)
  finish(outdir, arrays, sections, full=False)


def make_full(outdir: Path) -> None:
  """Full-size torchvision networks (1000 classes), random weights and statistics: their
  weights, references.npz with their logits at FULL_SIZES, README.md; not committed."""
  start = time.perf_counter()
  photos = load_photos()
  images = {size: square_views(photos, size) for size in FULL_SIZES}
  arrays = {f"images_{size}": images[size] for size in FULL_SIZES}
  sections = []
  for index, (name, net) in enumerate(FULL.items()):
    model = make(net, SEED + index, outdir)
    for size in FULL_SIZES:
      arrays[f"{name}_logits_{size}"] = logits(model, images[size])
    sections += describe(name, net, model, SEED + index, outdir, FULL_SIZES)
  finish(outdir, arrays, sections, full=True)
  print(f"full-size fixtures in {time.perf_counter() - start:.1f} s", flush=True)


def make(net: Net, seed: int, outdir: Path):
  """Builds `net` after torch.manual_seed(seed), randomises it, saves its weights file in
  `outdir` and returns it in eval mode."""
  import torch

  torch.manual_seed(seed)
  model = net.build()
  randomise(model)
  model.eval()
  save(model, outdir / net.filename, net.saved)
  return model


def describe(name: str, net: Net, model, seed: int, outdir: Path, sizes: tuple,
             noise: float | None = None) -> list:
  """The README section on one weights file (`noise`: float32_noise's figure)."""
  state = model.state_dict()
  params = sum(p.numel() for p in model.parameters())
  size = (outdir / net.filename).stat().st_size
  return [
    f"### {net.filename}", "",
    f"- {net.library}: `{net.call}`, after `torch.manual_seed({seed})`",
    f"- saved with {SAVED_AS[net.saved]}",
    f"- {len(state)} tensors, {params} parameters, {size} bytes",
    f"- logits: {', '.join(f'`{name}_logits_{s}`' for s in sizes)}"
    + (f"; torch float32 vs float64: max |difference| / max |logit| = {noise:.1e}"
       if noise is not None else ""), "",
    "```", *key_summary(state), "```", ""]


def finish(outdir: Path, arrays: dict, sections: list, full: bool) -> None:
  """Writes references.npz (arrays plus mean, std and the photographs' names) and README.md."""
  arrays["mean"] = np.array(MEAN, np.float32)
  arrays["std"] = np.array(STD, np.float32)
  arrays["photos"] = np.array(PHOTOS)
  if full:
    np.savez(outdir / "references.npz", **arrays)
  else:
    np.savez_compressed(outdir / "references.npz", **arrays)
  write_readme(outdir, arrays, sections, full)


def write_readme(outdir: Path, arrays: dict, sections: list, full: bool) -> None:
  """OUTDIR/README.md: how the files were made, references.npz's arrays, each weights file."""
  sizes = FULL_SIZES if full else SIZES
  photo_sizes = ", ".join(
    f"{name} {'x'.join(map(str, Image.open(IMAGES / f'{name}.png').size))}" for name in PHOTOS)
  if full:
    networks = ["Full-size torchvision networks (their own constructors), 1000 classes."]
  else:
    networks = [
      (f"Full depth, every channel count divided by {DIVISOR}, {CLASSES} classes, built from "
      "each library's own classes:"), "",
      *(f"- {library}: {text}" for library, text in NARROW.items())]
  lines = [
    "# Reference files for the pretrained-weights importer", "",
    (f"Made by `tests/make_pretrained_fixtures.py OUTDIR{' --full' if full else ''}` "
    f"with {versions()}."), "",
    *networks, "",
    ("Every network is in eval mode. Every parameter is random (conv/linear weights "
    "N(0, 2/fan_in), biases N(0, 0.1^2)), and so are the batch-norm layers (weight "
    "U(0.5, 1.5), bias N(0, 0.1^2), running_mean N(0, 0.1^2), running_var U(0.5, 2)); "
    "antialiased-cnns' blur filters (`filt` buffers) keep the library's values; "
    "`num_batches_tracked` is 0."), "",
    ("Logits are `model(((x / 255) - mean) / std)` in float32, x the uint8 images as NCHW "
    f"float32, mean {MEAN}, std {STD}."), "",
    "## Photographs", "",
    (f"`images/<name>.png`: scikit-image's {', '.join(PHOTOS)} (`skimage.data`, scikit-image "
    f"0.26), uncropped, their shorter side resized to {SHORT_SIDE} px with PIL LANCZOS "
    f"(`--photos`, made by the pyenv python). Width x height: {photo_sizes}."), "",
    "## references.npz", "",
    *(f"- `{key}`: {value.dtype} {list(value.shape)}" for key, value in arrays.items()), "",
    (f"`images_<S>` (S = {', '.join(map(str, sizes))}): the central square of each photograph "
    "(side min(w, h), left (w - side) // 2, top (h - side) // 2) resized to S px with PIL "
    "BILINEAR, uint8 [N, S, S, 3] in the order of `photos`.")]
  if not full:
    lines += [
      "",
      ("`torchvision_view_224`: `PILToTensor()(CenterCrop(224)(Resize(256)(photo)))` "
      "(torchvision.transforms on the uncropped PIL photograph; PIL bilinear) as uint8 "
      "[N, 224, 224, 3]; `resnet18_logits_torchvision_224`: resnet18.pth's logits for "
      "`Compose([Resize(256), CenterCrop(224), ToTensor(), Normalize(mean, std)])` of each "
      "uncropped photograph.")]
  lines += ["", "## Weights files", "", *sections]
  (outdir / "README.md").write_text("\n".join(lines).rstrip() + "\n")


def main() -> None:
  """Parses OUTDIR and the mode, and writes the files."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("outdir", type=Path)
  mode = parser.add_mutually_exclusive_group()
  mode.add_argument("--full", action="store_true", help="full-size torchvision networks")
  mode.add_argument("--photos", action="store_true", help="scikit-image -> OUTDIR/images")
  args = parser.parse_args()
  args.outdir.mkdir(parents=True, exist_ok=True)
  if args.photos:
    make_photos(args.outdir)
  elif args.full:
    make_full(args.outdir)
  else:
    make_small(args.outdir)


if __name__ == "__main__":
  main()
