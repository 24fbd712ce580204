"""Builds experiments/FINDINGS.md from FINDINGS.template.md and the sweeps' results.md.

    python experiments/make_findings.py SWEEP_ROOT

Every `{{table:NAME}}` in the template becomes the table of `SWEEP_ROOT/NAME/results.md`
and every `{{figure:NAME}}` a link to a copy of its `results.png` in
`experiments/figures/`, so no number in FINDINGS.md is typed by hand.
"""

import pathlib
import re
import shutil
import sys

HERE = pathlib.Path(__file__).parent


def table(root: pathlib.Path, name: str) -> str:
  lines = (root / name / "results.md").read_text().splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith("|"))
  notes = [line for line in lines[1:start] if line.strip()]
  return "\n".join(notes + [""] + lines[start:])


def figure(root: pathlib.Path, name: str) -> str:
  target = HERE / "figures" / f"{name}.png"
  target.parent.mkdir(exist_ok=True)
  shutil.copyfile(root / name / "results.png", target)
  return f"![{name}](figures/{name}.png)"


def main(root: str) -> None:
  root = pathlib.Path(root)
  text = (HERE / "FINDINGS.template.md").read_text()
  text = re.sub(r"\{\{table:(\w+)\}\}", lambda m: table(root, m.group(1)), text)
  text = re.sub(r"\{\{figure:(\w+)\}\}", lambda m: figure(root, m.group(1)), text)
  (HERE / "FINDINGS.md").write_text(text)


if __name__ == "__main__":
  main(sys.argv[1])
