"""Atomic file writes, for the few places that write files (checkpoints, training state,
evaluation results; the bridge's file sinks). Every write goes to a temporary file beside
its target and is renamed into place only when all the files of one job are complete, so a
failed run never leaves a partial file, nor one file of a pair without the other."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

PACKAGE_WEIGHTS = Path(__file__).resolve().parent / "weights"  # the shipped models (engine/weights)


def _open_temp(path: Path) -> tuple[int, Path]:
    """A new file beside `path`, created with mode 0666 so the process umask applies as for
    any ordinary file (never changing the umask: other threads may be creating files)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.part"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file beside {path}")


def commit(writes: dict[Path, bytes | Callable[[], bytes]]) -> None:
    """Write every (path -> bytes, or a function making them) to temporary files first, then
    rename them all into place. Nothing is renamed unless every file was written."""
    temps: list[tuple[Path, Path]] = []
    try:
        for path, data in writes.items():
            path = Path(path)
            payload = data() if callable(data) else data
            fd, tmp = _open_temp(path)
            temps.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in temps:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes) -> None:
    commit({Path(path): data})


def stem_files(path: str | os.PathLike, what: str, error: type[Exception]) -> tuple[Path, Path]:
    """A checkpoint given as a stem (or either of its files) -> its `.safetensors` and `.json`,
    both present, or `error` naming the one that is missing."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    st, js = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    for f in (st, js):
        if not f.is_file():
            raise error(f"{what} checkpoint {f} does not exist")
    return st, js


def save_stem(stem: str | os.PathLike, weights: bytes, meta: dict) -> None:
    """Write a checkpoint pair, `stem.safetensors` + `stem.json`, both or neither."""
    import json

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    commit({stem.with_suffix(".safetensors"): weights, stem.with_suffix(".json"): json.dumps(meta, indent=1).encode()})


def save_torch(path: str | os.PathLike, obj: object) -> None:
    """`torch.save`, atomically: a crash mid-save keeps the previous training state."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_atomic(Path(path), buf.getvalue())


def save_train_state(path: str | os.PathLike, model, opt, step: int, history: list, wall_s: float, **extra) -> None:
    """The resumable state of a training run (weights, optimiser, step, loss history, wall
    time, and whatever the job adds), atomically."""
    save_torch(path, {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "history": history, "wall_s": wall_s, **extra})


def weights_pair(state: dict, head: dict, half: bool = True) -> tuple[bytes, dict]:
    """A checkpoint's two files: the tensors as safetensors bytes (fp16 by default: half the
    bytes, same samples) and its JSON, `head` with the weights' SHA-256 put after its first
    keys, so a pair that was not written together is caught at load."""
    import hashlib

    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    weights = save(state, metadata={"format_version": str(head.get("format_version", 1))})
    first = {k: head[k] for k in ("format_version", "kind") if k in head}
    meta = {**first, "weights_sha256": hashlib.sha256(weights).hexdigest(), **{k: v for k, v in head.items() if k not in first}}
    return weights, meta
