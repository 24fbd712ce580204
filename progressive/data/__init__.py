"""Data: the sources (`scale_shapes`, `photos`, image folders, TFDS) behind one interface
(`pipeline`), split specs (`splits`), host decoding and augmentation (`decode`, `augment`),
the on-device zoom and normalisation (`resize`), and accuracy by class family (`families`).

Imports run one way: `pipeline` imports the sources (`scale_shapes`, `photos`, `folder`),
and they and `pipeline` import the helpers (`splits`, `decode`, `augment`); none imports
`pipeline`. Submodules are imported explicitly (`from progressive.data import
scale_shapes`), so importing this package alone stays cheap.
"""
