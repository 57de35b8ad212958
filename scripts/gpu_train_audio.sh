#!/usr/bin/env bash
# Issue 17: train the LARA-Gen LM on a lent GPU machine (the device tool) from a pack carried
# with the call. That machine has torch with CUDA, numpy, safetensors and tqdm, reaches no
# package registry and has no MoodLane install, and a call carries 64 MiB. So:
#
#   here, once (CPU):
#     .venv/bin/moodlane data pack --out runs/audio --pack-out runs/audio_pack   # tokens, uint8 LARA targets, text states
#     echo /.whl/ >> "$(git rev-parse --git-path info/exclude)"
#     .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --platform manylinux_2_28_x86_64 -d .whl symusic==0.6.0 pySmartDL platformdirs
#     .venv/bin/python -m pip wheel --no-deps encodec==0.1.1 -w .whl   # a pure-Python wheel from its sdist
#   there (device run, carry runs/audio_pack and .whl, timeout_s 600):
#     MINUTES=7 WEIGHT="acoustic piano=3" PSEUDO=1 bash scripts/gpu_train_audio.sh
#   (PSEUDO=1: POP909 trains with its pseudo-labels, which the pack carries when
#   `moodlane data pseudo-label` ran before `data pack`)
#
# The checkout (about 45 MB of the call's 64 MiB) is imported through a folder of symlinks on
# PYTHONPATH (no install); symusic and encodec, the packages its imports need beyond that
# machine's (torch, numpy, scipy, scikit-learn, safetensors, tqdm, einops), install from the
# carried wheels, so the pack's budget (`--max-mb`, default 16) is what is left.
# `train audio --minutes` stops on time with the learning rate decayed over it, and the LM is
# written every 250 steps, so a call cut short still brings weights back. What comes back under
# $OUT: the LM (lm.safetensors + lm.json, its training record naming the device; over 15 MB the
# weights come back in parts), the log, nvidia-smi's line. Tested here on the CPU with a tiny config (tests/test_gpu_script.py):
#   DEVICE=cpu TINY=1 STEPS=3 PACK=... OUT=... bash scripts/gpu_train_audio.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out/gpu_train}"
PACK="${PACK:-runs/audio_pack}"
PY="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
mkdir -p "$OUT"
[ -f "$PACK/texts.npz" ] || { echo "gpu_train_audio: no pack at $PACK (moodlane data pack --pack-out $PACK)" >&2; exit 2; }
for pkg in symusic encodec; do
  "$PY" -c "import $pkg" 2>/dev/null || "$PY" -m pip install -q --no-index --no-deps --find-links .whl "$pkg" pySmartDL platformdirs
done
lib="$(mktemp -d)"
mkdir -p "$lib/moodlane"
for d in engine daw_bridge export presets; do ln -s "$PWD/$d" "$lib/moodlane/$d"; done
export PYTHONPATH="$lib${PYTHONPATH:+:$PYTHONPATH}"
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$OUT/gpu.txt" || true
fi
args=(train audio --audio "$PACK" --out "${RUN:-$(mktemp -d)}" --export "$OUT/lm" --device "$DEVICE"
  --steps "${STEPS:-100000}" --batch-size "${BATCH:-64}" --minutes "${MINUTES:-0}")
[ -n "${LR:-}" ] && args+=(--lr "$LR")
[ -n "${DIM:-}" ] && args+=(--dim "$DIM")
[ -n "${LAYERS:-}" ] && args+=(--layers "$LAYERS")
[ -n "${INIT:-}" ] && args+=(--init "$INIT")
[ -n "${WEIGHT:-}" ] && args+=(--instrument-weight "$WEIGHT")  # e.g. WEIGHT="acoustic piano=3"
[ -n "${PSEUDO:-}" ] && args+=(--pseudo-labels)
[ -n "${SEED:-}" ] && args+=(--seed "$SEED")
[ -n "${TINY:-}" ] && args+=(--tiny)
# tqdm's bar is carriage returns: keep the log readable by lines
"$PY" -m moodlane.daw_bridge.cli "${args[@]}" 2>&1 | tr '\r' '\n' | grep -v "^train audio LM:" >"$OUT/train.log" || {
  tail -n 30 "$OUT/train.log" >&2
  exit 1
}
# files come back at most 16 MiB each: a larger LM comes back in parts (cat lm.safetensors.part-* > lm.safetensors)
part="${SPLIT_BYTES:-15000000}"
if [ "$(stat -c %s "$OUT/lm.safetensors")" -gt "$part" ]; then
  split -b "$part" "$OUT/lm.safetensors" "$OUT/lm.safetensors.part-" && rm "$OUT/lm.safetensors"
fi
tail -n 40 "$OUT/train.log"
