"""
retina_plugin: RetinaNet and the focal loss (Lin et al., 2017) as a detectron2 plugin.

Importing the package registers the "FocalRetinaNet" meta-architecture, its heads and losses,
and the built-in demo datasets.
"""
from .config import add_retina_config
from .modeling import FocalRetinaNet, FocalRetinaNetHead, sigmoid_focal_loss
from . import data  # noqa: F401  (registers the built-in datasets)

__version__ = "0.1.0"
