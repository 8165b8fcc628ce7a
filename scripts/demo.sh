#!/usr/bin/env bash
# `make demo`: the main job on the embedded default — the random-weight `tiny` model — on real
# MultiPL-E problems for two languages, with one tiny adapter per method trained first.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
RUN_ID=${RUN_ID:-demo}
LANGS=${DEMO_LANGS:-py pl}
LIMIT=${DEMO_LIMIT:-20}
SAMPLES=${DEMO_SAMPLES:-5}
DATASET=${DATASET:-../shared/multipl-e/humaneval}

dataset_args=()
if [ -d "$DATASET" ]; then
  dataset_args=(--dataset "$DATASET")
else
  echo "demo: $DATASET not found; loading MultiPL-E from the Hugging Face hub" >&2
fi
lang_args=()
for lang in $LANGS; do lang_args+=(--lang "$lang"); done

echo "demo: the tiny model has RANDOM weights, so it scores about zero; the point is the pipeline."

adapter_args=()
if [ "${DEMO_TRAIN:-1}" = 1 ]; then
  # One process trains all three adapters with mixed batches (each example routed to its
  # own adapter). Perl is a paper language whose sources every Debian machine has. The
  # learning rates are higher than the paper's because tiny's random logits are flat
  # (docs/training.md).
  names=(pl-r1-flora pl-r1-lora pl-ia3)
  if [ ! -f "adapters/pl-ia3/adapter_config.json" ]; then
    "$BIN/flora-eval" train --model tiny --method flora --method lora --method ia3 --rank 1 \
      --lang pl --data "${DEMO_CORPUS:-/usr/share/perl}" --steps "${DEMO_TRAIN_STEPS:-150}" \
      --seq-len 128 --lr flora=0.1 --lr lora=0.005 --lr ia3=0.2 --threads 1 --out adapters
  fi
  for name in "${names[@]}"; do adapter_args+=(--adapter "$name"); done
fi

"$BIN/flora-eval" --model tiny "${adapter_args[@]}" "${lang_args[@]}" "${dataset_args[@]}" \
  --limit "$LIMIT" -n "$SAMPLES" --max-tokens "${DEMO_MAX_TOKENS:-96}" --run-id "$RUN_ID"
echo "demo: done. The run is in results/$RUN_ID (manifest.json, table.md, report.html)."
