#!/usr/bin/env bash
# Run ON the GPU machine from the repository root, after scripts/gpu/prepare.sh here:
#   device run: bash scripts/gpu/check.sh      (carry: [".gpu"], timeout_s a little above BUDGET)
# Installs the carried wheels, finds bubblewrap, then runs the gpu-marked tests and measures one
# iteration of the 1-GPU preset with the HF sampler (benchmarks/bench_iteration.py). The lent
# machine's time is short (15 minutes a session, start included), so every step has a time limit
# inside BUDGET seconds (default 480) and writes its output under $OUT (or ./gpu-out) as it goes:
# a step cut short still leaves what it printed.
set -uo pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
BUDGET=${BUDGET:-480}
START=$(date +%s)

# step NAME LIMIT CMD...: CMD under min(LIMIT, time left - 10 s), its output in $OUT/NAME.txt
step() {
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET - ($(date +%s) - START) - 10 ))
  (( left < limit )) && limit=$left
  if (( limit < 15 )); then echo "== $name: not run (out of time)" | tee "$OUT/$name.txt" -a "$OUT/summary.txt"; return; fi
  echo "== $name (limit ${limit}s)"
  local t0; t0=$(date +%s)
  timeout -k 5 "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
  echo "== $name: exit ${PIPESTATUS[0]} after $(( $(date +%s) - t0 ))s" | tee -a "$OUT/$name.txt" "$OUT/summary.txt"
}

python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
if ! command -v bwrap >/dev/null; then
  for f in .gpu/*.deb; do [ -e "$f" ] && dpkg -x "$f" /tmp/bw; done
  mkdir -p /tmp/bw/bin
  # leti starts bwrap with a clean environment, so the libraries it was carried with are named
  # in a wrapper rather than in an exported LD_LIBRARY_PATH.
  printf '#!/bin/sh\nLD_LIBRARY_PATH=/tmp/bw/usr/lib/x86_64-linux-gnu:/tmp/bw/lib/x86_64-linux-gnu exec /tmp/bw/usr/bin/bwrap "$@"\n' > /tmp/bw/bin/bwrap
  chmod +x /tmp/bw/bin/bwrap
  export PATH=/tmp/bw/bin:$PATH
fi

env_report() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import sys, torch, transformers, accelerate, peft; print(sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'peft', peft.__version__)"
  python3 -c "import bitsandbytes, deepspeed; print('bitsandbytes', bitsandbytes.__version__, 'deepspeed', deepspeed.__version__)"
  python3 -c "from leti.execution.sandbox import resolve_sandbox; print('leti sandbox:', resolve_sandbox('bwrap'))"
}
step env 60 bash -c "$(declare -f env_report); env_report"
step gpu_tests 240 python3 -m pytest -q -p no:cacheprovider --durations=0 -m gpu tests/test_gpu.py
step bench_350m_hf 300 python3 benchmarks/bench_iteration.py configs/mbpp-codegen-350m-1gpu.yaml \
  --architecture codegen-350m --problems "${BENCH_PROBLEMS:-2}"  # 8 outlived 300 s on an H200
echo "total $(( $(date +%s) - START ))s" | tee -a "$OUT/summary.txt"
