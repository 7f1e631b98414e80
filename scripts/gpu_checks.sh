#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run: the `gpu` tests (pytest -m gpu) and the generator benchmark with
# both sides on the GPU. Logs and the benchmark's JSON go to the folder given (default outputs/gpu_checks).
#   bash scripts/gpu_checks.sh [OUT_DIR] [extra pytest arguments...]
# Needs the project installed with a CUDA build of torch (scripts/install.sh says how); xformers is optional
# (its comparison test is skipped without it). The tests never download anything. PYTHON picks the interpreter.
set -uo pipefail
out=""
case "${1:-}" in -*|"") ;; *) out=$1; shift ;; esac  # a leading pytest option (-k ...) is not the folder
case "$out" in ""|/*) ;; *) out="$PWD/$out" ;; esac  # a folder you name is read from where you are
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's packages for bench/, not another clone's
out="${out:-outputs/gpu_checks}"
mkdir -p "$out" 2>/dev/null || { echo "error: cannot create the output folder $out" >&2; exit 2; }
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
py="${PYTHON:-python}"  # PYTHON=python3 where there is no `python`
"$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'error: CUDA is not available to torch ' + torch.__version__)" || exit 2
nvidia-smi -L 2>/dev/null | tee "$out/gpu.txt"
"$py" -m pytest -m gpu -o addopts="-p no:cacheprovider" -v -rs tests/gpu tests/unit/test_text_encoders.py "$@" 2>&1 \
  | tee "$out/pytest_gpu.log"
tests=$?
"$py" bench/generator_bench.py --device cuda --json "$out/generator_bench_cuda.json" 2>&1 | tee "$out/generator_bench_cuda.log"
bench=$?
echo "gpu tests rc=$tests, generator benchmark rc=$bench; logs in $out"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
