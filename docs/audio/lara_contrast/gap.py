"""One-off: an LM's valence gap on the held-out crops (cross-entropy with valence negated minus true), as train audio's evaluate() computes it."""
import sys
import numpy as np
import torch
from moodlane.engine.audio.checkpoint import load_lm, load_text_encoder
from moodlane.engine.training.lara import LaraTrainConfig, TextBank, TokenSet, losses, make_batch

stem = sys.argv[1]
torch.set_num_threads(2)
model, meta = load_lm(stem)
model.eval()
cfg = model.cfg
tc = LaraTrainConfig()
frames = cfg.context - cfg.n_q + 1
train = TokenSet("runs/audio", "train", cfg.n_q, frames)
valid = TokenSet("runs/audio", "valid", cfg.n_q, frames)
texts = TextBank(load_text_encoder(cfg.text_encoder))
rng = np.random.default_rng(12345)
gaps, ces, sizes = [], [], []
with torch.no_grad():
    for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 12):
        b = make_batch(valid, texts, cfg, tc, rng, 8, dropout=False, norm=(train.feature_mean, train.feature_std))
        r = losses(model, b, cfg.lara_layer, 0.05)
        ces.append(r.ce.item())
        if not torch.isnan(r.gap):
            gaps.append(r.gap.item())
print(stem, "valid CE", round(float(np.mean(ces)), 4), "valence gap", round(float(np.mean(gaps)), 5), "over", len(gaps), "batches")
from moodlane.engine.audio.lm import ce_per_crop
rng = np.random.default_rng(12345)
out = {"valence": [], "arousal": [], "dropped": []}
with torch.no_grad():
    for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 12):
        b = make_batch(valid, texts, cfg, tc, rng, 8, dropout=False, norm=(train.feature_mean, train.feature_std))
        sel = b.av_on & b.heard
        if not sel.any():
            continue
        def ce(va, on):
            return ce_per_crop(model(b.inputs[sel], model.memory(b.text[sel], b.text_mask[sel], va, on))[0], b.targets[sel])
        true = ce(b.va[sel], b.av_on[sel])
        out["valence"] += (ce(b.va[sel] * torch.tensor([-1.0, 1.0]), b.av_on[sel]) - true).tolist()
        out["arousal"] += (ce(b.va[sel] * torch.tensor([1.0, -1.0]), b.av_on[sel]) - true).tolist()
        out["dropped"] += (ce(b.va[sel], torch.zeros_like(b.av_on[sel])) - true).tolist()
print(stem, {k: (round(float(np.mean(v)), 5), len(v)) for k, v in out.items()})
