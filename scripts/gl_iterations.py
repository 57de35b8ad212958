"""How many Griffin-Lim iterations the spectral codec's decode needs: held-out piano renders
through the shipped codec at the LM's bandwidth, decoded at each iteration count, scored by
a transcription against the source MIDI (note F1) and by spectral convergence (how far the
decoded audio's |STFT| is from the magnitude the network asked for: phase inconsistency).

    .venv/bin/python scripts/gl_iterations.py --audio runs/audio --data ../shared/data --clips 6

Needs the `[eval]` witnesses (Basic Pitch) and EMOPIA's MIDI; prints one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from moodlane.engine.audio.codec import load_codec
from moodlane.engine.audio.spectral import stft_magnitude
from moodlane.engine.symbolic.notes import parse_midi
from moodlane.engine.training.audio_data import notes_seconds
from moodlane.engine.training.audio_eval import read_audio, to_rate
from moodlane.engine.training.witness import note_f1, transcriber


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--audio", required=True, help="moodlane data render's folder (manifest.jsonl)")
    ap.add_argument("--data", required=True, help="the MIDI sets' folder (emopia/midis)")
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--iters", default="32,24,16,8")
    args = ap.parse_args()
    torch.set_num_threads(1)
    codec = load_codec("engine/weights/codec_spectral")
    base, sr = codec.cfg, codec.sample_rate
    iters = [int(i) for i in args.iters.split(",")]
    rows = [json.loads(line) for line in open(Path(args.audio) / "manifest.jsonl")]
    clips = [r for r in rows if r["source"] == "emopia" and r["split"] != "train" and r["instrument"] == "acoustic piano"][: args.clips]
    tr = transcriber()
    per: dict[str, dict] = {}
    for r in clips:
        pcm, rate = read_audio(Path(args.audio) / r["path"])
        pcm = to_rate(pcm, rate, sr, r["path"], print)[: int(args.seconds * sr)]
        midi = Path(args.data) / "emopia" / "midis" / (r["id"].split("/")[1] + ".mid")
        ref = notes_seconds(parse_midi(midi.read_bytes())).window(0, args.seconds)
        codes = codec.encode(pcm)
        with torch.inference_mode():
            target = torch.exp(codec.model.decode_logmag(codes))
        row = {"render_f1": note_f1(ref, tr(pcm, sr))["f1"]}
        for it in iters:
            codec.cfg = dataclasses.replace(base, gl_iters=it)
            t = time.perf_counter()
            y = codec.decode(codes, length=len(pcm))[0]
            row[f"decode_s_{it}"] = round(time.perf_counter() - t, 3)
            mag = stft_magnitude(torch.from_numpy(y)[None], base)
            n = min(mag.shape[-1], target.shape[-1])
            mag, want = mag[..., :n], target[..., :n]
            row[f"f1_{it}"] = note_f1(ref, tr(y, sr))["f1"]
            row[f"convergence_{it}"] = round(float(torch.linalg.norm(mag - want) / torch.linalg.norm(want)), 4)
        per[r["id"]] = row
    mean = {k: round(float(np.mean([v[k] for v in per.values()])), 4) for k in next(iter(per.values()))}
    print(json.dumps({"codec": codec.label, "clips": len(per), "seconds": args.seconds, "mean": mean, "per_clip": per}, indent=1))


if __name__ == "__main__":
    main()
