#!/usr/bin/env bash
# Creates .venv and installs leti with its test tools. torch is installed first, pinned to the
# version CI tests, from pip's index: where a CPU wheel is on disk (CI) pip takes it; elsewhere point
# pip at PyTorch's CPU index first to avoid a multi-GB CUDA build. Users with GPUs install their own.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v bwrap >/dev/null 2>&1; then
  # bubblewrap is the sandbox for model-written programs; install it when we may.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq bubblewrap) >/dev/null 2>&1 || echo "warning: could not install bubblewrap" >&2
  else
    echo "warning: bubblewrap (bwrap) not found; install it (e.g. apt-get install bubblewrap) for the sandbox" >&2
  fi
fi
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/pip install -q "torch==${LETI_TORCH_VERSION:-2.13.0}"
.venv/bin/pip install -q -e ".[dev]"
