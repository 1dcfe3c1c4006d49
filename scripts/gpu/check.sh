#!/usr/bin/env bash
# Run ON the GPU machine from the repository root, after scripts/gpu/prepare.sh here:
#   device run: bash scripts/gpu/check.sh      (carry: [".gpu"])
# Installs the carried wheels, finds bubblewrap, then runs the gpu-marked tests and measures one
# iteration of the 1-GPU preset with the HF sampler (benchmarks/bench_iteration.py). Everything
# it prints is also written under $OUT (or ./gpu-out).
set -uo pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
if ! command -v bwrap >/dev/null; then
  for f in .gpu/*.deb; do [ -e "$f" ] && dpkg -x "$f" /tmp/bw; done
  export PATH=/tmp/bw/usr/bin:$PATH LD_LIBRARY_PATH=/tmp/bw/usr/lib/x86_64-linux-gnu:/tmp/bw/lib/x86_64-linux-gnu
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, transformers, accelerate, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'peft', peft.__version__)"
  python3 -m leti exec --help >/dev/null && echo "leti imports"
  bwrap --version || echo "no bwrap: sandboxed tests will fail"
} 2>&1 | tee "$OUT/env.txt"
python3 -m pytest -q -m gpu tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.txt"
python3 benchmarks/bench_iteration.py configs/mbpp-codegen-350m-1gpu.yaml --architecture codegen-350m \
  --problems 8 2>&1 | tail -8 | tee "$OUT/bench_iteration_350m_hf.txt"
