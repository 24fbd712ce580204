"""Writes tests/fixtures/weights/: small weights files made by torch, for test_weights.

Run with a python that has torch (1.13 here) and safetensors:
`/usr/bin/python3 tests/make_weights_fixtures.py`. It writes
- `expected.npz`: the arrays every real file must read to;
- `plain.pth` (torch's zip format) and `plain_legacy.pth` (`_use_new_zipfile_serialization=False`);
- `wrapped.pth`, `wrapped_legacy.pth`: `{"state_dict": {"module." + name: ...}, "epoch": 3}`;
- `plain.safetensors` (contiguous copies: safetensors stores no views);
- `bfloat16.pth`, `bfloat16.safetensors`: one bfloat16 tensor, which numpy cannot hold;
- `hostile.pth`, `hostile_legacy.pth`: a real torch file whose pickle calls `os.system` to
  touch the file named by `$PROGRESSIVE_WEIGHTS_MARKER` (nothing when it is unset).
"""

import os
import pathlib

import numpy as np
import safetensors.torch
import torch

OUT = pathlib.Path(__file__).parent / "fixtures" / "weights"
MARKER_COMMAND = 'touch "$PROGRESSIVE_WEIGHTS_MARKER"'


class Hostile:
  """Pickles as a call to os.system: what a malicious .pth holds."""

  def __reduce__(self):
    return os.system, (MARKER_COMMAND,)


def tensors():
  """A few tensors of each kind a state dict holds, views included."""
  generator = torch.Generator().manual_seed(0)
  shared = torch.randn(20, generator=generator)
  return {
      "conv1.weight": torch.randn(4, 3, 3, 3, generator=generator),
      "conv1.bias": torch.nn.Parameter(torch.randn(4, generator=generator)),
      "bn1.running_mean": torch.randn(4, generator=generator),
      "bn1.num_batches_tracked": torch.tensor(7),
      "layer1.0.conv1.weight": torch.randn(4, 4, 1, 1, generator=generator),
      "fc.weight": torch.randn(5, 6, generator=generator).t(),  # strides (1, 6)
      "fc.bias": torch.randn(5, generator=generator).half(),
      "shared.whole": shared,
      "shared.part": shared[4:16].view(3, 4)[:, 1:],  # offset 5, strides (4, 1)
      "index": torch.arange(6, dtype=torch.int64).view(2, 3),
  }


def main():
  OUT.mkdir(parents=True, exist_ok=True)
  state = tensors()
  assert not state["fc.weight"].is_contiguous() and not state["shared.part"].is_contiguous()
  np.savez(OUT / "expected.npz", **{k: v.detach().numpy() for k, v in state.items()})
  wrapped = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}
  for name, obj in [("plain", state), ("wrapped", wrapped),
                    ("bfloat16", {"w": torch.ones(2, dtype=torch.bfloat16)}),
                    ("hostile", {"conv1.weight": state["conv1.weight"], "x": Hostile()})]:
    torch.save(obj, OUT / f"{name}.pth")
    if name != "bfloat16":
      torch.save(obj, OUT / f"{name}_legacy.pth", _use_new_zipfile_serialization=False)
  contiguous = {k: v.detach().contiguous().clone() for k, v in state.items()}
  safetensors.torch.save_file(contiguous, OUT / "plain.safetensors")
  safetensors.torch.save_file({"w": torch.ones(2, dtype=torch.bfloat16)},
                              OUT / "bfloat16.safetensors")
  for path in sorted(OUT.iterdir()):
    print(f"{path.name}: {path.stat().st_size} bytes")


if __name__ == "__main__":
  main()
