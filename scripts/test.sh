#!/usr/bin/env bash
# The one test command: README's and .ci/run's. Lint and format checks first, then the test suite.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export DS_ACCELERATOR=cpu HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python -m ruff check .
python -m ruff format --check .
python -m pytest -q "$@"
