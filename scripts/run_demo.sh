#!/usr/bin/env bash
# The main job, from a fresh clone: set up .venv/, build the built-in dataset, look at its boxes
# against the anchors, train on the CPU (COCOEvaluator AP table printed), say which errors cost
# the AP, draw the detections on held-out images, plot the training curves, and say where
# everything is. With --data reef it also predicts the whole val area (3072 x 1024 px) window by
# window and draws it.
#
#   bash scripts/run_demo.sh                      # synthetic "retina_shapes", ~6 min
#   bash scripts/run_demo.sh --data reef          # real coral-reef survey imagery, ~15-20 min
#   bash scripts/run_demo.sh SOLVER.MAX_ITER 100  # extra arguments: config overrides for training
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA=shapes
if [ "${1:-}" = "--data" ]; then
  DATA="${2:?--data needs shapes or reef}"
  shift 2
fi
case "$DATA" in
  shapes) CONFIG=configs/demo_R18_cpu.yaml; DATASET=retina_shapes; NAME=demo; TEST_SET=retina_shapes_val ;;
  reef)   CONFIG=configs/reef_R18_cpu.yaml; DATASET=retina_reef; NAME=reef; TEST_SET=retina_reef_val ;;
  *) echo "run_demo.sh: --data must be shapes or reef, not '$DATA'" >&2; exit 2 ;;
esac
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
# torch deprecation notices from fvcore/detectron2 internals, not actionable here.
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::FutureWarning}"
export DETECTRON2_DATASETS="${DETECTRON2_DATASETS:-$ROOT/datasets}"
OUT="${RETINA_DEMO_OUTPUT:-$ROOT/output/$NAME}"
PY=.venv/bin/python
start=$(date +%s)
STEPS=6
if [ "$DATA" = reef ]; then STEPS=7; fi

echo "== 1/$STEPS dataset ($DATASET)"
$PY tools/build_datasets.py "$DATASET"
echo "== 2/$STEPS its boxes against the anchors"
mkdir -p "$OUT"
$PY tools/analyze_dataset.py --config-file "$CONFIG" --plot "$OUT/boxes.png" "$@"
echo "== 3/$STEPS train + evaluate ($CONFIG)"
$PY train_net.py --config-file "$CONFIG" OUTPUT_DIR "$OUT" "$@"
echo "== 4/$STEPS what the AP was lost to"
$PY tools/analyze_errors.py --config-file "$CONFIG" --output "$OUT/errors" \
  --predictions "$OUT/inference/$TEST_SET/coco_instances_results.json" "$@"
echo "== 5/$STEPS predict on held-out images"
if [ "$DATA" = shapes ]; then HELD_OUT="$DETECTRON2_DATASETS/retina_shapes/test"; else HELD_OUT="$DETECTRON2_DATASETS/retina_reef/val"; fi
$PY demo.py --config-file "$CONFIG" --input "$HELD_OUT" \
  --output "$OUT/predictions" --confidence-threshold 0.5 --scale 2 \
  --opts OUTPUT_DIR "$OUT" MODEL.WEIGHTS "$OUT/model_final.pth"
echo "== 6/$STEPS training curves"
$PY tools/plot_metrics.py "$OUT/metrics.json" --output "$OUT/metrics.png"
LARGE=""
if [ "$DATA" = reef ]; then
  echo "== 7/$STEPS the whole val area as one image, predicted window by window"
  rm -rf "$OUT/whole_area"
  $PY tools/predict.py --config-file "$CONFIG" --input retina_reef_val_full --output "$OUT/whole_area" \
    --slice 512 512 --overlap 0.25 --draw --draw-threshold 0.4 MODEL.WEIGHTS "$OUT/model_final.pth"
  LARGE="  whole area:   $OUT/whole_area/drawn/ (sliced prediction, docs/prediction.md \"Large images\")"
fi

cat <<SUMMARY

Done in $(( $(date +%s) - start )) s.
  model:        $OUT/model_final.pth
  log, config:  $OUT/log.txt, $OUT/config.yaml
  evaluation:   $OUT/inference/ (COCO json of the detections)
  pictures:     $OUT/predictions/*.png
  curves:       $OUT/metrics.png (from $OUT/metrics.json)
  data, errors: $OUT/boxes.png (boxes against anchors), $OUT/errors/ (errors.md, pr_curves.png, gallery/)
  dataset:      $DETECTRON2_DATASETS/$DATASET/
$LARGE
SUMMARY
