"""Figures: every number the benchmark reports is a list of runs, shown as median, min and max.

A ratio between two measurements is taken run by run (run i of one over run i
of the other, the two measured back to back), so slow spells on a noisy
machine hit both sides of a pair instead of one side of the median.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Figure:
    """One measured quantity over several runs."""

    name: str
    unit: str
    values: list[float]
    note: str = ""
    goal: tuple[str, float] | None = None  # (">=" or "<=", threshold)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return float(statistics.median(self.values))

    @property
    def min(self) -> float:
        return float(min(self.values))

    @property
    def max(self) -> float:
        return float(max(self.values))

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        op, threshold = self.goal
        return self.median >= threshold if op == ">=" else self.median <= threshold

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"median": self.median, "min": self.min, "max": self.max, "unit": self.unit,
                               "runs": len(self.values), "values": self.values}
        if self.goal is not None:
            out["goal"] = f"{self.goal[0]} {self.goal[1]:g}"
            out["met"] = self.met
        if self.note:
            out["note"] = self.note
        out.update(self.extra)
        return out


def ratio(name: str, top: Figure, bottom: Figure, *, unit: str = "x", note: str = "",
          goal: tuple[str, float] | None = None) -> Figure:
    """``top / bottom`` run by run (both must have the same number of runs, measured in pairs)."""
    if len(top.values) != len(bottom.values):
        raise ValueError(f"{top.name} has {len(top.values)} runs, {bottom.name} {len(bottom.values)}")
    values = [a / b for a, b in zip(top.values, bottom.values)]
    return Figure(name, unit, values, note or f"{top.name} / {bottom.name}, run by run", goal)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``fn`` took (with the garbage collector settled first, so it does not land inside)."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples`` by nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]
