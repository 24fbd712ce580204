"""Builds experiments/FINDINGS.md from FINDINGS.template.md and the sweeps' results.

    python experiments/make_findings.py [SWEEP_ROOT]

With SWEEP_ROOT (the parent of the sweeps' workdirs), every sweep the template names has
its `results.md`, `results.csv` and `results.png` copied into `experiments/results/NAME/`
first; without it, FINDINGS.md is rebuilt from those copies. Every `{{table:NAME}}` in
the template becomes the tables of `results/NAME/results.md` and every `{{figure:NAME}}`
a link to its plot, so no number in FINDINGS.md is typed by hand.
"""

import pathlib
import re
import shutil
import sys

HERE = pathlib.Path(__file__).parent
RESULTS = HERE / "results"
FILES = ("results.md", "results.csv", "results.png")


def table(name: str) -> str:
  """`results.md` without its title: the notes, then the table(s)."""
  lines = (RESULTS / name / "results.md").read_text().splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith("|"))
  notes = [line for line in lines[1:start] if line.strip()]
  return "\n".join(notes + [""] + lines[start:])


def figure(name: str) -> str:
  return f"![{name}](results/{name}/results.png)"


def collect(root: pathlib.Path, names) -> None:
  for name in names:
    target = RESULTS / name
    target.mkdir(parents=True, exist_ok=True)
    for file in FILES:
      if not (root / name / file).exists():
        raise FileNotFoundError(f"{root / name / file} is missing: run that sweep first.")
      shutil.copyfile(root / name / file, target / file)


def sweep_names(template: str) -> list[str]:
  return list(dict.fromkeys(re.findall(r"\{\{(?:table|figure):(\w+)\}\}", template)))


def render(template: str) -> str:
  """The template with every placeholder replaced from `experiments/results/`."""
  text = re.sub(r"\{\{table:(\w+)\}\}", lambda m: table(m.group(1)), template)
  return re.sub(r"\{\{figure:(\w+)\}\}", lambda m: figure(m.group(1)), text)


def main(argv) -> None:
  template = (HERE / "FINDINGS.template.md").read_text()
  if len(argv) > 1:
    collect(pathlib.Path(argv[1]), sweep_names(template))
  (HERE / "FINDINGS.md").write_text(render(template))


if __name__ == "__main__":
  main(sys.argv)
