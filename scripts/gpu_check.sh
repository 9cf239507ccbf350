#!/usr/bin/env bash
# Everything that needs a GPU, in one call (a lent GPU is billed by the minute): the CUDA tests of the fused
# kernel, the token-mixer micro-benchmark, and the model benchmark in the issue's settings (batch 128, 224 px).
# Logs, JSON and the Figure-1 plot go to $OUT (or ./gpu_results). Usage: bash scripts/gpu_check.sh [quick]
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_results}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python -c "import torch, timm, triton; print('torch', torch.__version__, 'timm', timm.__version__, 'triton', triton.__version__)" | tee -a "$out/gpu.txt"

python -m pytest -q tests/test_ops.py tests/test_models.py tests/test_deploy.py 2>&1 | tee "$out/tests.log"
python -m inceptionnext.ops.bench --batch 128 --channels 96 --size 56 --dtype bf16 --layout nhwc 2>&1 | tee "$out/mixer.log"
python -m inceptionnext.ops.bench --batch 128 --channels 96 --size 56 --dtype fp32 --layout nchw 2>&1 | tee -a "$out/mixer.log"
[ "${1:-}" = quick ] && exit 0

models=inceptionnext_t,inception_next_tiny,convnext_tiny,resnet50,inceptionnext_a,inception_next_atto,convnext_atto
bench() {  # name, extra flags
  local name=$1; shift
  python scripts/benchmark.py --model "$models" --bench both --batch-size 128 --img-size 224 --interleave \
    --results-file "$out/$name.json" "$@" 2>&1 | tee "$out/$name.log"
}
bench bf16_cl --amp-dtype bfloat16 --channels-last --plot "$out/fig1_bf16_cl.png"
bench bf16_cl_compiled --amp-dtype bfloat16 --channels-last --torchcompile
bench fp32 --amp-dtype float32
bench fp32_cl --amp-dtype float32 --channels-last
