# The dense regime of issue 27 (make_datasets.py): configs/demo_R18_cpu.yaml (R18-FPN from
# scratch, 600 iterations of 4 images, SGD lr 0.02) on 200 crowded shapes images, 3 seeds each of
# the paper default and v2 (configs/*_v2.yaml's keys: ATSS, P6 from P5, GIoU, quality focal loss).
# Needs datasets/shapes_dense/ (python experiment_records/shapes_dense_regime/make_datasets.py).
# Other variants: VARIANTS="--variant NAME KEY=VALUE ..."; extra arguments go to tools/ablate.py
# (e.g. --report, --dry-run).
cd "$(dirname "$0")/../.."
R=$(pwd)/datasets/shapes_dense
V2="MODEL.BACKBONE.NAME=build_focal_retinanet_resnet_fpn_backbone MODEL.FOCAL_RETINANET.ANCHOR_ASSIGNER=ATSS MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE=p5 MODEL.FOCAL_RETINANET.CLASSIFICATION_LOSS=QualityFocalLoss MODEL.RETINANET.BBOX_REG_LOSS_TYPE=giou"
SEEDS=${SEEDS:-3}
VARIANTS=${VARIANTS:-"--variant v2 $V2"}
.venv/bin/python tools/ablate.py --config-file configs/demo_R18_cpu.yaml --seeds $SEEDS --jobs 2 \
  --output experiment_records/shapes_dense_regime $VARIANTS "$@" \
  DATASETS.REGISTER.COCO "[['shapes_dense_train', '$R/train/annotations.json', '$R/train'], ['shapes_dense_val', '$R/val/annotations.json', '$R/val']]" \
  DATASETS.TRAIN "('shapes_dense_train',)" DATASETS.TEST "('shapes_dense_val',)" TEST.EVAL_PERIOD 0
