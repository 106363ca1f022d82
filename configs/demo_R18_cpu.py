# LazyConfig counterpart of demo_R18_cpu.yaml: ResNet-18-FPN from scratch on the built-in
# retina_shapes data, 64-channel FPN and head, 600 iterations of 4 images on the CPU.
from detectron2.config import LazyCall as L
from detectron2.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data import transforms as T
from detectron2.evaluation import COCOEvaluator
from detectron2.model_zoo import get_config
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from retina_plugin.training.optimizer import clipped_sgd

from .common.focal_retinanet import anchor_sizes, head_input_shape, model

CHANNELS = 64
IMAGE_SIZE = 256
MAX_ITER = 600

# From scratch: every stage trains, with batch statistics (FrozenBN diverges), GN in FPN/head.
bottom_up = model.backbone.bottom_up
bottom_up.freeze_at = 0
bottom_up.stem.norm = "BN"
bottom_up.stages.depth = 18
bottom_up.stages.norm = "BN"
del bottom_up.stages.stride_in_1x1  # bottleneck blocks only
model.backbone.top_block.in_channels = 512
model.backbone.out_channels = CHANNELS
model.backbone.norm = "GN"
model.head.input_shape = head_input_shape(CHANNELS)
model.head.conv_dims = [CHANNELS] * 4
model.head.norm = "GN"
# Half the paper's anchors (16..256 px) for 256-px images with 14-48 px objects.
model.anchor_generator.sizes = anchor_sizes(16)
model.num_classes = 4
model.pixel_std = [57.375, 57.120, 58.395]

dataloader = dict(
    train=L(build_detection_train_loader)(
        dataset=L(get_detection_dataset_dicts)(names="retina_shapes_train"),
        mapper=L(DatasetMapper)(
            is_train=True,
            augmentations=[
                L(T.ResizeShortestEdge)(short_edge_length=IMAGE_SIZE, max_size=IMAGE_SIZE),
                L(T.RandomFlip)(horizontal=True),
            ],
            image_format="${....model.input_format}",
        ),
        total_batch_size=4,
        num_workers=1,
    ),
    test=L(build_detection_test_loader)(
        dataset=L(get_detection_dataset_dicts)(names="retina_shapes_val", filter_empty=False),
        mapper=L(DatasetMapper)(
            is_train=False,
            augmentations=[L(T.ResizeShortestEdge)(short_edge_length=IMAGE_SIZE, max_size=IMAGE_SIZE)],
            image_format="${....model.input_format}",
        ),
        num_workers=1,
    ),
    evaluator=L(COCOEvaluator)(dataset_name="${..test.dataset.names}", tasks=("bbox",)),
)

optimizer = L(clipped_sgd)(
    params=get_config("common/optim.py").SGD.params,
    lr=0.02,
    momentum=0.9,
    weight_decay=1e-4,
    clip_value=5.0,
)
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01], milestones=[450, 560], num_updates=MAX_ITER
    ),
    warmup_length=100 / MAX_ITER,
    warmup_factor=0.001,
)
train = get_config("common/train.py").train
train.update(
    init_checkpoint="",
    max_iter=MAX_ITER,
    eval_period=200,
    checkpointer=dict(period=100000, max_to_keep=1),
    device="cpu",
    # bfloat16 where the CPU has it natively, float32 elsewhere, as demo_R18_cpu.yaml.
    amp=dict(enabled=True, precision="auto"),
    output_dir="./output/demo_lazy",
    seed=0,
)
