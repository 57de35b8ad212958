"""argparse value types that reject bad input with one clear message."""

from __future__ import annotations

import argparse
import math


def finite(kind: str, lo: float | None = None, hi: float | None = None):
    def conv(s: str) -> float:
        try:
            x = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{kind} must be a number, got {s!r}") from None
        if not math.isfinite(x) or (lo is not None and x < lo) or (hi is not None and x > hi):
            rng = f" in [{lo:g}, {hi:g}]" if lo is not None and hi is not None else ""
            raise argparse.ArgumentTypeError(f"{kind} must be a finite number{rng}, got {s!r}")
        return x

    return conv


def positive_int(kind: str):
    def conv(s: str) -> int:
        try:
            x = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{kind} must be a whole number, got {s!r}") from None
        if x < 1:
            raise argparse.ArgumentTypeError(f"{kind} must be >= 1, got {s!r}")
        return x

    return conv


def int_range(kind: str, lo: int, hi: int):
    def conv(s: str) -> int:
        try:
            x = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{kind} must be a whole number in [{lo}, {hi}], got {s!r}") from None
        if not lo <= x <= hi:
            raise argparse.ArgumentTypeError(f"{kind} must be a whole number in [{lo}, {hi}], got {s!r}")
        return x

    return conv


def finite_list(kind: str, lo: float | None = None, hi: float | None = None):
    """Comma-separated finite numbers (`3` or `1.5,3`), each checked like `finite`."""
    one = finite(kind, lo, hi)

    def conv(s: str) -> list[float]:
        parts = [p for p in s.split(",") if p.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"{kind} must be one or more numbers separated by commas, got {s!r}")
        return [one(p.strip()) for p in parts]

    return conv


def name_weight(kind: str):
    """`NAME=W` with W a finite number > 0 (`"acoustic piano=3"`), as (NAME, W)."""
    weight = finite(kind)

    def conv(s: str) -> tuple[str, float]:
        name, sep, w = s.rpartition("=")
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(f"{kind} must be NAME=WEIGHT, got {s!r}")
        x = weight(w.strip())
        if x <= 0:
            raise argparse.ArgumentTypeError(f"{kind} must be > 0, got {s!r}")
        return name.strip(), x

    return conv
