r"""Imports a network trained elsewhere as a run: `progressive import --arch=NAME --weights=FILE
--workdir=DIR`.

    progressive import --arch=resnet50 --weights=resnet50-0676ba61.pth --workdir=/tmp/rn50
    progressive invariance --workdir=/tmp/rn50 --images=/data/imagenet/val

DIR then opens like a trained run (`load_run`, `Run.predict`, `progressive analyze`, the
notebook): `config.json` names the architecture, the source's normalisation and standard
view (`config.pretrained`), and the classes (ImageNet's 1,000 synset ids in torchvision's
order for a 1,000-class network; `--class_names` for others); the checkpoint at step 0
holds the weights and batch-norm statistics. The run has no data (`data.name="none"`):
what needs images takes them from a folder. The weights file is read without executing
anything in it (`progressive.models.weights`). Architectures and where their weights come
from: docs/PRETRAINED.md.
"""

import hashlib
import json
import os

import jax
import numpy as np
from absl import flags
from etils import epath

from progressive import cli
from progressive import config as config_lib
from progressive.analysis import run as run_lib
from progressive.data import imagenet
from progressive.models import pretrained, weights
from progressive.training import checkpoints
from progressive.training import workdir as workdir_lib

INTERPOLATIONS = ("bilinear", "bicubic")


def define_flags(fv: flags.FlagValues) -> None:
  """The command's flags."""
  define = {"flag_values": fv}
  flags.DEFINE_enum("arch", None, list(pretrained.ARCHS), "The architecture the weights were "
                    "saved from (docs/PRETRAINED.md).", required=True, **define)
  flags.DEFINE_string("weights", None, "The weights file: a .pth state dict (torchvision, "
                      "antialiased-cnns) or .safetensors (timm).", required=True, **define)
  flags.DEFINE_string("workdir", None, "A new or empty folder for the run.", required=True,
                      **define)
  flags.DEFINE_string("class_names", None, "A text file with one class name per line, in the "
                      "network's output order (default: ImageNet's synset ids for 1,000 "
                      "classes, else 0, 1, ...).", **define)
  flags.DEFINE_integer("resize_px", None, "The standard view's resize (default: the "
                       "architecture's source's).", **define)
  flags.DEFINE_integer("crop_px", None, "The standard view's centre crop and the network's "
                       "input size (default: the source's, 224).", **define)
  flags.DEFINE_enum("interpolation", None, INTERPOLATIONS, "The standard view's resampling "
                    "(default: the source's).", **define)


def _class_names(path: str | None, num_classes: int) -> tuple[str, ...]:
  if path is None:
    if num_classes == len(imagenet.synsets()):
      return imagenet.synsets()
    return tuple(str(i) for i in range(num_classes))
  try:
    names = tuple(line.strip() for line in epath.Path(path).read_text().splitlines() if line.strip())
  except OSError as e:
    raise cli.Error(f"--class_names={path} cannot be read ({e.strerror or e}).") from None
  if len(names) != num_classes:
    raise cli.Error(f"--class_names={path} lists {len(names)} classes but the network has "
                    f"{num_classes} outputs; list one name per output, in order.")
  return names


def _check_empty(workdir: epath.Path) -> None:
  """Refuses a workdir that holds a run (nothing in a workdir is ever replaced)."""
  for name in ("config.json", "checkpoints", "metrics.jsonl"):
    if (workdir / name).exists():
      raise workdir_lib.WorkdirError(
          f"{workdir} already holds a run ({name}); import into a new or empty folder.")


def sha256(path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def make_config(arch: pretrained.Arch, imported: pretrained.Imported, *, weights_path: str,
                digest: str, class_names, resize_px: int, crop_px: int, interpolation: str):
  """The run's config: every field at its default but the data, model and source."""
  config = config_lib.default_config()
  config.data.name = "none"
  config.data.class_names = tuple(class_names)
  config.data.image_size = crop_px
  config.data.mean, config.data.std = arch.mean, arch.std
  for field, value in imported.model.items():
    config.model[field] = tuple(value) if isinstance(value, list) else value
  config.stages = (dict(size=crop_px, steps=0),)
  config.eval_sizes = (crop_px,)
  source = config.pretrained
  source.arch, source.library, source.weights = arch.name, arch.library, weights_path
  source.sha256, source.resize_px, source.crop_px = digest, resize_px, crop_px
  source.interpolation = interpolation
  return config


def import_run(arch_name: str, weights_path, workdir, *, class_names=None, resize_px=None,
               crop_px=None, interpolation=None) -> run_lib.Run:
  """Writes `workdir` from a weights file and returns the run `load_run` opens there.

  `class_names` is a file (one per line) or None; the view fields default to the
  architecture's source's. One-line errors: an unreadable or unsafe file
  (`weights.WeightsError`), one that does not fit `arch_name`
  (`pretrained.MismatchError`), a workdir that holds a run (`WorkdirError`).
  """
  arch = pretrained.ARCHS[arch_name]
  workdir = epath.Path(os.path.abspath(workdir))
  weights_path = os.path.abspath(weights_path)
  _check_empty(workdir)
  imported = pretrained.convert(  # Before anything is written.
      weights.read(weights_path), arch, config_lib.default_config().model.to_dict())
  crop_px = int(crop_px or arch.crop_px)
  resize_px = int(resize_px or (arch.resize_px if crop_px == arch.crop_px
                                else round(crop_px * arch.resize_px / arch.crop_px)))
  config = make_config(
      arch, imported, weights_path=weights_path, digest=sha256(weights_path),
      class_names=_class_names(class_names, imported.num_classes), resize_px=resize_px,
      crop_px=crop_px, interpolation=interpolation or arch.interpolation)
  workdir_lib.ensure_writable(workdir)
  with workdir_lib.Hold(workdir):
    _check_empty(workdir)
    config_json = json.loads(config.to_json())
    workdir_lib.write_text_atomically(workdir / "config.json", json.dumps(config_json, indent=2))
    mngr = checkpoints.manager(workdir, max_to_keep=1)
    state = jax.tree.map(np.asarray, imported.variables)
    checkpoints.save(mngr, 0, state, {}, stage=0, config_json=config_json)
    checkpoints.wait(mngr)
    mngr.close()
    row = {"event": "import", "step": 0, "arch": arch.name, "library": arch.library,
           "weights": weights_path, "sha256": config.pretrained.sha256,
           "num_classes": imported.num_classes, "width": imported.model["width"]}
    workdir_lib.write_text_atomically(workdir / "metrics.jsonl", json.dumps(row) + "\n")
  return run_lib.load_run(workdir)


def _main(fv: flags.FlagValues) -> None:
  run = import_run(fv.arch, fv.weights, fv.workdir, class_names=fv.class_names,
                   resize_px=fv.resize_px, crop_px=fv.crop_px, interpolation=fv.interpolation)
  arch = pretrained.ARCHS[fv.arch]
  source = run.config.pretrained
  count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(run.variables["params"]))
  width = run.config.model.width
  narrow = "" if width == 1 else f" at width {width:g}"
  print(f"Imported {arch.name}{narrow} ({arch.library}, {count:,} parameters, "
        f"{run.info.num_classes} classes) into {run.workdir}; its standard view: shorter side "
        f"{source.resize_px} px ({source.interpolation}), centre {source.crop_px} px, "
        f"normalised by {tuple(run.info.mean)} / {tuple(run.info.std)}.")
  print(f"Analyse it: progressive invariance --workdir={run.workdir} --images=FOLDER")


COMMAND = cli.Command("import", __doc__, define_flags, _main)
