"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


def best_of(fn: Callable[[], Any], repeat: int = 3) -> float:
    """Best wall time in seconds of ``repeat`` calls (time.perf_counter)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@dataclass
class Row:
    """One line of the results table: a measured figure, optionally checked against a target."""

    name: str
    value: float
    unit: str
    target: str = ""
    passed: bool | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check(
    name: str,
    value: float,
    *,
    at_most: float | None = None,
    at_least: float | None = None,
    within: tuple[float, float] | None = None,
    unit: str = "x",
    note: str = "",
) -> Row:
    """A ratio row with its target from issue 8 and PASS/MISS (NaN never passes)."""
    if within is not None:
        low, high = within
        return Row(name, value, unit, f"{low:g}..{high:g}", low <= value <= high, note)
    if at_most is not None:
        return Row(name, value, unit, f"<= {at_most:g}", value <= at_most, note)
    if at_least is not None:
        return Row(name, value, unit, f">= {at_least:g}", value >= at_least, note)
    return Row(name, value, unit, note=note)
