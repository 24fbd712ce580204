"""The errors a command reports as one line on stderr (`Error: ...`, exit status 2).

Each names the problem and the fix: a bad config value, a busy workdir, a program too
large for the device, a run that cannot be loaded. Kept apart, with no imports, so the
command line catches them without importing JAX.
"""


class Error(Exception):
  """Bad input or a known fault, reported as one line naming the problem and the fix."""


def one_line(text) -> str:
  """`text` (or an error's message) on one line: its non-blank lines, stripped and joined."""
  return " ".join(line.strip() for line in str(text).splitlines() if line.strip())
