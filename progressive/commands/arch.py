r"""`progressive arch`: a model's layers at an input size, as a table (or JSON).

    progressive arch --config=configs/default.py --config.model.name=vgg16 --size=32
    progressive arch --config=configs/zoo.py:resnet18,downsample=blur --size=64 --json

Per layer: output size, jump (stride in input pixels), receptive field and parameters,
from `progressive.models.geometry` (which traces the model `models.build` returns).
"""

import json

from absl import flags

from progressive import cli, models
from progressive.data import pipeline
from progressive.models import geometry


def define_flags(fv: flags.FlagValues) -> None:
  """The flags besides `--config` (which `cli` defines)."""
  define = {"flag_values": fv}
  flags.DEFINE_integer("size", None, "Input side in pixels (default: the first stage's size).",
                       **define)
  flags.DEFINE_integer("num_classes", None, "Classifier outputs (default: the dataset's).",
                       **define)
  flags.DEFINE_integer("object_px", None, "Also name the first layer whose rf covers this size.",
                       **define)
  flags.DEFINE_bool("json", False, "Print the rows as a JSON list instead of a text table.",
                    **define)


def _main(fv: flags.FlagValues) -> None:
  """Prints the layer table of `config.model`."""
  config = fv.config
  if config.model.name not in models.MODELS:
    raise cli.Error(f"config.model.name must be one of {sorted(models.MODELS)}, got "
                    f"{config.model.name!r}.")
  size = fv.size or config.stages[0]["size"]
  num_classes = fv.num_classes
  if num_classes is None:
    try:
      num_classes = pipeline.dataset_info(config.data).num_classes
    except ValueError as e:  # An unknown or unprepared dataset, named with the fix.
      raise cli.Error(e) from e
  table = geometry.layer_table(config.model, size, num_classes)
  if fv.json:
    print(json.dumps(table, indent=1))
  else:
    mode = config.model.downsample
    print(f"{config.model.name}, downsample={mode}, {num_classes} classes")
    print(geometry.format_table(table, size, fv.object_px))


# No jax.distributed: the table is traced with abstract shapes, on no device.
COMMAND = cli.Command(
    "arch", __doc__, define_flags, _main, config="Config file, e.g. configs/zoo.py:vgg16.",
    distributed=False,
)
