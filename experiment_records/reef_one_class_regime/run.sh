# The one-class regime of issue 27: the reef's corals merged into one class on a third of the
# training tiles (make_datasets.py), flips and scales only, 125 epochs, with the tree crowns'
# input scale (train 320-448, test 400), SGD lr 0.01 and clipping by value at 1.0.
# Needs datasets/reef_one_class/ (python experiment_records/reef_one_class_regime/make_datasets.py).
# Seed 0 of sgd and adamw ran first (SEEDS=1 with both); then the paper default (sgd) and v2, 3 seeds.
# Other variants: VARIANTS="--variant NAME KEY=VALUE ..." (docs/accuracy.md); extra arguments go to
# tools/ablate.py (e.g. --report, --dry-run).
cd "$(dirname "$0")/../.."
R=$(pwd)/datasets
V2="MODEL.BACKBONE.NAME=build_focal_retinanet_resnet_fpn_backbone MODEL.FOCAL_RETINANET.ANCHOR_ASSIGNER=ATSS MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE=p5 MODEL.FOCAL_RETINANET.CLASSIFICATION_LOSS=QualityFocalLoss MODEL.RETINANET.BBOX_REG_LOSS_TYPE=giou SOLVER.OPTIMIZER=AdamW SOLVER.BASE_LR=0.001 SOLVER.WEIGHT_DECAY=0.05"
SEEDS=${SEEDS:-3}
VARIANTS=${VARIANTS:-"--variant sgd SOLVER.BASE_LR=0.01 --variant v2 $V2"}
.venv/bin/python tools/ablate.py --config-file configs/reef_small_R18_cpu.yaml --seeds $SEEDS --jobs 2 --no-base \
  --output experiment_records/reef_one_class_regime $VARIANTS "$@" \
  DATASETS.REGISTER.COCO "[['reef_one_class_train_third', '$R/reef_one_class/train_third.json', '$R/retina_reef/train'], ['reef_one_class_val', '$R/reef_one_class/val.json', '$R/retina_reef/val']]" \
  DATASETS.TRAIN "('reef_one_class_train_third',)" DATASETS.TEST "('reef_one_class_val',)" MODEL.RETINANET.NUM_CLASSES 1 \
  INPUT.MIN_SIZE_TRAIN "(320, 352, 384, 416, 448)" INPUT.MAX_SIZE_TRAIN 448 INPUT.MIN_SIZE_TEST 400 INPUT.MAX_SIZE_TEST 400 \
  SOLVER.CLIP_GRADIENTS.CLIP_TYPE value SOLVER.CLIP_GRADIENTS.CLIP_VALUE 1.0 TEST.EVAL_PERIOD 0
