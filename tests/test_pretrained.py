"""Importing networks trained by torchvision, timm and antialiased-cnns (`progressive import`).

The references were computed by the libraries themselves (tests/make_pretrained_fixtures.py,
torch 1.13, torchvision 0.14, timm 0.9.16, antialiased-cnns 0.3): networks of their own
classes at full depth and 1/16 width with random weights and batch-norm statistics, and
their logits on four photographs at 224 and 97 px (tests/fixtures/pretrained/README.md).
Where /usr/bin/python3 has torch and torchvision, a slow test also checks full-size
networks.
"""

import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from progressive import config as config_lib
from progressive.analysis import load_run
from progressive.analysis.run import RunError
from progressive.commands import import_
from progressive.data import imagenet, views
from progressive.models import pretrained, weights
from progressive.training.workdir import WorkdirError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "pretrained")
REFERENCES = os.path.join(FIXTURES, "references.npz")
SYSTEM_PYTHON = "/usr/bin/python3"
# arch -> (weights file, the key of its logits in references.npz)
FILES = {
    "resnet18": ("resnet18.pth", "resnet18"),
    "resnet50": ("resnet50.pth", "resnet50"),
    "vgg11": ("vgg11.pth", "vgg11"),
    "vgg16": ("vgg16.pth", "vgg16"),
    "vgg16_bn": ("vgg16_bn.pth", "vgg16_bn"),
    "timm_resnet50": ("timm_resnet50.safetensors", "timm_resnet50"),
    "aa_resnet50": ("aa_resnet50_f4.pth", "aa_resnet50_f4"),
    "aa_resnet18": ("aa_resnet18_f3.pth", "aa_resnet18_f3"),
}
MODEL_DEFAULTS = config_lib.default_config().model.to_dict()
QUICK = ("resnet18", "vgg16_bn", "aa_resnet18")  # One of each conversion; the rest are slow.


@pytest.fixture(scope="module")
def references():
  return dict(np.load(REFERENCES))


def _path(arch: str) -> str:
  return os.path.join(FIXTURES, FILES[arch][0])


def _relative_error(out, ref) -> float:
  return float(np.abs(np.asarray(out) - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("arch", [
    pytest.param(a, marks=() if a in QUICK else pytest.mark.slow) for a in FILES])
def test_import_gives_the_source_librarys_logits(arch, references, tmp_path):
  run = import_.import_run(arch, _path(arch), tmp_path / "run")
  key = FILES[arch][1]
  for size in (224, 97):
    logits = run.predict(references[f"images_{size}"], size=size)
    assert _relative_error(logits, references[f"{key}_logits_{size}"]) < 1e-4, size
  assert run.config.model.width == 4 / 64 and run.info.num_classes == 10
  assert run.info.class_names == tuple(str(i) for i in range(10))
  assert run.train_size == 224 and run.config.pretrained.arch == arch


def test_the_standard_view_then_predict_is_torchvisions_preprocessing_and_model(
    references, tmp_path):
  run = import_.import_run("resnet18", _path("resnet18"), tmp_path / "run")
  source = run.config.pretrained
  assert (source.resize_px, source.crop_px, source.interpolation) == (256, 224, "bilinear")
  photos = [Image.open(os.path.join(FIXTURES, "images", f"{name}.png")).convert("RGB")
            for name in references["photos"]]
  batch = np.stack([views.standard_view(p, 256, 224, "bilinear") for p in photos])
  np.testing.assert_array_equal(batch, references["torchvision_view_224"])
  logits = run.predict(batch)
  assert _relative_error(logits, references["resnet18_logits_torchvision_224"]) < 1e-4


def test_the_run_folder_reopens_and_is_refused_for_training(tmp_path):
  import_.import_run("resnet18", _path("resnet18"), tmp_path / "run")
  run = load_run(tmp_path / "run")
  assert run.step == 0 and run.steps == (0,) and run.info.name == "none"
  assert run.schedule_curves()["step"] == []
  assert run.metrics("import")["sha256"].iloc[0] == import_.sha256(_path("resnet18"))
  with pytest.raises(Exception, match="imported without data"):
    run.test_examples(4)


@pytest.mark.parametrize("arch, file, looks_like", [
    ("resnet18", "resnet50", "resnet50"),
    ("vgg11", "vgg16", "vgg16"),
    ("vgg16", "vgg16_bn", "vgg16_bn"),
    ("resnet50", "aa_resnet50", "an anti-aliased resnet50 (antialiased-cnns, filter size 4)"),
    ("aa_resnet18", "resnet18", "resnet18"),
    ("resnet18", "vgg11", "vgg11"),
])
def test_a_file_of_another_architecture_gets_one_line(arch, file, looks_like, tmp_path):
  with pytest.raises(pretrained.MismatchError) as info:
    import_.import_run(arch, _path(file), tmp_path / "run")
  message = str(info.value)
  assert "\n" not in message and f"looks like {looks_like}" in message
  assert f"do not fit {arch}" in message
  assert f"pass --arch={file}" in message  # Each file here is saved from the arch of its name.
  assert not (tmp_path / "run").exists()  # Refused before anything is written.


def test_a_changed_tensor_shape_is_named(tmp_path):
  state = weights.read(_path("resnet18"))
  state["layer2.0.conv1.weight"] = state["layer2.0.conv1.weight"][:, :3]
  with pytest.raises(pretrained.MismatchError, match=r"layer2\.0\.conv1\.weight has shape \(8, 3, 3, 3\)"):
    pretrained.convert(state, pretrained.ARCHS["resnet18"], MODEL_DEFAULTS)
  state = weights.read(_path("resnet18"))
  state["extra.weight"] = np.zeros(3, np.float32)
  with pytest.raises(pretrained.MismatchError, match=r"extra\.weight is not part of it"):
    pretrained.convert(state, pretrained.ARCHS["resnet18"], MODEL_DEFAULTS)


def test_a_workdir_that_holds_a_run_is_refused_and_kept(tmp_path):
  workdir = tmp_path / "run"
  import_.import_run("resnet18", _path("resnet18"), workdir)
  before = (workdir / "config.json").read_text()
  with pytest.raises(WorkdirError, match="already holds a run"):
    import_.import_run("vgg11", _path("vgg11"), workdir)
  assert (workdir / "config.json").read_text() == before


def test_a_pickle_that_would_run_code_is_refused_before_anything_is_written(tmp_path):
  hostile = os.path.join(os.path.dirname(__file__), "fixtures", "weights", "hostile.pth")
  marker = tmp_path / "ran"
  os.environ["PROGRESSIVE_WEIGHTS_MARKER"] = str(marker)
  try:
    with pytest.raises(weights.UnsafeWeightsError):
      import_.import_run("resnet18", hostile, tmp_path / "run")
  finally:
    del os.environ["PROGRESSIVE_WEIGHTS_MARKER"]
  assert not marker.exists() and not (tmp_path / "run").exists()


def test_imagenet_classes_and_validation_layout(tmp_path):
  synsets = imagenet.synsets()
  assert len(synsets) == 1000 and synsets[0] == "n01440764" and list(synsets) == sorted(synsets)
  labels = imagenet.validation_synsets()
  assert len(labels) == 50_000 and set(labels) == set(synsets)
  src = tmp_path / "flat"
  src.mkdir()
  for i in (1, 2, 50_000):
    (src / f"ILSVRC2012_val_{i:08d}.JPEG").write_bytes(b"jpeg")
  (src / "README").write_text("not an image")
  counts = imagenet.layout_validation(src, tmp_path / "val")
  assert counts == {"images": 3, "classes": len({labels[0], labels[1], labels[-1]})}
  assert os.path.islink(tmp_path / "val" / labels[0] / "ILSVRC2012_val_00000001.JPEG")
  assert (tmp_path / "val" / labels[-1] / "ILSVRC2012_val_00050000.JPEG").read_bytes() == b"jpeg"
  with pytest.raises(imagenet.LayoutError, match="holds no ILSVRC2012_val"):
    imagenet.layout_validation(tmp_path / "val", tmp_path / "other")


def _console(*args, cwd):
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  return subprocess.run([shutil.which("progressive"), *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_import_then_analyze_a_folder_from_the_console(tmp_path):
  """As a user meets it: the installed command from another folder, no PYTHONPATH; the
  run's classes named by a file, the analysis over a folder of photographs. The networks
  run at 112 px (`--crop_px`, the view 128 -> 112) to keep the test short."""
  names = ["astronaut", "coffee", "chelsea", "rocket", *(f"other{i}" for i in range(6))]
  (tmp_path / "classes.txt").write_text("\n".join(names) + "\n")
  for name in names[:4]:
    folder = tmp_path / "val" / name
    folder.mkdir(parents=True)
    Image.open(os.path.join(FIXTURES, "images", f"{name}.png")).convert("RGB").save(folder / "0.jpg")
  done = _console("import", "--arch=resnet18", f"--weights={_path('resnet18')}",
                  "--workdir=rn18", "--class_names=classes.txt", "--crop_px=112", cwd=tmp_path)
  assert done.returncode == 0, done.stderr
  assert "Imported resnet18 at width 0.0625 (torchvision" in done.stdout
  assert load_run(tmp_path / "rn18").info.class_names == tuple(names)
  done = _console("analyze", "--workdir=rn18", "--images=val", "--num_images=4", "--sizes=112",
                  "--bn_images=4", "--stats_images=4", "--show_batch_images=0", cwd=tmp_path)
  assert done.returncode == 0, done.stderr
  report = (tmp_path / "rn18" / "analysis" / "report.md").read_text()
  assert "4 test images" in report or "all 4" in report
  # The three experiments and their table (tests/test_invariance.py puts two runs in one).
  done = _console("invariance", "--workdir=rn18", "--images=val", "--num_images=4",
                  "--bn_images=val", "--sizes=112", "--draws=1", "--object_px=100",
                  "--canvas_px=112", "--max_shift=2", "--out=table", cwd=tmp_path)
  assert done.returncode == 0, done.stderr
  assert "| resnet18 | 112 |" in (tmp_path / "table" / "invariance.md").read_text()
  folder = tmp_path / "rn18" / "analysis" / "invariance"
  for name in ("canvas.json", "crops.json", "consistency.json", "resolution.json", "canvas.png",
               "resolution.png"):
    assert (folder / name).exists(), name
  again = _console("import", "--arch=resnet50", f"--weights={_path('resnet50')}",
                   "--workdir=rn18", cwd=tmp_path)
  assert again.returncode == 2 and again.stderr.strip().startswith("Error: ")
  assert len(again.stderr.strip().splitlines()) == 1 and "already holds a run" in again.stderr


def _torch_python() -> bool:
  if not os.path.exists(SYSTEM_PYTHON):
    return False
  probe = subprocess.run([SYSTEM_PYTHON, "-c", "import torch, torchvision"], check=False,
                         capture_output=True)
  return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _torch_python(), reason="needs torch and torchvision in /usr/bin/python3")
def test_full_size_networks_where_torch_is_installed(tmp_path):
  script = os.path.join(os.path.dirname(__file__), "make_pretrained_fixtures.py")
  out = tmp_path / "full"
  subprocess.run([SYSTEM_PYTHON, script, str(out), "--full"], check=True, capture_output=True,
                 timeout=600)
  refs = dict(np.load(out / "references.npz"))
  for arch in ("resnet18", "resnet50", "vgg16"):
    run = import_.import_run(arch, out / f"{arch}.pth", tmp_path / arch)
    assert run.info.num_classes == 1000 and run.info.class_names == imagenet.synsets()
    for size in (224, 160):
      logits = run.predict(refs[f"images_{size}"], size=size)
      assert _relative_error(logits, refs[f"{arch}_logits_{size}"]) < 1e-4, (arch, size)
    shutil.rmtree(tmp_path / arch)
    os.remove(out / f"{arch}.pth")


def test_images_label_a_folder_by_the_runs_class_names(tmp_path):
  """`load_run(images=)`: class folders are matched to the run's classes by name (any
  subset, in any order); a folder the run lacks is one line naming it."""
  import_.import_run("resnet18", _path("resnet18"), tmp_path / "run")
  for name in ("7", "2"):
    (tmp_path / "val" / name).mkdir(parents=True)
    Image.open(os.path.join(FIXTURES, "images", "coffee.png")).convert("RGB").save(
        tmp_path / "val" / name / "0.jpg")
  run = load_run(tmp_path / "run", images=str(tmp_path / "val"))
  assert run.info.num_classes == 10 and sorted(run.test_examples()["label"]) == [2, 7]
  (tmp_path / "val" / "zebra").mkdir()
  shutil.copy(tmp_path / "val" / "7" / "0.jpg", tmp_path / "val" / "zebra" / "0.jpg")
  with pytest.raises(RunError) as info:
    load_run(tmp_path / "run", images=str(tmp_path / "val"))
  assert "\n" not in str(info.value) and "val/zebra is not one of the 10 classes" in str(info.value)
