"""The README's quick start and CI agree: `.ci/run` runs exactly the README's test command."""

import pathlib

REPO = pathlib.Path(__file__).parents[1]


def _commands(path: pathlib.Path, indent: str) -> list[str]:
  lines = path.read_text().splitlines()
  return [line[len(indent):] for line in lines if line.startswith(indent) and "pytest" in line]


def test_ci_runs_exactly_the_readmes_test_command():
  readme = _commands(REPO / "README.md", "    ")
  # The first is the whole suite after installing the test extras; the quick tier follows.
  assert readme[0].startswith('pip install -e ".[test]" && ') and '-m "not slow"' in readme[1]
  assert _commands(REPO / ".ci" / "run", "") == [readme[0]]
