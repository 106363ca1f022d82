# The one-class regime with detectron2's default warm-up (SOLVER.WARMUP_ITERS 1000) kept beside the
# lr steps at 770/930, as a recipe that does not set WARMUP_ITERS gets: detectron2 then ramps
# to the decayed rate (at most 0.01 x BASE_LR), see retina_plugin/training/schedule.py.
cd "$(dirname "$0")/../.."
R=$(pwd)/datasets
.venv/bin/python tools/ablate.py --config-file configs/reef_small_R18_cpu.yaml --seeds 1 --jobs 2 --no-base \
  --output experiment_records/reef_one_class_regime \
  --variant sgd_warmup1000 SOLVER.BASE_LR=0.01 SOLVER.WARMUP_ITERS=1000 \
  --variant adamw_warmup1000 SOLVER.OPTIMIZER=AdamW SOLVER.BASE_LR=0.001 SOLVER.WEIGHT_DECAY=0.05 SOLVER.WARMUP_ITERS=1000 \
  DATASETS.REGISTER.COCO "[['reef_one_class_train_third', '$R/reef_one_class/train_third.json', '$R/retina_reef/train'], ['reef_one_class_val', '$R/reef_one_class/val.json', '$R/retina_reef/val']]" \
  DATASETS.TRAIN "('reef_one_class_train_third',)" DATASETS.TEST "('reef_one_class_val',)" MODEL.RETINANET.NUM_CLASSES 1 \
  INPUT.MIN_SIZE_TRAIN "(320, 352, 384, 416, 448)" INPUT.MAX_SIZE_TRAIN 448 INPUT.MIN_SIZE_TEST 400 INPUT.MAX_SIZE_TEST 400 \
  SOLVER.CLIP_GRADIENTS.CLIP_TYPE value SOLVER.CLIP_GRADIENTS.CLIP_VALUE 1.0 TEST.EVAL_PERIOD 0
