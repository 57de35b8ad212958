"""One-off (stop 30): an LM's cross-entropy on held-out crops with heard labels, with the valence
negated, the arousal negated or the emotion dropped, minus with the true emotion (nats a token).
Run: .venv/bin/python docs/audio/lara_contrast/gap.py STEM [BATCHES]"""

import sys

import numpy as np
import torch

from moodlane.engine.audio.checkpoint import load_lm, load_text_encoder
from moodlane.engine.audio.lm import ce_per_crop
from moodlane.engine.training.lara import LaraTrainConfig, TextBank, TokenSet, make_batch


def ce(model, b, sel, va, on) -> torch.Tensor:
    mem = model.memory(b.text[sel], b.text_mask[sel], va, on)
    return ce_per_crop(model(b.inputs[sel], mem)[0], b.targets[sel])


def main(stem: str, batches: int) -> None:
    torch.set_num_threads(2)
    model, _ = load_lm(stem)
    model.eval()
    cfg, tc = model.cfg, LaraTrainConfig()
    frames = cfg.context - cfg.n_q + 1
    train = TokenSet("runs/audio", "train", cfg.n_q, frames)
    valid = TokenSet("runs/audio", "valid", cfg.n_q, frames)
    texts = TextBank(load_text_encoder(cfg.text_encoder))
    rng = np.random.default_rng(12345)
    out: dict[str, list[float]] = {"valence": [], "arousal": [], "dropped": []}
    with torch.no_grad():
        for _ in range(batches):
            b = make_batch(valid, texts, cfg, tc, rng, 8, dropout=False, norm=(train.feature_mean, train.feature_std))
            sel = b.av_on & b.heard
            if not sel.any():
                continue
            va, on = b.va[sel], b.av_on[sel]
            true = ce(model, b, sel, va, on)
            out["valence"] += (ce(model, b, sel, va * torch.tensor([-1.0, 1.0]), on) - true).tolist()
            out["arousal"] += (ce(model, b, sel, va * torch.tensor([1.0, -1.0]), on) - true).tolist()
            out["dropped"] += (ce(model, b, sel, va, torch.zeros_like(on)) - true).tolist()
    print(stem, {k: (round(float(np.mean(v)), 5), len(v)) for k, v in out.items()})


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 12)
