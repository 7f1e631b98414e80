#!/usr/bin/env bash
# Installs tokvid and its test tools into the current Python.
# Without torch it installs the pinned torch==2.13.0 first, from the package index pip is configured with
# (on Linux x86_64 PyPI serves the CUDA build; TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu gets the
# smaller CPU wheel). GPU users: install your CUDA build of torch before running this (or set TOKVID_KEEP_TORCH=1).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${TOKVID_KEEP_TORCH:-}" ] && ! python -c "import torch" >/dev/null 2>&1; then
  python -m pip install --quiet "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
python -m pip install --quiet -e ".[dev]"
