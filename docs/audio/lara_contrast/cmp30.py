"""One-off: the issue's figures side by side from eval audio results files (NAME=path/results.json)."""

import json
import sys

rows = []
for a in sys.argv[1:]:
    name, path = a.split("=", 1)
    d = json.load(open(path))
    for m_name, m in d["models"].items():
        g, p, w = m["grid"], m["paired_seed"], m["witness"]
        te = w["transcribed_emotion"]
        rows.append(
            (
                f"{name}:{m_name}:cfg{m['sampling']['cfg']}:avcfg{m['sampling']['av_cfg']}",
                {
                    "valid_ce": m.get("valid_ce"),
                    "fd_ratio": w["sfx_fd"]["ratio"],
                    "key_clarity": w["transcription"]["generated"]["key_clarity"],
                    "arousal_rho": (g["arousal"]["spearman"], g["arousal_spearman_ci95"]),
                    "valence_rho": (g["valence"]["spearman"], g["valence_spearman_ci95"]),
                    "paired_v_flip": (p["valence_vs_flipped"]["mean"], p["valence_vs_flipped"]["ci95"]),
                    "paired_v_drop": (p["valence_vs_dropped"]["mean"], p["valence_vs_dropped"]["ci95"]),
                    "paired_a_flip": (p["arousal_vs_flipped"]["mean"], p["arousal_vs_flipped"]["ci95"]),
                    "paired_a_drop": (p["arousal_vs_dropped"]["mean"], p["arousal_vs_dropped"]["ci95"]),
                    "transcribed_a": (te["arousal_spearman"], te["arousal_spearman_ci95"]),
                    "transcribed_v": (te["valence_spearman"], te["valence_spearman_ci95"]),
                    "ramp": (m["ramp"]["arousal_spearman_median"], m["ramp"]["arousal_spearman_per_seed"]),
                    "level": m["level"]["generated"],
                    "notes": w["transcription"]["generated"],
                    "prompts": m["prompts"]["accuracy"],
                    "piano_share": w["heard_as"]["generated"]["shares"].get("acoustic piano"),
                },
            )
        )
for name, r in rows:
    print("==", name)
    for k, v in r.items():
        print(f"  {k:14s} {v}")
