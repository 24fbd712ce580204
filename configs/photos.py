r"""Progressive resizing of a simple CNN on `photos`, patches of real photographs.

  progressive train --config=configs/photos.py --workdir=/tmp/progressive/photos

The schedule of configs/default.py (32 -> 48 -> 64 px, one one-cycle SGD schedule over the
run, evaluated at every size after every stage) on the built-in photo dataset: 16 classes,
one per photograph shipped with scikit-image and scikit-learn, grey patches stored at 64 px
(docs/PHOTOS.md), generated on first use without a download. Training flips horizontally.
RGB instead of grey: `--config.data.builder_config=colour`. The tiny variant the tests use
(the 32 px "small" config, a few steps per stage):

  progressive train --config=configs/photos.py:smoke --workdir=/tmp/photos_smoke

Any field can be overridden on the command line; the fields, their defaults and what they
mean are in configs/default.py.
"""

import ml_collections

from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default.get_config(arg)  # "smoke": builder_config "small", 16 -> 24 -> 32 px.
  config.data.name = "photos"
  config.data.augment = "flip"
  return config
