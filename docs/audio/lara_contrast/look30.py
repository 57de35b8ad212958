"""One-off look: held-out real piano renders (one per EMOPIA quadrant) beside LMs' corners at
seed 7 ("solo acoustic piano", 10 s, ONNX): spectrogram (0-4 kHz) with Basic Pitch's notes.

    look30.py OUT NAME=STEM[@CFG] ...   (CFG: full guidance, default the generator's)"""

import json
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import soundfile as sf

from moodlane.engine.training.witness import transcriber

out = Path(sys.argv[1])
lms = dict(a.split("=", 1) for a in sys.argv[2:])
out.mkdir(parents=True, exist_ok=True)
corners = {"Q1 happy-excited": (0.8, 0.8), "Q2 sad-excited": (-0.8, 0.8), "Q3 sad-calm": (-0.8, -0.8), "Q4 happy-calm": (0.8, -0.8)}
rows = {}
recs = [json.loads(line) for line in open("runs/audio/manifest.jsonl")]
real = {}
for q in (1, 2, 3, 4):
    r = next(r for r in recs if r["split"] == "valid" and r["id"].startswith(f"emopia/Q{q}_") and r.get("instrument") == "acoustic piano")
    x, sr = sf.read(Path("runs/audio") / r["path"])
    real[q] = (x[: 10 * sr], sr, r["id"])
rows["real (held out)"] = [real[q] for q in (1, 2, 3, 4)]
for name, stem in lms.items():
    row = []
    stem, _, cfg = stem.partition("@")
    for label, (v, a) in corners.items():
        f = out / f"{name}_{label.split()[0]}.wav"
        if not f.exists():
            subprocess.run(
                [
                    ".venv/bin/moodlane",
                    "render",
                    "--engine",
                    "audio",
                    "--lm-checkpoint",
                    stem,
                    "--prompt",
                    "solo acoustic piano",
                    "--valence",
                    str(v),
                    "--arousal",
                    str(a),
                    "--seconds",
                    "10",
                    "--seed",
                    "7",
                    "--backend",
                    "onnx",
                    *(["--cfg", cfg] if cfg else []),
                    "-o",
                    str(f),
                ],
                check=True,
                capture_output=True,
            )
        x, sr = sf.read(f)
        row.append((x[: 10 * sr], sr, f.name))
    rows[name] = row
bp = transcriber()
fig, axes = plt.subplots(len(rows), 4, figsize=(18, 3.2 * len(rows)), squeeze=False)
summary = {}
for i, (name, row) in enumerate(rows.items()):
    for j, (x, sr, tag) in enumerate(row):
        ax = axes[i, j]
        n_fft, hop = 2048, 256
        win = np.hanning(n_fft)
        frames = np.lib.stride_tricks.sliding_window_view(np.pad(x, n_fft // 2), n_fft)[::hop] * win
        mag = 20 * np.log10(np.abs(np.fft.rfft(frames, axis=1)) + 1e-6)
        f = np.fft.rfftfreq(n_fft, 1 / sr)
        keep = f <= 4000
        ax.imshow(
            mag[:, keep].T,
            origin="lower",
            aspect="auto",
            extent=(0, len(x) / sr, 0, 4000),
            vmin=mag.max() - 80,
            vmax=mag.max(),
            cmap="magma",
        )
        notes = bp(x.astype(np.float32), sr)
        for on, off, hz in zip(notes.onset, notes.offset, notes.hz):
            if hz <= 4000:
                ax.plot([on, off], [hz, hz], color="cyan", lw=1.2)
        rms = float(np.sqrt(np.mean(x**2)))
        med = float(np.median(notes.midi)) if len(notes) else float("nan")
        summary[f"{name} / {list(corners)[j]}"] = {"notes": len(notes), "rms": round(rms, 4), "median_midi": med, "clip": tag}
        ax.set_title(f"{name}: {list(corners)[j]}\n{len(notes)} notes, RMS {rms:.3f}, median MIDI {med:.0f}", fontsize=9)
        ax.set_ylim(0, 2000)
        if j == 0:
            ax.set_ylabel("Hz")
fig.suptitle("Held-out real piano renders beside the LMs' corners at seed 7 (spectrogram, Basic Pitch notes in cyan)")
fig.tight_layout()
fig.savefig(out / "corners.png", dpi=80)
(out / "corners.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary, indent=1))
