"""Checkpoints: safetensors weights + the config as JSON + a format version.

Loading rebuilds the model from its config (nanoGPT's habit). Errors name the file and
what was expected, so the CLI can print one line.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load

from moodlane.engine.atomic import PACKAGE_WEIGHTS, save_stem, weights_pair
from moodlane.engine.symbolic.model import SymbolicConfig, SymbolicLM

FORMAT_VERSION = 1
DEFAULT_SYMBOLIC = PACKAGE_WEIGHTS / "symbolic"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or of another format."""


def save_symbolic(model: SymbolicLM, stem: Path, extra: dict | None = None, half: bool = True) -> None:
    """Writes `stem.safetensors` (fp16 by default: half the bytes, same samples) and
    `stem.json`, committed together; the JSON records the weights' SHA-256, so a pair that
    was not written together is caught at load."""
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied to wte
    head = {"format_version": FORMAT_VERSION, "kind": "symbolic", "config": model.cfg.to_json(), **(extra or {})}
    save_stem(stem, *weights_pair(state, head, half))


def load_symbolic(stem: Path | str = DEFAULT_SYMBOLIC) -> tuple[SymbolicLM, dict]:
    stem = Path(stem)
    if stem.suffix in (".json", ".safetensors"):
        stem = stem.with_suffix("")
    cfg_path, w_path = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise CheckpointError(f"checkpoint file {p} is missing (expected {stem}.json + {stem}.safetensors)")
    try:
        meta = json.loads(cfg_path.read_text())
        cfg = SymbolicConfig.from_json(meta["config"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{cfg_path} is not a MoodLane symbolic config ({e})") from None
    if meta.get("format_version") != FORMAT_VERSION or meta.get("kind") != "symbolic":
        raise CheckpointError(f"{cfg_path}: expected kind 'symbolic', format_version {FORMAT_VERSION}")
    try:
        raw = w_path.read_bytes()
        state = load(raw)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{w_path} is not a readable safetensors file ({e})") from None
    sha = meta.get("weights_sha256")
    if sha is not None and hashlib.sha256(raw).hexdigest() != sha:
        raise CheckpointError(f"{w_path} does not match {cfg_path} (checksum differs: written by another run?)")
    model = SymbolicLM(cfg)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    state["lm_head.weight"] = state.get("wte.weight")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as e:
        raise CheckpointError(f"{w_path} does not match its config: {str(e).splitlines()[0]}") from None
    model.eval()
    return model, meta
