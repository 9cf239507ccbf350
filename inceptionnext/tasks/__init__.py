"""The tasks the training engine runs, one folder each with the same parts:

- ``data``: datasets, transforms and loaders;
- ``evaluate``: metrics over a split, and validation of a saved model;
- ``draw``: pictures of predictions;
- ``infer``: predictions for image files;
- ``task``: the `Task` the engine drives, registered under its name.

A fourth task is one more folder and one more import here.
"""

from . import classification, detection, segmentation

__all__ = ["classification", "detection", "segmentation"]
