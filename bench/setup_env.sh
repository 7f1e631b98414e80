#!/usr/bin/env bash
# Build .bench-venv/ at the repo root: the environment in which both sides of the
# side-by-side benchmarks (tokvid and its peers) run.
#
# Why a separate venv: magvit2-pytorch imports torchvision, and the torchvision that
# matches the project's torch 2.13.0 CPU wheel fails to import on CPU. torch 2.14.1 with
# torchvision 0.29.1 (a CUDA build, ~5.5 GB installed) imports fine on CPU, so both
# sides run there; the project's own install stays on torch 2.13.0 CPU.
#
# Idempotent: reruns only install what is missing. Usage: bash bench/setup_env.sh
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.bench-venv"
PY="${PYTHON:-python3}"

TORCH_PIN="torch==2.14.1"
TORCHVISION_PIN="torchvision==0.29.1"
MAGVIT2_PIN="magvit2-pytorch==0.5.1"
# The project's runtime deps that bench code needs; the rest of pyproject's list
# (deepspeed, transformers, video io) is not imported by the benchmarks.
OUR_DEPS=(einops safetensors pyyaml tqdm numpy)

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "[setup_env] creating $VENV"
    "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"

have() {  # have DIST VERSION -> 0 if DIST==VERSION is installed in the venv
    "$VPY" - "$1" "$2" <<'EOF'
import sys
from importlib.metadata import version, PackageNotFoundError
try:
    sys.exit(0 if version(sys.argv[1]).split("+")[0] == sys.argv[2] else 1)
except PackageNotFoundError:
    sys.exit(1)
EOF
}

if have torch 2.14.1 && have torchvision 0.29.1 && have magvit2-pytorch 0.5.1; then
    echo "[setup_env] torch/torchvision/magvit2-pytorch already installed"
else
    echo "[setup_env] installing $TORCH_PIN $TORCHVISION_PIN $MAGVIT2_PIN"
    "$VPY" -m pip install "$TORCH_PIN" "$TORCHVISION_PIN" "$MAGVIT2_PIN"
fi

# Our repo, editable, without letting its `torch>=2.4` or heavy deps touch the venv.
if have tokvid 0.1.0; then
    echo "[setup_env] tokvid already installed"
else
    echo "[setup_env] installing tokvid (editable, --no-deps) and ${OUR_DEPS[*]}"
    "$VPY" -m pip install "$TORCH_PIN" "${OUR_DEPS[@]}"
    "$VPY" -m pip install --no-deps -e "$REPO"
fi

# Fail loudly if anything moved torch off the pin, and prove the imports work on CPU.
"$VPY" - <<'EOF'
import warnings
warnings.filterwarnings("ignore")
import torch, torchvision
assert torch.__version__.split("+")[0] == "2.14.1", torch.__version__
from magvit2_pytorch import VideoTokenizer  # noqa: F401
print(f"[setup_env] ok: torch {torch.__version__}, torchvision {torchvision.__version__}, magvit2_pytorch imports")
try:  # the venv is complete either way (editable install); the repo itself may be mid-edit
    import tokenizer  # noqa: F401
    print("[setup_env] ok: tokvid's tokenizer imports")
except Exception as err:
    print(f"[setup_env] warning: tokvid's tokenizer does not import yet: {err!r}")
EOF
echo "[setup_env] run: .bench-venv/bin/python bench/tokenizer_throughput.py"
