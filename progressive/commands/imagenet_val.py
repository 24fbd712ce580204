r"""Lays ImageNet's validation images out by class: `progressive imagenet-val --src=DIR --out=VAL`.

    tar -xf ILSVRC2012_img_val.tar -C /data/imagenet/val_flat
    progressive imagenet-val --src=/data/imagenet/val_flat --out=/data/imagenet/val

`VAL/<synset>/ILSVRC2012_val_<n>.JPEG`, by the labels tensorflow-datasets ships
(`progressive.data.imagenet`): the folder `progressive invariance --images=VAL` reads.
Links by default (`--copy` copies); files already in VAL are kept.
"""

from absl import flags

from progressive import cli
from progressive.data import imagenet


def define_flags(fv: flags.FlagValues) -> None:
  """The command's flags."""
  define = {"flag_values": fv}
  flags.DEFINE_string("src", None, "The folder holding ILSVRC2012_val_*.JPEG.", required=True,
                      **define)
  flags.DEFINE_string("out", None, "The folder to fill with <synset>/<image>.", required=True,
                      **define)
  flags.DEFINE_bool("copy", False, "Copy the images instead of linking them.", **define)


def _main(fv: flags.FlagValues) -> None:
  counts = imagenet.layout_validation(fv.src, fv.out, copy=fv.copy)
  how = "Copied" if fv.copy else "Linked"
  print(f"{how} {counts['images']:,} validation images into {counts['classes']} class folders "
        f"under {fv.out}.")


COMMAND = cli.Command("imagenet-val", __doc__, define_flags, _main)
