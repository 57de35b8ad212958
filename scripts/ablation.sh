#!/usr/bin/env bash
# The LARA ablation at one budget: the same encoded data, steps and seed for every variant,
# on a small LM (128 wide, 4 blocks, 2 s crops) so that all of them fit in minutes on a CPU.
# Variants: cross-entropy only; CE + LARA at lambda 0.25 / 0.5 / 1 on block 2, and on blocks
# 1 and 3 at lambda 0.5; the paper's text-prompting baseline (emotion words, no AV encoder).
# Then one `eval audio` over all of them. Resumable: rerun to continue where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-300}
AUDIO=${AUDIO:-runs/audio}
OUT=${OUT:-runs/ablation}
M=.venv/bin/moodlane
common=(--audio "$AUDIO" --steps "$STEPS" --batch-size 8 --dim 128 --layers 4 --context 150 --lr 1e-3 --resume)
run() { local name=$1; shift; "$M" train audio "${common[@]}" --out "$OUT/$name" --export "$OUT/$name/lm" "$@" > "$OUT/$name.json"; }
mkdir -p "$OUT"
run ce --lara-weight 0
run lara --lara-weight 0.5 --lara-layer 2
run lara_w0.25 --lara-weight 0.25 --lara-layer 2
run lara_w1 --lara-weight 1.0 --lara-layer 2
run lara_l1 --lara-weight 0.5 --lara-layer 1
run lara_l3 --lara-weight 0.5 --lara-layer 3
run text --lara-weight 0 --emotion text
lms=()
for n in ce lara lara_w0.25 lara_w1 lara_l1 lara_l3 text; do lms+=(--lm "$n=$OUT/$n/lm"); done
"$M" eval audio --audio "$AUDIO" --out "$OUT/eval" --grid 3 --seconds 8 --ramp-seconds 24 --clips 24 --no-symbolic "${lms[@]}" > "$OUT/eval.json"
echo "ablation: $OUT/eval/results.json"
