#!/bin/bash
# The GPU session behind docs/speed.md, docs/accuracy.md and docs/ablations.md (2026-11-28, one
# NVIDIA H200 lent to the project for 15 minutes, 16 CPU cores, torch 2.11.0+cu130, Python 3.12,
# no package index). Run from the repository root there, with ./.devpkgs prepared here first:
#   .devpkgs/site/  detectron2 (sal-detectron2 0.7.2 without its _C extension), fvcore, iopath,
#                   yacs, omegaconf, antlr4, termcolor, hydra copied from .venv's site-packages
#   .devpkgs/whl/   pycocotools-2.0.11 cp312 manylinux wheel (pip download --python-version 3.12)
# Benchmarks first (alone on the GPU), then the option comparison (issue 8) and the paper's
# Table-1 grid (issue 11) as three parallel sweeps (12 runs at once), stopped at DEADLINE seconds;
# everything but checkpoints is tarred into $OUT/results.tgz. Re-running resumes the sweeps.
export PYTHONUNBUFFERED=1
T0=$(date +%s); DEADLINE=${DEADLINE:-520}
R=/tmp/results; mkdir -p $R/bench
el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
finish() { el "tarring"; tar czf $OUT/results.tgz --exclude='*.pth' --exclude='*.pkl' --exclude='events.out*' -C /tmp results; ls -la $OUT; }
trap finish EXIT
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .devpkgs/whl/*.whl || exit 1
export PYTHONPATH=$PWD/.devpkgs/site:/tmp/site:$PWD DETECTRON2_DATASETS=/tmp/datasets
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $R/gpu.txt
nproc | tee -a $R/gpu.txt
python3 -c "import torch, numpy, detectron2, retina_plugin; print('torch', torch.__version__, 'numpy', numpy.__version__, torch.cuda.get_device_name())" 2>&1 | tee -a $R/gpu.txt || exit 1
python3 tools/generate_shapes.py > $R/generate.log 2>&1 || { tail -20 $R/generate.log; exit 1; }
el "data ready"

if [ -z "$SKIP_BENCH" ]; then
for spec in "r800:--size 800 1216" "r800_amp:--size 800 1216 --amp" "r512:--size 512 512"; do
  name=${spec%%:*}; args=${spec#*:}
  timeout 150 python3 tools/benchmark.py --device cuda $args --repeats 30 --train-repeats 10 \
     --json $R/bench/$name.json > $R/bench/$name.md 2> $R/bench/$name.log
  el "bench $name rc=$?"; cat $R/bench/$name.md; tail -3 $R/bench/$name.log
done
fi

COMMON="MODEL.DEVICE cuda TEST.EVAL_PERIOD 0"
left=$(( DEADLINE - ($(date +%s) - T0) ))
el "sweeps with $left s left"
timeout $left python3 tools/ablate.py --config-file configs/demo_R18_cpu.yaml --seeds 3 --jobs 6 --output $R/accuracy \
  --variant v2 MODEL.FOCAL_RETINANET.ANCHOR_ASSIGNER=ATSS MODEL.BACKBONE.NAME=build_focal_retinanet_resnet_fpn_backbone MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE=p5 SOLVER.OPTIMIZER=AdamW SOLVER.BASE_LR=0.001 SOLVER.WEIGHT_DECAY=0.05 \
  --variant v2_giou MODEL.FOCAL_RETINANET.ANCHOR_ASSIGNER=ATSS MODEL.BACKBONE.NAME=build_focal_retinanet_resnet_fpn_backbone MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE=p5 SOLVER.OPTIMIZER=AdamW SOLVER.BASE_LR=0.001 SOLVER.WEIGHT_DECAY=0.05 MODEL.RETINANET.BBOX_REG_LOSS_TYPE=giou \
  --variant atss MODEL.FOCAL_RETINANET.ANCHOR_ASSIGNER=ATSS \
  --variant p6_from_p5 MODEL.BACKBONE.NAME=build_focal_retinanet_resnet_fpn_backbone MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE=p5 \
  --variant adamw SOLVER.OPTIMIZER=AdamW SOLVER.BASE_LR=0.001 SOLVER.WEIGHT_DECAY=0.05 \
  --variant giou MODEL.RETINANET.BBOX_REG_LOSS_TYPE=giou \
  $COMMON > $R/accuracy.log 2>&1 &
timeout $left python3 tools/ablate.py --config-file configs/demo_R18_cpu.yaml --output $R/grid --jobs 4 \
  --grid MODEL.RETINANET.FOCAL_LOSS_GAMMA=0,0.5,1,2,5 MODEL.RETINANET.FOCAL_LOSS_ALPHA=.25,.5,.75 \
  $COMMON > $R/grid.log 2>&1 &
timeout $left python3 tools/ablate.py --config-file configs/demo_R18_cpu.yaml --output $R/paper --jobs 2 \
  --variant OHEM_1to3 MODEL.FOCAL_RETINANET.CLASSIFICATION_LOSS=OHEMLoss \
  --variant OHEM_no_ratio MODEL.FOCAL_RETINANET.CLASSIFICATION_LOSS=OHEMLoss MODEL.FOCAL_RETINANET.OHEM.NEG_POS_RATIO=0 \
  --variant CE_no_prior MODEL.RETINANET.FOCAL_LOSS_GAMMA=0 MODEL.RETINANET.FOCAL_LOSS_ALPHA=0.75 MODEL.RETINANET.PRIOR_PROB=0.5 \
  --variant FL_amp SOLVER.AMP.ENABLED=True \
  $COMMON > $R/paper.log 2>&1 &
while [ $(jobs -r | wc -l) -gt 0 ]; do sleep 30; el "$(grep -h 'ETA' $R/accuracy.log $R/grid.log $R/paper.log | wc -l) runs done; $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader)"; done
el "sweeps ended"
for s in accuracy grid paper; do echo "== $s"; tail -25 $R/$s.log; done
