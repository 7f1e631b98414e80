#!/usr/bin/env bash
# Installs tokvid and its test tools into the current Python.
# CPU machines get the pinned CPU wheel of torch first, so nothing pulls a multi-GB CUDA build.
# GPU users: install your CUDA build of torch before running this (or set TOKVID_KEEP_TORCH=1).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${TOKVID_KEEP_TORCH:-}" ] && ! python -c "import torch" >/dev/null 2>&1; then
  python -m pip install --quiet "torch==2.13.0"
fi
python -m pip install --quiet -e ".[dev]"
