r"""Any model of the zoo, any downsampling, on the default progressive-resizing job.

  progressive train --config=configs/zoo.py:resnet18 --workdir=/tmp/resnet18
  progressive train --config=configs/zoo.py:vgg11,downsample=blur --workdir=/tmp/vgg11_blur
  progressive arch --config=configs/zoo.py:resnet50,downsample=blur,blur_size=5 --size=64

The argument is a model name (`progressive.models.MODELS`) followed by `key=value`
settings of `config.model` (`downsample=blur`, `blur_size=5`, `width=0.5`,
`small_stem=False`, ...) and optionally `smoke`, the tiny variant the tests use:

  progressive train --config=configs/zoo.py:resnet18,downsample=max,smoke --workdir=/tmp/zoo

Everything else is `configs/default.py` (stages 32 -> 48 -> 64 px on `scale_shapes`).
ResNets use the small stem here (these images are 32-64 px; the standard stem leaves
1x1 maps at 32 px); `small_stem=False` restores it. XResNets keep fastai's stem. VGG,
ResNet and XResNet run at `width=0.25`
by default so a CPU run stays short; `width=1` is the published width.
"""

import ast

import ml_collections

from configs import default

MODEL_DEFAULTS = {
    "simple_cnn": {},
    "vgg": {"vgg_layers": (64, "M", 128, "M", 256, "M"), "width": 0.25},
    "vgg11": {"width": 0.25},
    "vgg16": {"width": 0.25},
    "resnet18": {"width": 0.25, "small_stem": True},
    "resnet34": {"width": 0.25, "small_stem": True},
    "resnet50": {"width": 0.25, "small_stem": True},
    # fastai's stem (three convs, then a pool: /4) has no small variant; 32 px is its least.
    **{f"xresnet{d}": {"width": 0.25} for d in (18, 34, 50)},
}


def _value(text: str):
  """A setting's value: a Python literal (`5`, `0.5`, `True`, `(64, 'M')`) or a bare string."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _split(arg: str) -> list[str]:
  """`arg` split at the commas outside brackets, so `vgg_layers=(64,'M')` stays whole."""
  parts, depth, start = [], 0, 0
  for i, char in enumerate(arg):
    if char in "([":
      depth += 1
    elif char in ")]":
      depth -= 1
    elif char == "," and depth == 0:
      parts.append(arg[start:i])
      start = i + 1
  return parts + [arg[start:]]


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  parts = [p.strip() for p in _split(arg or "simple_cnn") if p.strip()]
  smoke = "smoke" in parts
  parts = [p for p in parts if p != "smoke"]
  if parts and "=" not in parts[0]:
    name, settings = parts[0], parts[1:]
  else:
    name, settings = "simple_cnn", parts
  if name not in MODEL_DEFAULTS:
    raise ValueError(f"Unknown model {name!r} in {arg!r}; use one of {sorted(MODEL_DEFAULTS)}.")

  config = default.get_config("smoke" if smoke else None)
  config.model.name = name
  config.model.update(MODEL_DEFAULTS[name])
  if smoke and name != "simple_cnn":
    config.model.width = 0.125
    config.stages = [dict(size=32, steps=4)]
    config.eval_sizes = (32,)
  for setting in settings:
    key, sep, text = setting.partition("=")
    if not sep or key not in config.model:
      raise ValueError(
          f"Bad setting {setting!r} in {arg!r}: use key=value with a key of config.model "
          f"({sorted(config.model)})."
      )
    config.model[key] = _value(text)
  return config
