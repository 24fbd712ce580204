"""Data: the built-in `scale_shapes` TFDS dataset and on-device resizing.

Submodules are imported explicitly (`from progressive.data import scale_shapes`), so
importing this package stays cheap and never pulls in tensorflow_datasets.
"""
