from .register import (
    check_num_classes,
    register_coco_json,
    register_datasets_from_config,
    register_voc_folder,
)
from .reef import REEF_CLASS_NAMES, register_reef_datasets
from .shapes import SHAPES_CLASS_NAMES, register_shapes_datasets

register_shapes_datasets()
register_reef_datasets()
