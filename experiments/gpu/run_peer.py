r"""Runs one of the peer scripts (copies of `../shared/gpu/`, kept byte for byte) as it is,
or with `--smoke` at a tiny size on the CPU, so the benchmark's CPU smoke test runs the
same file:

  python experiments/gpu/run_peer.py experiments/gpu/peer_flax_resnet50.py
  python experiments/gpu/run_peer.py experiments/gpu/peer_flax_resnet50.py --smoke

`--smoke` replaces the script's list of (size, batch) points with one tiny point, its
warm-up and timed steps with 1 and 2, its blocks per stage with 1 and its widths with an
eighth, and jits its initialisation:
it checks that the file runs and prints the line the report reads, and times nothing worth
reading. It refuses a script whose text no longer has what it replaces (a changed peer
must be looked at, not timed at sizes nobody chose).
"""

import argparse
import pathlib
import runpy
import sys
import tempfile

# What --smoke changes in each peer's text: the (size, batch) points, the timed steps ...
SMOKE = {
    # ... its depth to one block per stage (a ResNet-50 compiles for half a minute on a CPU),
    # and its initialisation jitted (op by op it takes seconds there).
    "peer_flax_resnet50.py": [("[(224, 256), (128, 256)]", "[(24, 8)]"), ("n = 20", "n = 2"),
                              ("range(3)", "range(1)"), ("[3, 4, 6, 3]", "[1, 1, 1, 1]"),
                              ("64 * 2 ** i", "8 * 2 ** i"),  # bfloat16 convolutions are slow on a CPU.
                              ("v = m.init(", "v = jax.jit(m.init)(")],
}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("script", type=pathlib.Path)
  parser.add_argument("--smoke", action="store_true", help="One tiny point, on any device.")
  args = parser.parse_args()
  text = args.script.read_text()
  if args.smoke:
    edits = SMOKE.get(args.script.name)
    if edits is None:
      sys.exit(f"{args.script.name} has no smoke variant (only {', '.join(SMOKE)}).")
    for old, new in edits:
      if text.count(old) != 1:
        sys.exit(f"{args.script}: expected {old!r} once, to make its smoke variant; the peer "
                 f"changed, update experiments/gpu/run_peer.py.")
      text = text.replace(old, new)
  with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / args.script.name
    path.write_text(text)
    sys.argv = [str(path)]
    runpy.run_path(str(path), run_name="__main__")


if __name__ == "__main__":
  main()
