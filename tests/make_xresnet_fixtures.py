r"""Writes fastai 2.7.18's XResNet references to tests/fixtures/ (run with the system python,
which has Debian's torch 1.13, and fastai's wheels unpacked on the path):

    cd /tmp && pip download --no-deps fastai==2.7.18 fastcore==1.7.29 fastprogress==1.0.3 \
        fastdownload==0.0.7 && mkdir -p fastai_site && for w in *.whl; do \
        (cd fastai_site && unzip -qo ../$w); done
    apt-get install -y python3-pandas python3-matplotlib python3-scipy python3-sklearn
    PYTHONPATH=/tmp/fastai_site /usr/bin/python3 tests/make_xresnet_fixtures.py

- `xresnet_fastai.json`: the library versions; `params`, the parameter count of
  `xresnet18/34/50(n_out=1000)` (torch's `parameters()`: no batch-norm statistics); and
  what the logits below were made with (`widen`, `num_classes`, `sizes`, `images`).
- `xresnet_fastai.npz`: `images<S>`, three scikit-image photographs resized to S px (PIL
  bilinear) and normalised with ImageNet's mean and std, NCHW, for S in `SIZES`; and for
  `xresnet18` and `xresnet50`, each built by fastai as `xresnet<N>(n_out=10,
  widen=1/16)`: `<name>/<key>` for every tensor of its state dict and `<name>/logits<S>`
  its logits in evaluation mode.

Every norm's scale and shift is random (the zero-initialised last norm of each block too,
so every residual branch counts), the running statistics are the means of the networks'
own activations over a few random batches, and the linear bias is random. Weights and
images are stored as float16 (the values are exactly float16, a quarter the size of the
float32 files); the logits are computed from those values in float64. Deterministic (seed 0).
"""

import json
import pathlib

import fastai
import numpy as np
import torch
from fastai.vision.models import xresnet
from PIL import Image

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
PHOTOS = ("astronaut", "chelsea", "coffee")
MEAN = np.array((0.485, 0.456, 0.406))
STD = np.array((0.229, 0.224, 0.225))
SIZES = (32, 65)  # 65: every map after the stem is odd (33, 17, 9, 5, 3): ceil_mode counts.
WIDEN = 1 / 16
CLASSES = 10
NETWORKS = ("xresnet18", "xresnet50")


def _half(t: torch.Tensor) -> torch.Tensor:
  """`t` rounded to the nearest float16, held in float64."""
  return t.half().double()


def images(size: int) -> np.ndarray:
  """The photographs at `size` px, normalised, NCHW, rounded to float16."""
  out = []
  for name in PHOTOS:
    photo = Image.open(FIXTURES / "pretrained" / "images" / f"{name}.png").convert("RGB")
    pixels = np.asarray(photo.resize((size, size), Image.BILINEAR), np.float64) / 255
    out.append(((pixels - MEAN) / STD).transpose(2, 0, 1))
  return np.stack(out).astype(np.float16)


def randomised(name: str, generator: torch.Generator) -> torch.nn.Module:
  """fastai's network in float64 with random norms and linear bias, running statistics of
  its own activations, and every tensor a float16 value."""
  model = getattr(xresnet, name)(n_out=CLASSES, widen=WIDEN).double()
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=generator))
        module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=generator))
        module.momentum = None  # Running statistics: the mean over the batches below.
        module.reset_running_stats()
      elif isinstance(module, torch.nn.Linear):
        module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
    model.train()
    for _ in range(4):
      model(torch.randn(8, 3, 65, 65, generator=generator, dtype=torch.float64))
    model.eval()
    for tensor in model.state_dict().values():
      if tensor.is_floating_point():
        tensor.copy_(_half(tensor))
  return model


def main() -> None:
  torch.manual_seed(0)  # fastai's own initialisation draws from torch's global generator.
  generator = torch.Generator().manual_seed(0)
  params = {
      name: sum(p.numel() for p in getattr(xresnet, name)(n_out=1000).parameters())
      for name in ("xresnet18", "xresnet34", "xresnet50")
  }
  arrays = {f"images{size}": images(size) for size in SIZES}
  for name in NETWORKS:
    model = randomised(name, generator)
    for key, tensor in model.state_dict().items():
      if tensor.is_floating_point():
        arrays[f"{name}/{key}"] = tensor.numpy().astype(np.float16)
    with torch.no_grad():
      for size in SIZES:
        x = torch.from_numpy(arrays[f"images{size}"].astype(np.float64))
        arrays[f"{name}/logits{size}"] = model(x).numpy()
  np.savez_compressed(FIXTURES / "xresnet_fastai.npz", **arrays)
  info = {
      "fastai": fastai.__version__, "torch": torch.__version__, "params": params,
      "widen": WIDEN, "num_classes": CLASSES, "sizes": SIZES, "images": PHOTOS,
  }
  (FIXTURES / "xresnet_fastai.json").write_text(json.dumps(info, indent=1) + "\n")
  print(json.dumps(info))


if __name__ == "__main__":
  main()
