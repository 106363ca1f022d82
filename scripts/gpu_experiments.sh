#!/bin/bash
# The prepared GPU session (one NVIDIA H200 lent for 15 minutes; run from the repository root
# there with the device tool). Nothing here has run yet on the current build.
#
# Prepare here first (the GPU machine reaches no package index):
#   .devpkgs/site/  detectron2 (sal-detectron2 0.7.2 without its _C extension), fvcore, iopath,
#                   yacs, omegaconf, antlr4, termcolor, hydra copied from .venv's site-packages
#   .devpkgs/whl/   cp312 manylinux wheels: pycocotools, onnx, onnxruntime, tensorrt-cu13 (and
#                   its tensorrt_cu13_libs / bindings), as the device README's pip download shows
#
# Stages, each bounded by a timeout, results tarred into $OUT/results.tgz:
#   1. engines (first): TensorRT fp32 / fp16 / int8 of R50-FPN at 800x1216 against eager fp32
#      and AMP: ms/img at batch 1, img/s at batch 16 (targets: fp16 <= 4 ms/img,
#      >= 1,000 img/s; int8 >= 1,800 img/s), the tests of tests/test_engines.py on CUDA;
#   2. the current build's GPU benchmark (docs/speed.md's GPU table);
#   3. bfloat16 against float16 and float32 (issue 30): the fast path's inference
#      (INFERENCE_DTYPE, float16 under autocast) and the training step (SOLVER.AMP autocast) of
#      R50-FPN at 800x1216, rows interleaved (docs/speed.md "bfloat16");
export PYTHONUNBUFFERED=1
T0=$(date +%s)
R=/tmp/results; mkdir -p $R
el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
finish() { el "tarring"; tar czf $OUT/results.tgz -C /tmp results; ls -la $OUT; }
trap finish EXIT
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .devpkgs/whl/*.whl || exit 1
export PYTHONPATH=$PWD/.devpkgs/site:/tmp/site:$PWD DETECTRON2_DATASETS=/tmp/datasets
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $R/gpu.txt
python3 -c "import torch, tensorrt, retina_plugin; print('torch', torch.__version__, 'tensorrt', tensorrt.__version__, torch.cuda.get_device_name())" 2>&1 | tee -a $R/gpu.txt || exit 1

el "1/3 engines"
timeout 300 python3 tools/benchmark.py --device cuda --engines-only --size 800 1216 --repeats 30 \
  --throughput-batch 16 --throughput-repeats 10 --no-model-memory --json $R/engines.json \
  > $R/engines.md 2> $R/engines.log; el "engines rc=$?"; cat $R/engines.md; tail -5 $R/engines.log
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_engines.py -k tensorrt > $R/engine_tests.log 2>&1
el "engine tests rc=$?"; tail -3 $R/engine_tests.log

el "2/3 GPU benchmark of this build"
for spec in "r800:--size 800 1216" "r800_amp:--size 800 1216 --amp"; do
  name=${spec%%:*}; args=${spec#*:}
  timeout 150 python3 tools/benchmark.py --device cuda $args --repeats 30 --train-repeats 10 \
     --json $R/$name.json > $R/$name.md 2> $R/$name.log
  el "bench $name rc=$?"; cat $R/$name.md
done

el "3/3 bfloat16 against float16 and float32"
timeout 150 python3 tools/benchmark.py --device cuda --size 800 1216 --repeats 30 --train-repeats 10 \
  --precisions float32 float16 bfloat16 --json $R/precisions.json > $R/precisions.md 2> $R/precisions.log
el "precisions rc=$?"; cat $R/precisions.md
