#!/usr/bin/env bash
# Runs the whole test suite (unit, hostile sandbox programs, slow end-to-end) on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest -q --durations=15 "$@"
