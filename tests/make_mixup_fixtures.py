"""Writes tests/fixtures/mixup.npz: fastai 2.7's label smoothing, MixUp and CutMix on small
constructed batches, for test_mixup.

Run with a python that has torch (1.13 here) and fastai 2.7.18 on its path:

  cd /tmp && pip download --no-deps fastai==2.7.18 fastcore==1.7.29 fastprogress==1.0.3 \\
      fastdownload==0.0.7 && mkdir fastai_site && for w in *.whl; do \\
      python -m zipfile -e $w fastai_site; done
  PYTHONPATH=/tmp/fastai_site /usr/bin/python3 tests/make_mixup_fixtures.py

The callbacks run their own `before_batch` on a stand-in learner whose labels are
`arange(B)`, so the partner labels they keep (`yb1`) are their permutation; CutMix's box
centre is recorded from its `torch.randint` calls. Arrays (images NCHW, as fastai's):
- `logits` [B, K], `labels` [B]; `smooth_eps`; `smooth_loss` (mean) and
  `smooth_losses` [B] of `LabelSmoothingCrossEntropy(eps)`;
- `mixup_images` [B, C, H, W] in; `mixup_lam`, `mixup_perm`, `mixup_out` from `MixUp(0.4)`;
  `mixup_smooth_loss`: its loss `lf` over `LabelSmoothingCrossEntropy(eps)` on `logits`;
- `cutmix_beta_lam` (the Beta draw), `cutmix_centre` (cy, cx), `cutmix_box` (top, bottom,
  left, right), `cutmix_lam` (area-corrected), `cutmix_perm`, `cutmix_out` from `CutMix(1.0)`;
- `box_cases` [N, 5] (lam, cy, cx, height, width) and `box_expected` [N, 4] (top, bottom,
  left, right): `CutMix.rand_bbox` at fixed centres.
"""

import pathlib
import types

import numpy as np
import torch
from fastai.callback.mixup import CutMix, MixUp
from fastai.losses import LabelSmoothingCrossEntropy

OUT = pathlib.Path(__file__).parent / "fixtures" / "mixup.npz"
B, K, C, H, W = 6, 5, 3, 7, 9
EPS = 0.2


def stand_in(images: torch.Tensor, labels: torch.Tensor, loss_func=None):
  """The learner attributes a mixing callback reads and writes."""
  return types.SimpleNamespace(xb=(images,), yb=(labels,), x=images, y=labels, training=True,
                               loss_func=loss_func)


def run_callback(callback, images: torch.Tensor, loss_func=None):
  """`callback.before_batch` on `images` labelled `arange(B)`; returns the callback and
  the mixed images."""
  callback.learn = stand_in(images.clone(), torch.arange(B), loss_func)
  callback.stack_y = True  # As before_train sets it for a `y_int` loss.
  callback.old_lf = loss_func
  callback.before_batch()
  return callback, callback.learn.xb[0].numpy()


def main():
  torch.manual_seed(0)
  logits = torch.randn(B, K) * 2
  labels = torch.tensor([0, 3, 4, 1, 1, 2])
  lsce = LabelSmoothingCrossEntropy(EPS)
  out = {
      "logits": logits.numpy(), "labels": labels.numpy(), "smooth_eps": np.float32(EPS),
      "smooth_loss": lsce(logits, labels).numpy(),
      "smooth_losses": LabelSmoothingCrossEntropy(EPS, reduction="none")(logits, labels).numpy(),
  }

  images = torch.randn(B, C, H, W)
  mixup, mixed = run_callback(MixUp(0.4), images, lsce)
  perm = mixup.yb1[0]
  out.update(mixup_images=images.numpy(), mixup_lam=mixup.lam.numpy(), mixup_perm=perm.numpy(),
             mixup_out=mixed)
  # The loss MixUp puts in place of a y_int loss: lerp of the losses of the two labels.
  mixup.yb1 = (labels[perm],)
  out["mixup_smooth_loss"] = mixup.lf(logits, labels).numpy()

  draws, real_randint = [], torch.randint

  def recording_randint(*args, **kwargs):
    value = real_randint(*args, **kwargs)
    draws.append(int(value))
    return value

  torch.manual_seed(6)  # A box neither empty nor whole.
  cutmix = CutMix(1.0)
  real_bbox = cutmix.rand_bbox

  def recording_bbox(width, height, lam):
    x1, y1, x2, y2 = real_bbox(width, height, lam)
    out.update(cutmix_beta_lam=lam.numpy(), cutmix_box=np.array([int(v) for v in (y1, y2, x1, x2)]))
    return x1, y1, x2, y2

  cutmix.rand_bbox = recording_bbox
  torch.randint = recording_randint
  try:
    cutmix, mixed = run_callback(cutmix, images)
  finally:
    torch.randint = real_randint
  cx, cy = draws
  out.update(cutmix_centre=np.array([cy, cx]), cutmix_lam=cutmix.lam.numpy(),
             cutmix_perm=cutmix.yb1[0].numpy(), cutmix_out=mixed)

  cases, expected = [], []
  for lam, cy, cx, height, width in [(0.3, 3, 4, 7, 9), (0.9, 0, 8, 7, 9), (0.05, 6, 0, 7, 9),
                                     (0.5, 16, 16, 32, 32), (0.999, 5, 5, 10, 10),
                                     (0.0, 2, 3, 5, 6), (0.75, 11, 2, 12, 12)]:
    centre = iter([torch.tensor([cx]), torch.tensor([cy])])
    torch.randint = lambda *args, centre=centre, **kwargs: next(centre)
    try:
      x1, y1, x2, y2 = real_bbox(width, height, torch.tensor([lam]))
    finally:
      torch.randint = real_randint
    cases.append([lam, cy, cx, height, width])
    expected.append([int(y1), int(y2), int(x1), int(x2)])
  out.update(box_cases=np.array(cases, np.float32), box_expected=np.array(expected))
  OUT.parent.mkdir(parents=True, exist_ok=True)
  np.savez(OUT, **out)
  print(f"Wrote {OUT} ({OUT.stat().st_size} bytes).")


if __name__ == "__main__":
  main()
