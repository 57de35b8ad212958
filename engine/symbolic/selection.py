"""EmoGen's emotion -> attribute selection (arXiv 2307.01229, section 3.2).

A random forest predicts the EMOPIA quadrant from each clip's jSymbolic-style attributes;
its impurity importance ranks the attributes and the top k become the generator's
conditioning. Accuracy is measured with song-level (grouped) cross-validation, as clips of
one song are near-duplicates.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import GroupKFold, cross_val_predict

from moodlane.engine.symbolic.attributes import FEATURE_NAMES, NOT_CONTROLLABLE


def quadrant_forest(seed: int = 0) -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=500, min_samples_leaf=2, n_jobs=-1, random_state=seed)


def forest_cv_accuracy(X: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = 5) -> tuple[float, float]:
    """Song-level k-fold accuracy and macro-F1 of the quadrant forest."""
    from sklearn.metrics import f1_score

    pred = cross_val_predict(quadrant_forest(), X, y, groups=groups, cv=GroupKFold(folds))
    return float((pred == y).mean()), float(f1_score(y, pred, average="macro"))


def select_attributes(X: np.ndarray, y: np.ndarray, k: int = 16) -> tuple[list[str], np.ndarray]:
    """Top-k controllable attributes by forest importance; also returns all importances."""
    rf = quadrant_forest().fit(X, y)
    imp = rf.feature_importances_
    order = [i for i in np.argsort(-imp) if FEATURE_NAMES[i] not in NOT_CONTROLLABLE]
    return [FEATURE_NAMES[i] for i in order[:k]], imp
