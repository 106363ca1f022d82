#!/usr/bin/env bash
# The main job, from a fresh clone: set up .venv/, build the built-in dataset, train on the CPU
# (COCOEvaluator AP table printed), draw the detections on held-out images, plot the training
# curves, and say where everything is.
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
  shapes) CONFIG=configs/demo_R18_cpu.yaml; DATASET=retina_shapes; NAME=demo ;;
  reef)   CONFIG=configs/reef_R18_cpu.yaml; DATASET=retina_reef; NAME=reef ;;
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

echo "== 1/4 dataset ($DATASET)"
$PY tools/build_datasets.py "$DATASET"
echo "== 2/4 train + evaluate ($CONFIG)"
$PY train_net.py --config-file "$CONFIG" OUTPUT_DIR "$OUT" "$@"
echo "== 3/4 predict on held-out images"
if [ "$DATA" = shapes ]; then HELD_OUT="$DETECTRON2_DATASETS/retina_shapes/test"; else HELD_OUT="$DETECTRON2_DATASETS/retina_reef/val"; fi
$PY demo.py --config-file "$CONFIG" --input "$HELD_OUT" \
  --output "$OUT/predictions" --confidence-threshold 0.5 --scale 2 \
  --opts OUTPUT_DIR "$OUT" MODEL.WEIGHTS "$OUT/model_final.pth"
echo "== 4/4 training curves"
$PY tools/plot_metrics.py "$OUT/metrics.json" --output "$OUT/metrics.png"

cat <<SUMMARY

Done in $(( $(date +%s) - start )) s.
  model:        $OUT/model_final.pth
  log, config:  $OUT/log.txt, $OUT/config.yaml
  evaluation:   $OUT/inference/ (COCO json of the detections)
  pictures:     $OUT/predictions/*.png
  curves:       $OUT/metrics.png (from $OUT/metrics.json)
  dataset:      $DETECTRON2_DATASETS/$DATASET/
SUMMARY
