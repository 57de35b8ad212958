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
