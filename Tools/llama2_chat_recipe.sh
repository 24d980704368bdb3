#!/usr/bin/env bash
# The Llama 2-Chat recipe end to end on the default model (docs/TRAINING.md, "The whole recipe"):
#   default model → (SFT) → reward model → rejection sampling → PPO → Ghost Attention,
# each stage measured on the same held-out prompts against the model before it.
#
#   Tools/llama2_chat_recipe.sh [OUT]          # the documented run (about 3 hours on 2 cores)
#   SMOKE=1 Tools/llama2_chat_recipe.sh OUT    # every stage on a few examples (minutes): checks the chain
#
# Environment: LLAMA (the binary; default .build/release/llama), DATA (the HH-RLHF harmless-base
# file; default ../shared/data/chat/hh-rlhf/harmless-base-2000.jsonl), SFT_DATA (chat examples for
# an SFT stage first: the default model is SmolLM2-135M-Instruct, already fine-tuned by its makers,
# so the stage is skipped unless given), THREADS (default 2).
# Each stage is skipped when its output exists, so a stopped run continues where it was.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-recipe}
LLAMA=${LLAMA:-$here/.build/release/llama}
DATA=${DATA:-$here/../shared/data/chat/hh-rlhf/harmless-base-2000.jsonl}
T=${THREADS:-2}
[ -x "$LLAMA" ] || { echo "no llama binary at $LLAMA (swift build -c release)" >&2; exit 1; }
[ -f "$DATA" ] || { echo "no HH-RLHF prompts at $DATA (set DATA)" >&2; exit 1; }
LLAMA=$(realpath "$LLAMA"); DATA=$(realpath "$DATA")
[ -z "${SFT_DATA:-}" ] || SFT_DATA=$(realpath "$SFT_DATA")
mkdir -p "$OUT"
cd "$OUT"
log() { echo "$(date +%T) $*" | tee -a times.txt >&2; }

# Sizes: the documented run, or a few examples per stage.
if [ "${SMOKE:-0}" = 1 ]; then
    RM_EPOCHS=1; RS_PROMPTS=6; EVAL_PROMPTS=6; PPO_ITERS=2; PPO_BATCH=4; PPO_HELD=4
    GATT_DIALOGUES=8; GATT_EVAL=4; SFT_STEPS=(--steps 2); N=32; SEQ=128
    RS_SMOKE=(--keep-unfinished)  # few answers end within 32 tokens; the chain still needs data to train on
else
    RM_EPOCHS=2; RS_PROMPTS=160; EVAL_PROMPTS=100; PPO_ITERS=30; PPO_BATCH=16; PPO_HELD=32
    GATT_DIALOGUES=120; GATT_EVAL=80; SFT_STEPS=(); N=192; SEQ=256
    RS_SMOKE=()
fi
RM_DATA=$DATA
if [ "${SMOKE:-0}" = 1 ]; then RM_DATA=pairs-smoke.jsonl; head -60 "$DATA" > "$RM_DATA"; fi
EVAL=(--prompts "$DATA" --skip 1800 --limit "$EVAL_PROMPTS" -k 2 --seed 9 --no-train -n "$N" --max-prompt 320
      --reward rm/hf --reward-seq 192 -t "$T")

# 0. The default model in Float32 (training and sampling run in Float32; like for like).
[ -f base-f32.gguf ] || { log "convert"; "$LLAMA" convert --output base-f32.gguf --type f32 -t "$T"; }
policy=base-f32.gguf

# 1. SFT (optional: the default model is already an instruction-tuned chat model).
if [ -n "${SFT_DATA:-}" ]; then
    [ -f sft/model.gguf ] || { log "sft"; "$LLAMA" sft -m "$policy" --data "$SFT_DATA" --out sft --seq 256 --batch 4 \
        --lora-rank 16 --lora-targets all --lr 2e-4 ${SFT_STEPS[@]+"${SFT_STEPS[@]}"} -t "$T"; }
    policy=sft/model.gguf
fi

# 2. The reward model: ranking loss with margins on HH-RLHF preference pairs, upper 6 layers trained.
[ -f rm/hf/config.json ] || { log "reward model"; "$LLAMA" reward train -m "$policy" --data "$RM_DATA" --out rm \
    --seq 192 --batch 4 --accumulate 4 --validation 0.15 --lr 1e-4 --freeze 24 --epochs "$RM_EPOCHS" --eval-every 50 -t "$T"; }

# The starting point, measured.
[ -f eval-0/summary.json ] || { log "eval start"; "$LLAMA" rejection-sample -m "$policy" "${EVAL[@]}" --out eval-0; }

# 3. Rejection sampling: K = 4 answers per prompt, the best that ended kept, LoRA SFT on them.
[ -f rs/sft/model.gguf ] || { log "rejection sampling"; "$LLAMA" rejection-sample -m "$policy" --prompts "$DATA" \
    --limit "$RS_PROMPTS" -k 4 --seed 1 -n "$N" --max-prompt 320 --reward rm/hf --reward-seq 192 --out rs ${RS_SMOKE[@]+"${RS_SMOKE[@]}"} \
    --epochs 2 --lr 3e-4 --seq "$SEQ" --batch 4 --lora-rank 16 --lora-targets all -t "$T"; }
[ -f eval-rs/summary.json ] || { log "eval rs"; "$LLAMA" rejection-sample -m rs/sft/model.gguf "${EVAL[@]}" --out eval-rs \
    --baseline eval-0/samples.jsonl; }

# 4. PPO from the rejection-sampling model, on prompts the earlier stages did not use.
[ -f ppo/model.gguf ] || { log "ppo"; "$LLAMA" ppo -m rs/sft/model.gguf --prompts "$DATA" --skip 200 --reward rm/hf \
    --reward-seq 192 --missing-eos-penalty 1 --held-out "$DATA" --held-out-skip 1800 --held-out-limit "$PPO_HELD" --eval-every 10 \
    --iterations "$PPO_ITERS" --batch "$PPO_BATCH" --mini-batch 4 --lr 3e-4 --kl 0.2 -n 128 --max-prompt 256 --seed 1 \
    --out ppo -t "$T"; }
[ -f eval-ppo/summary.json ] || { log "eval ppo"; "$LLAMA" rejection-sample -m ppo/model.gguf "${EVAL[@]}" --out eval-ppo \
    --baseline eval-rs/samples.jsonl; }

# 5. Ghost Attention on the PPO model, with adherence before and after; --repair rewrites an answer
#    to keep a rule the model did not keep in any of its 8 tries (docs/TRAINING.md, Ghost Attention).
[ -f gatt/sft/model.gguf ] || { log "gatt"; "$LLAMA" gatt -m ppo/model.gguf --dialogues "$DATA" --skip 600 \
    --limit "$GATT_DIALOGUES" --turns 4 -k 8 -n 96 --seed 1 --repair --out gatt --epochs 2 --lr 3e-4 --seq $((2 * SEQ)) --batch 4 \
    --lora-rank 16 --lora-targets all -t "$T"; }
for m in ppo gatt; do
    model=$([ $m = ppo ] && echo ppo/model.gguf || echo gatt/sft/model.gguf)
    [ -f eval-gatt-$m/adherence.json ] || { log "gatt eval $m"; "$LLAMA" gatt --eval -m "$model" --dialogues "$DATA" \
        --skip 1500 --limit "$GATT_EVAL" --turns 5 -n 96 --seed 5 --out eval-gatt-$m -t "$T"; }
done
log "done"
echo "figures: eval-*/summary.json (reward on held-out prompts; difference_from_baseline is each stage against the one before)," \
     "ppo/log.jsonl (per iteration and held-out), eval-gatt-*/adherence.json" >&2
