"""The ablation's table (scripts/ablation.sh): one column per variant, the mean over its seeds
with each seed's figure beside it, one row per measure, from `eval audio`'s results.json. Markdown on stdout:

    .venv/bin/python scripts/ablation_table.py runs/ablation/eval/results.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

import numpy as np

MEASURES = {  # row -> how to read it from one model's figures
    "valid CE": lambda m: m["valid_ce"],
    "LARA cos": lambda m: m["valid_lara_cos"],
    "aiSFX FD ratio": lambda m: m["witness"]["sfx_fd"]["ratio"],
    "key clarity": lambda m: m["witness"]["transcription"]["generated"]["key_clarity"],
    "arousal ρ (predictor)": lambda m: m["grid"]["arousal"]["spearman"],
    "valence ρ (predictor)": lambda m: m["grid"]["valence"]["spearman"],
    "arousal ρ (transcribed)": lambda m: m["witness"]["transcribed_emotion"]["arousal_spearman"],
    "valence ρ (transcribed)": lambda m: m["witness"]["transcribed_emotion"]["valence_spearman"],
    "paired arousal vs dropped": lambda m: m["paired_seed"]["arousal_vs_dropped"]["mean"],
    "paired valence vs dropped": lambda m: m["paired_seed"]["valence_vs_dropped"]["mean"],
    "ramp ρ (median)": lambda m: m["ramp"]["arousal_spearman_median"],
    "runaway windows": lambda m: m["level"]["generated"]["runaway"],
    "prompts": lambda m: m["prompts"]["accuracy"],
}


def read(m: dict, get) -> float | None:
    try:
        v = get(m)
    except (KeyError, TypeError):  # a witness skipped (no [eval] set-up) reads as a string
        return None
    return None if v is None else float(v)


def fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def main() -> None:
    res = json.loads(open(sys.argv[1]).read())
    by: dict[str, dict[str, dict]] = defaultdict(dict)
    for label, m in res["models"].items():
        name, _, seed = label.split(" ")[0].rpartition("_s")
        by[name or label][seed] = m
    print("| measure (mean, then each seed) | " + " | ".join(f"{name} (seeds {', '.join(seeds)})" for name, seeds in by.items()) + " |")
    print("|---" * (len(by) + 1) + "|")
    for header, get in MEASURES.items():
        cells = []
        for seeds in by.values():
            vals = [read(m, get) for m in seeds.values()]
            ok = [v for v in vals if v is not None]
            mean = fmt(float(np.mean(ok)) if ok else None, 2)
            cells.append(f"**{mean}** ({', '.join(fmt(v, 2) for v in vals)})" if len(vals) > 1 else mean)
        print(f"| {header} | " + " | ".join(cells) + " |")
    ref = res.get("real_reference", {})
    te = ref.get("transcribed_emotion")
    line = f"real renders ({ref.get('clips')} clips): predictor arousal ρ {fmt(ref.get('arousal', {}).get('spearman'), 2)}"
    line += f", valence ρ {fmt(ref.get('valence', {}).get('spearman'), 2)}"
    if isinstance(te, dict) and "valence_spearman" in te:
        line += f"; transcribed arousal ρ {fmt(te['arousal_spearman'], 2)}, valence ρ {fmt(te['valence_spearman'], 2)}"
    print(f"\n{line}")


if __name__ == "__main__":
    main()
