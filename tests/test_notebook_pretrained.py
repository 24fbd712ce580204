"""The analysis notebook on a network imported without data (`progressive import`): the
1/16-width torchvision ResNet-18 fixture over a folder of photographs named by its classes,
every cell run as on a trained run, what the import lacks left out in one line each."""

import json
import shutil

import numpy as np
import pytest

from progressive.commands import import_
from tests.test_analysis import REPO, _env

FIXTURES = REPO / "tests" / "fixtures" / "pretrained"
# The photographs' classes among ten, class 0 not the first folder in sorted order: labels
# matched by position instead of by name would name other classes in the tables.
CLASSES = ("coffee", "other0", "rocket", "other1", "astronaut", "other2", "chelsea", "other3",
           "other4", "other5")
# Printed by a cell the test appends: what the notebook computed, for the checks below.
PROBE = """
import json
print("PROBE " + json.dumps({
    "interpretation": {key: result[key] for key in ("num_images", "accuracy", "per_class",
                                                    "most_confused")},
    "canvas": {"n_images": canvas_result["n_images"], "object_px": canvas_result["object_px"],
               "canvas_px": canvas_result["canvas_px"],
               "correct": across["correct"]},
    "consistency": {key: agree[key] for key in ("n_images", "consistency", "draws")},
}))
"""


@pytest.mark.slow
def test_notebook_runs_on_an_imported_network(tmp_path, monkeypatch):
  import nbclient  # pylint: disable=import-outside-toplevel
  import nbformat  # pylint: disable=import-outside-toplevel

  (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
  references = np.load(FIXTURES / "references.npz")
  photos = [str(p) for p in references["photos"]]
  for name in photos:  # 4 classes x 2 images: each photograph and a copy of it.
    folder = tmp_path / "val" / name
    folder.mkdir(parents=True)
    for copy in ("0.png", "1.png"):
      shutil.copy(FIXTURES / "images" / f"{name}.png", folder / copy)
  workdir = tmp_path / "rn18"
  import_.import_run("resnet18", FIXTURES / "resnet18.pth", workdir,
                     class_names=tmp_path / "classes.txt")

  env = _env(PROGRESSIVE_WORKDIR=str(workdir), PROGRESSIVE_IMAGES=str(tmp_path / "val"),
             PROGRESSIVE_NUM_IMAGES="4")
  for key, value in env.items():
    monkeypatch.setenv(key, value)
  notebook = nbformat.read(REPO / "experiments" / "analysis.ipynb", as_version=4)
  assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")
  notebook.cells.append(nbformat.v4.new_code_cell(PROBE))
  nbclient.NotebookClient(
      notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
  ).execute()

  outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.get("output_type") == "error"]
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  # Confusion matrix, top losses, size matrix, jaggedness, ensemble; no object scale (a
  # folder), no show_batch, curves, schedules or activations over training (no training).
  assert len(images) == 5
  printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
  for section in ("Evaluation rows", "Training inputs", "Training curves", "Schedules",
                  "Activation statistics over training", "Colorful dimension"):
    assert f"{section}: left out — the network was imported, not trained here." in printed
  assert "Imported resnet18 (torchvision)" in printed and "10 classes: coffee, other0" in printed
  probe = json.loads(printed.split("PROBE ", 1)[1])

  # torch's own logits of the photographs (torchvision's view): the predicted class of each.
  predicted = [CLASSES[i] for i in references["resnet18_logits_torchvision_224"].argmax(axis=1)]
  interpretation = probe["interpretation"]
  assert interpretation["num_images"] == 8
  assert interpretation["accuracy"] == pytest.approx(
      np.mean([p == name for p, name in zip(predicted, photos)]))
  per_class = {r["class"]: (r["count"], r["correct"]) for r in interpretation["per_class"]}
  assert per_class == {name: (2, 2 * (predicted[photos.index(name)] == name))
                       if name in photos else (0, 0) for name in CLASSES}
  assert sorted((r["true"], r["predicted"], r["count"]) for r in interpretation["most_confused"]) \
      == sorted((name, p, 2) for name, p in zip(photos, predicted) if p != name)

  canvas = probe["canvas"]  # 100 px images moved across ResNet-18's 224 px input.
  assert (canvas["n_images"], canvas["object_px"], canvas["canvas_px"]) == (4, 100, 224)
  assert np.asarray(canvas["correct"]).shape == (4, 125)
  assert probe["consistency"]["n_images"] == 4 and probe["consistency"]["draws"] == 2
  assert 0 <= probe["consistency"]["consistency"] <= 1
