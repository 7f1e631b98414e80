#!/usr/bin/env bash
# The one test command: README's and .ci/run's. Lint and format checks first, then the test suite.
# Extra arguments go to pytest. Two workers (pytest-xdist), one thread each, for CI's 2 cores (tests/conftest.py);
# `bash scripts/test.sh -n 0` runs in one process, `-n 8` on eight workers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export DS_ACCELERATOR=cpu HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python -m ruff check .
python -m ruff format --check .
python -m pytest -q -n 2 --dist worksteal "$@"
