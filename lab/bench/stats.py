"""Summaries of repeated measurements: count, min, median, max (and ratios between medians)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable

DIGITS = 4  # seconds are kept to 0.1 ms


def summary(values: Iterable[float | None]) -> dict:
    """Return {n, min, median, max, values} over the values that are not None (n=0: all None)."""
    kept = [float(v) for v in values if v is not None]
    if not kept:
        return {"n": 0, "min": None, "median": None, "max": None, "values": []}
    return {"n": len(kept), "min": round(min(kept), DIGITS),
            "median": round(statistics.median(kept), DIGITS), "max": round(max(kept), DIGITS),
            "values": [round(v, DIGITS) for v in kept]}


def ratio(numerator: float | None, denominator: float | None, digits: int = 1) -> float | None:
    """numerator / denominator, rounded; None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, digits)


def median_of(block: dict | None) -> float | None:
    return None if not block else block.get("median")
