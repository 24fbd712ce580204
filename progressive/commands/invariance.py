r"""The invariance of networks to translation and test resolution on the same photographs:
`progressive invariance --workdir=W1,W2,... --images=ROOT` writes `W/analysis/invariance/`
per run and one table over the runs.

    progressive invariance --workdir=/runs/resnet18,/runs/resnet50,/runs/vgg16 \
        --images=/data/imagenet/val --bn_images=/data/imagenet/train --num_images=200 \
        --boxes=/data/imagenet/val_boxes

ROOT holds `ROOT/<class>/<image>`: ImageNet's validation set by synset for an imported
ImageNet network, or one split of a folder dataset for a run trained on it; class folders
are matched to each run's classes by name. The same `--num_images` images (chosen with
`--seed`, stratified over the classes) go through every run. Experiments
(`progressive.analysis.invariance`): `canvas` (Azulay & Weiss: each image at
`--object_px`, default 100/224 of the canvas, moved 1 px at a time across a `--canvas_px`
canvas, default the run's crop size), `crops` (windows of the photograph moved 1 px at a
time; `--boxes`, ImageNet's validation box XML, keeps the object inside), `consistency`
(Zhang: two random crops of the resize square, `--draws` times) and `resolution`
(accuracy from 128 to 448 px for a 224 px network, with stored and, from
`--bn_images`, recomputed batch-norm statistics). The table (`invariance.csv`,
`invariance.md`) goes to `--out`, default the first workdir's analysis folder.
"""

from absl import flags

from progressive import analysis, cli
from progressive.analysis import invariance
from progressive.data import views


def define_flags(fv: flags.FlagValues) -> None:
  """The command's flags."""
  define = {"flag_values": fv}
  flags.DEFINE_list("workdir", None, "Runs to analyse (workdirs of trained or imported runs).",
                    required=True, **define)
  flags.DEFINE_string("images", None, "The images, ROOT/<class>/<image>.", required=True,
                      **define)
  flags.DEFINE_string("bn_images", None, "Other images, ROOT/<class>/<image> (e.g. a training "
                      "folder), batch norm is recomputed from at each test size.", **define)
  flags.DEFINE_integer("bn_num_images", 1024, "How many of --bn_images to recompute from.",
                       **define)
  flags.DEFINE_integer("num_images", 200, "Images every run sees.", **define)
  flags.DEFINE_list("experiments", list(invariance.EXPERIMENTS), "Which to run.", **define)
  flags.DEFINE_integer("object_px", None, "Canvas shifts: the image's side (default 100/224 "
                       "of the canvas).", **define)
  flags.DEFINE_integer("canvas_px", None, "Canvas shifts: the canvas's side (default: the "
                       "run's crop size).", **define)
  flags.DEFINE_string("fill", "mean", "Canvas colour: mean (the network sees zeros), black, "
                      "or R,G,B in 0..255.", **define)
  flags.DEFINE_string("boxes", None, "Crop shifts: ImageNet's validation box folder "
                      "(<image name>.xml); windows that would cut the box are left out.",
                      **define)
  flags.DEFINE_integer("max_shift", None, "Crop shifts: offsets from the centre crop up to "
                       "this (default (resize - crop) / 2).", **define)
  flags.DEFINE_integer("draws", 5, "Consistency: pairs of random crops per image.", **define)
  flags.DEFINE_list("sizes", None, "Resolution sweep test sizes (default FixRes's 128..448 "
                    "scaled to the run's crop size).", **define)
  flags.DEFINE_integer("seed", 0, "Seed of the image choice, crops and bootstraps.", **define)
  flags.DEFINE_string("out", None, "Folder of the table (default: the first workdir's "
                      "analysis folder).", **define)


def _fill(text: str):
  if text in ("mean", "black"):
    return text
  try:
    return invariance.fill_colour([float(v) for v in text.split(",")])
  except ValueError:
    raise cli.Error(f"--fill={text!r} must be mean, black or R,G,B in 0..255.") from None


def _options(fv: flags.FlagValues) -> invariance.Options:
  unknown = [e for e in fv.experiments if e not in invariance.EXPERIMENTS]
  if unknown or not fv.experiments:
    raise cli.Error(f"--experiments={','.join(fv.experiments)}: choose from "
                    f"{','.join(invariance.EXPERIMENTS)}.")
  for name in ("num_images", "bn_num_images", "draws", "object_px", "canvas_px"):
    if fv[name].value is not None and fv[name].value < 1:
      raise cli.Error(f"--{name} must be a positive integer, got {fv[name].value}.")
  try:
    sizes = [int(s) for s in fv.sizes] if fv.sizes else None
  except ValueError:
    raise cli.Error(f"--sizes={','.join(fv.sizes)} must be whole numbers of pixels.") from None
  return invariance.Options(
      experiments=tuple(fv.experiments), object_px=fv.object_px, canvas_px=fv.canvas_px,
      fill=_fill(fv.fill), max_shift=fv.max_shift, draws=fv.draws, sizes=sizes, seed=fv.seed)


def _main(fv: flags.FlagValues) -> None:
  """Loads every run, reads the images once, runs the experiments, writes the table."""
  options = _options(fv)
  runs = [analysis.load_run(workdir) for workdir in fv.workdir]
  files = views.list_folder(fv.images)
  for run in runs:  # Every refusal before anything is computed.
    views.class_labels(list(files), run.info.class_names, fv.images,
                       f"{invariance.run_name(run)} ({run.workdir})")
    invariance.settings(run, options)
  loaded = views.load_images(views.choose(files, fv.seed), fv.num_images)
  if not loaded["images"]:
    raise views.ImagesError(f"None of the files in {fv.images} is a readable image (the first: "
                            f"{loaded['unreadable'][0]}).")
  boxes = None
  if fv.boxes and "crops" in options.experiments:
    boxes = invariance.find_boxes(fv.boxes, loaded["images"], loaded["classes"], loaded["paths"])
  images = invariance.Images(loaded["images"], loaded["classes"], loaded["paths"], boxes)
  bn_images = None
  if fv.bn_images and "resolution" in options.experiments:
    bn_files = views.list_folder(fv.bn_images)
    bn_images = views.load_images(views.choose(bn_files, fv.seed), fv.bn_num_images)["images"]
  note = (f"{len(images.images)} images of {len(set(images.classes))} classes from {fv.images} "
          f"(seed {fv.seed}; {len(loaded['unreadable'])} unreadable files left out)"
          + (f", {sum(b is not None for b in boxes)} with a box" if boxes else "")
          + (f"; batch norm recomputed from {len(bn_images)} images of {fv.bn_images}"
             if bn_images else "") + ".")
  print(note)
  rows = []
  for run in runs:
    print(analysis.describe(run))
    results = invariance.analyze(run, images, invariance.labels_for(run, images, fv.images),
                                 options, bn_images=bn_images)
    results["summary"]["unreadable"] = loaded["unreadable"]
    out = invariance.write(results, run.workdir / "analysis" / "invariance")
    print(f"Wrote {out}")
    rows.append(invariance.table_row(results))
  for path in invariance.write_table(rows, fv.out or runs[0].workdir / "analysis", note):
    print(f"Wrote {path}")


COMMAND = cli.Command("invariance", __doc__, define_flags, _main)
