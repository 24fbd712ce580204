"""ImageNet's class list and validation labels, as tensorflow-datasets ships them.

The wheel of `tensorflow-datasets` holds `datasets/imagenet2012/labels.txt` (the 1,000
synset ids, sorted: torchvision's and timm's class order) and `validation_labels.txt`
(the synset of each of the 50,000 validation images, `ILSVRC2012_val_00000001.JPEG`
first). `layout_validation` puts the validation images into `OUT/<synset>/<image>`, the
folder layout `progressive invariance` and image-folder datasets read.
"""

import functools
import importlib.resources
import os
import re
import shutil

from progressive import errors

_VAL_FILE = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG", re.IGNORECASE)


class LayoutError(errors.Error, ValueError):
  """A validation folder that cannot be laid out by synset."""


def _read(name: str) -> tuple[str, ...]:
  text = (importlib.resources.files("tensorflow_datasets") / "datasets" / "imagenet2012" / name)
  return tuple(line.strip() for line in text.read_text().splitlines() if line.strip())


@functools.cache
def synsets() -> tuple[str, ...]:
  """The 1,000 ImageNet synset ids in the networks' output order (`n01440764` first)."""
  return _read("labels.txt")


@functools.cache
def validation_synsets() -> tuple[str, ...]:
  """The synset of each validation image: entry `i` is `ILSVRC2012_val_<i + 1>.JPEG`'s."""
  return _read("validation_labels.txt")


def layout_validation(src, out, *, copy: bool = False) -> dict[str, int]:
  """Links (or copies) `src/ILSVRC2012_val_*.JPEG` into `out/<synset>/`.

  Returns `{"images": n, "classes": k}`. An existing file in `out` is kept, never
  replaced; a file in `src` that is not a validation image is left alone.
  `LayoutError` in one line if `src` holds no validation images.
  """
  labels = validation_synsets()
  names = sorted(n for n in os.listdir(src) if _VAL_FILE.fullmatch(n))
  if not names:
    raise LayoutError(f"{src} holds no ILSVRC2012_val_*.JPEG files: point --src at the folder "
                      "ILSVRC2012_img_val.tar unpacks into.")
  classes = set()
  for name in names:
    index = int(_VAL_FILE.fullmatch(name)[1]) - 1
    if not 0 <= index < len(labels):
      raise LayoutError(f"{name} is not one of the 50,000 validation images (numbered "
                        "00000001 to 00050000).")
    folder = os.path.join(out, labels[index])
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, name)
    classes.add(labels[index])
    if os.path.lexists(target):
      continue
    source = os.path.abspath(os.path.join(src, name))
    if copy:
      shutil.copy2(source, target)
    else:
      os.symlink(source, target)
  return {"images": len(names), "classes": len(classes)}
