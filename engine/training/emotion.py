"""Fitting the emotion map and the judge (`moodlane train symbolic`, `moodlane train judge`)."""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler

from moodlane.engine.emotion import QUADRANT_CENTRES
from moodlane.engine.symbolic.attributes import FEATURE_NAMES, INDEX, PC_NAMES, to_ranks
from moodlane.engine.symbolic.emotion_map import TIMED, EmotionMap, basis, linear_basis, per_second
from moodlane.engine.symbolic.judge import SymbolicJudge

# Grid artefacts: EMOPIA is transcribed audio, not beat-aligned, so where its onsets fall
# on the 16th grid says nothing about emotion and would mislead the judge on generated music.
# Absolute pitch classes say which key a clip is in, not how it feels: a judge that used
# them would learn the datasets' key habits and not transfer to music in other keys.
JUDGE_EXCLUDE = ("offbeat_fraction", "downbeat_fraction", "eighth_note_prevalence", "total_notes", *(f"pc_{n}" for n in PC_NAMES))


EMOPIA_QPM = 120.0  # EMOPIA's transcriptions all say 120 qpm: their beats are half-seconds


def timed_attributes(attributes: tuple[str, ...], edges: np.ndarray, lab: dict | None = None) -> dict:
    """The time-based attributes among `attributes`, with their units and bin edges: the
    map converts them to the session's tempo (`EmotionMap.ranks`). With `lab`, each is
    calibrated to EMOPIA (`per_second`): log of its median over each quadrant's training
    clips, in seconds' terms, solved exactly on [1, v, a, va] at the quadrant centres."""
    timed = {n: {"unit": TIMED[n], "edges": [float(x) for x in edges[j]]} for j, n in enumerate(attributes) if n in TIMED}
    if lab is None:
        return timed
    train = ~lab["emopia_valid"]
    x, q = lab["emopia_xw"][train], lab["emopia_q"][train]
    quads = (1, 2, 3, 4)
    if not all((q == k).any() for k in quads):
        raise ValueError("calibrating the time-based attributes needs EMOPIA clips of all four quadrants")
    B = linear_basis(np.array([QUADRANT_CENTRES[k].valence for k in quads]), np.array([QUADRANT_CENTRES[k].arousal for k in quads]))
    for name, t in timed.items():
        seconds = x[:, INDEX[name]] * per_second(t["unit"], EMOPIA_QPM)
        medians = np.array([np.median(seconds[q == k]) for k in quads])
        t["per_second"] = [round(float(c), 5) for c in np.linalg.solve(B, np.log(np.maximum(medians, 1e-3)))]
        t["emopia_median_per_quadrant"] = [round(float(m), 4) for m in medians]
    return timed


def fit_emotion_map(
    lab: dict,
    attributes: tuple[str, ...],
    edges: np.ndarray,
    bank_values: np.ndarray | None = None,
    bank_size: int = 4000,
    ridge_alpha: float = 1.0,
    bank_ranks: np.ndarray | None = None,
) -> EmotionMap:
    """`bank_values`: raw attribute values of real bars (the generator's training split),
    sampled into the projection bank; or `bank_ranks`, such a bank already on the rank
    scale (refitting a shipped map, whose bank it keeps)."""
    idx = [INDEX[a] for a in attributes]
    tr_e = ~lab["emopia_valid"]
    tr_v = ~lab["vgmidi_valid"]
    r_e = to_ranks(lab["emopia_xw"][tr_e][:, idx], edges)  # (Ne, k)
    q = lab["emopia_q"][tr_e]
    r_v = to_ranks(lab["vgmidi_x"][tr_v][:, idx], edges)  # (Nv, k)

    # EmoGen: prototype = clip closest to its quadrant's centre, binarised at the median
    med = np.median(r_e, axis=0)
    high_rank = np.array([r_e[r_e[:, j] > med[j], j].mean() if (r_e[:, j] > med[j]).any() else 0.75 for j in range(len(idx))])
    low_rank = np.array([r_e[r_e[:, j] <= med[j], j].mean() for j in range(len(idx))])
    protos, highs = [], []
    for quad in (1, 2, 3, 4):
        rq = r_e[q == quad]
        centre = rq.mean(0)
        proto = rq[np.argmin(((rq - centre) ** 2).sum(1))]
        protos.append(proto)
        highs.append(proto > med)
    protos = np.array(protos)

    # smooth map: ridge on the quadratic VA basis, both datasets weighted equally
    va_e = np.array([[QUADRANT_CENTRES[int(x)].valence, QUADRANT_CENTRES[int(x)].arousal] for x in q])
    va_v = np.stack([lab["vgmidi_v"][tr_v], lab["vgmidi_a"][tr_v]], 1)
    B = np.concatenate([basis(va_e[:, 0], va_e[:, 1]), basis(va_v[:, 0], va_v[:, 1])])
    R = np.concatenate([r_e, r_v])
    w = np.concatenate([np.full(len(r_e), 0.5 / len(r_e)), np.full(len(r_v), 0.5 / len(r_v))]) * len(R)
    reg = Ridge(ridge_alpha, fit_intercept=False).fit(B, R, sample_weight=w)
    coef = reg.coef_  # (k, 6); past +-0.6 the map holds arousal (`EmotionMap.arousal_limit`), not valence
    centres = basis(
        np.array([QUADRANT_CENTRES[i].valence for i in (1, 2, 3, 4)]), np.array([QUADRANT_CENTRES[i].arousal for i in (1, 2, 3, 4)])
    )
    spread_fit = np.abs(centres @ coef.T - 0.5).mean()
    spread_proto = np.abs(protos - 0.5).mean()
    gain = float(np.clip(spread_proto / max(spread_fit, 1e-6), 1.0, 4.0))

    # tempo from VGMIDI pieces (EMOPIA's files all say 120 qpm)
    t_idx = INDEX["tempo"]
    qpm = lab["vgmidi_x"][tr_v][:, t_idx]
    tb = basis(va_v[:, 0], va_v[:, 1])
    treg = Ridge(1.0, fit_intercept=False).fit(tb[:, :3], np.log2(np.clip(qpm, 40, 240)))
    tempo_coef = np.concatenate([treg.coef_, np.zeros(3)])
    per_attr_r = [float(pearsonr(B @ coef[j], R[:, j])[0]) if R[:, j].std() > 0 else 0.0 for j in range(len(idx))]
    meta = {
        "fitted_on": {"emopia_clips": int(len(r_e)), "vgmidi_bars": int(len(r_v))},
        "fit_correlation": dict(zip(attributes, [round(x, 3) for x in per_attr_r])),
        "gain_calibration": {"prototype_spread": round(float(spread_proto), 4), "fit_spread": round(float(spread_fit), 4)},
        "prototype_ranks": protos.round(3).tolist(),
    }
    bank, weights = bank_ranks, None
    if bank_values is not None and len(bank_values):
        rng = np.random.default_rng(0)
        pick = rng.choice(len(bank_values), min(bank_size, len(bank_values)), replace=False)
        bank = to_ranks(bank_values[pick], edges)
    if bank is not None:
        weights = np.clip(np.array(per_attr_r), 0.0, None) ** 2  # share of variance emotion explains
    timed = timed_attributes(tuple(attributes), edges, lab)
    return EmotionMap(
        tuple(attributes),
        coef,
        gain,
        np.array(highs),
        high_rank,
        low_rank,
        tempo_coef,
        (66.0, 150.0),
        meta,
        bank,
        weights,
        timed=timed,
        arousal_limit=0.6,
    )


def fit_judge(lab: dict, C: float = 0.03, alpha: float = 10.0) -> tuple[SymbolicJudge, dict]:
    names = tuple(n for n in FEATURE_NAMES if n not in JUDGE_EXCLUDE)
    idx = [INDEX[n] for n in names]
    tr_e, tr_v = ~lab["emopia_valid"], ~lab["vgmidi_valid"]
    Xe, Xv = lab["emopia_x"][:, idx], lab["vgmidi_x"][:, idx]
    scaler = StandardScaler().fit(np.concatenate([Xe[tr_e], Xv[tr_v]]))
    z = lambda x: scaler.transform(x)  # noqa: E731
    clf = LogisticRegression(C=C, max_iter=5000).fit(z(Xe[tr_e]), lab["emopia_q"][tr_e])
    q = lab["emopia_q"]
    va_e = np.array([[QUADRANT_CENTRES[int(x)].valence, QUADRANT_CENTRES[int(x)].arousal] for x in q])
    va_v = np.stack([lab["vgmidi_v"], lab["vgmidi_a"]], 1)
    X = np.concatenate([z(Xe[tr_e]), z(Xv[tr_v])])
    Y = np.concatenate([va_e[tr_e], va_v[tr_v]])
    w = np.concatenate([np.full(tr_e.sum(), 0.5 / tr_e.sum()), np.full(tr_v.sum(), 0.5 / tr_v.sum())]) * len(X)
    reg = Ridge(alpha).fit(X, Y, sample_weight=w)
    judge = SymbolicJudge(
        names,
        scaler.mean_.copy(),
        scaler.scale_.copy(),
        clf.coef_.copy(),
        clf.intercept_.copy(),
        reg.coef_.copy(),
        reg.intercept_.copy(),
        {},
    )
    report = judge_report(judge, lab, valid=True)
    judge.meta.update({"trained_on": {"emopia_clips": int(tr_e.sum()), "vgmidi_bars": int(tr_v.sum())}, "validation": report})
    return judge, report


def judge_report(judge: SymbolicJudge, lab: dict, valid: bool | None = None) -> dict:
    """Accuracy/F1 on EMOPIA clips and VA correlation on VGMIDI bars (a split, or all)."""
    out: dict = {}
    me = np.ones(len(lab["emopia_q"]), bool) if valid is None else lab["emopia_valid"] == valid
    if me.any():
        pred = np.array([j.quadrant for j in judge.predict_features(lab["emopia_x"][me])])
        y = lab["emopia_q"][me]
        out["quadrant_accuracy"] = round(float((pred == y).mean()), 4)
        out["quadrant_macro_f1"] = round(float(f1_score(y, pred, average="macro")), 4)
        # real music's own "objective accuracy", per quadrant: what a generated quadrant's figure reads against
        out["per_quadrant_recall"] = {f"Q{k}": round(float((pred[y == k] == k).mean()), 4) for k in (1, 2, 3, 4) if (y == k).any()}
        out["emopia_clips"] = int(me.sum())
    mv = np.ones(len(lab["vgmidi_v"]), bool) if valid is None else lab["vgmidi_valid"] == valid
    if mv.sum() > 2:
        js = judge.predict_features(lab["vgmidi_x"][mv])
        out["valence_pearson"] = round(float(pearsonr([j.valence for j in js], lab["vgmidi_v"][mv])[0]), 4)
        out["arousal_pearson"] = round(float(pearsonr([j.arousal for j in js], lab["vgmidi_a"][mv])[0]), 4)
        out["vgmidi_bars"] = int(mv.sum())
    return out
