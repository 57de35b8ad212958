"""`moodlane bench symbolic`: generation and render speed, peak memory. Reports; never fails."""

from __future__ import annotations

import os
import resource
import time

import numpy as np
import torch

from engine.automation import EmotionCurve
from engine.emotion import Emotion
from engine.session import render


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_symbolic(args) -> dict:
    from daw_bridge.cli import load_generator
    from daw_bridge.synth import render_notes

    rss0 = _peak_rss_mb()
    gen = load_generator("symbolic", args.checkpoint)
    qpm = 120.0
    curve = EmotionCurve.constant(Emotion(0.3, 0.3))
    render(gen, curve, 2, seed=99, qpm=qpm)  # warm-up
    gen_s, syn_s, toks, notes_n = [], [], [], []
    for rep in range(args.repeats):
        t = time.perf_counter()
        notes, chunks = render(gen, curve, args.bars, seed=rep, qpm=qpm)
        gen_s.append(time.perf_counter() - t)
        toks.append(sum(len(c.tokens) for c in chunks))
        notes_n.append(len(notes))
        t = time.perf_counter()
        render_notes(notes, tail_s=0.0)
        syn_s.append(time.perf_counter() - t)
    audio_s = args.bars * 4 * 60.0 / qpm
    g, s = float(np.median(gen_s)), float(np.median(syn_s))
    return {
        "bars": args.bars,
        "tempo_bpm": qpm,
        "audio_seconds": audio_s,
        "repeats": args.repeats,
        "tokens_per_bar": round(float(np.mean(toks)) / args.bars, 1),
        "notes_per_bar": round(float(np.mean(notes_n)) / args.bars, 1),
        "generate_tokens_per_s": round(float(np.mean(toks)) / g, 1),
        "generate_bars_per_s": round(args.bars / g, 2),
        "generate_x_realtime": round(audio_s / g, 1),
        "synth_x_realtime": round(audio_s / s, 1),
        "render_x_realtime": round(audio_s / (g + s), 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "rss_before_model_mb": round(rss0, 1),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
