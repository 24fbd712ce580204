"""Makes tests/fixtures/views/: three photographs and torchvision's evaluation views of them,
the reference for `progressive.data.views.standard_view`.

    python tests/make_views_fixture.py            # the inputs, from scikit-image's photographs
    /usr/bin/python3 tests/make_views_fixture.py  # torchvision's views (torch 1.13, torchvision 0.14)

The inputs are PNG (lossless, so both Pythons read the same pixels): scikit-image's cat
(451x300, landscape), a portrait window of its rocket (240x360: the width is the shorter
side) and its coffee cup shrunk to 150x100 (views of 146 and 256 px enlarge it). The
views are torchvision's `Resize(resize_px, interpolation)`, `CenterCrop(crop_px)` and
`PILToTensor` of each input at each of `SETTINGS`, saved as uint8 `[crop, crop, 3]` in
`views.npz` under `<image>_<resize>_<crop>_<interpolation>`.
"""

import importlib.util
import pathlib

import numpy as np
from PIL import Image

OUT = pathlib.Path(__file__).parent / "fixtures" / "views"
INPUTS = ("chelsea", "rocket", "coffee")
SETTINGS = ((256, 224, "bilinear"), (146, 128, "bilinear"), (146, 128, "bicubic"))


def write_inputs() -> None:
  import skimage.data  # pylint: disable=import-outside-toplevel  (the pyenv Python only)

  OUT.mkdir(parents=True, exist_ok=True)
  Image.fromarray(skimage.data.chelsea()).save(OUT / "chelsea.png", optimize=True)
  Image.fromarray(skimage.data.rocket()[40:400, 200:440]).save(OUT / "rocket.png", optimize=True)
  coffee = Image.fromarray(skimage.data.coffee()).resize((150, 100), Image.Resampling.LANCZOS)
  coffee.save(OUT / "coffee.png", optimize=True)


def write_views() -> None:
  from torchvision import transforms  # pylint: disable=import-outside-toplevel  (system Python)

  modes = {"bilinear": transforms.InterpolationMode.BILINEAR,
           "bicubic": transforms.InterpolationMode.BICUBIC}
  views = {}
  for name in INPUTS:
    image = Image.open(OUT / f"{name}.png").convert("RGB")
    for resize_px, crop_px, interpolation in SETTINGS:
      transform = transforms.Compose([
          transforms.Resize(resize_px, interpolation=modes[interpolation]),
          transforms.CenterCrop(crop_px), transforms.PILToTensor()])
      views[f"{name}_{resize_px}_{crop_px}_{interpolation}"] = (
          transform(image).permute(1, 2, 0).numpy().astype(np.uint8))
  np.savez_compressed(OUT / "views.npz", **views)


if __name__ == "__main__":
  if importlib.util.find_spec("torchvision") is None:
    write_inputs()
  else:
    write_views()
