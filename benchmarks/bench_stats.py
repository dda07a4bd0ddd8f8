"""Shared helpers: result rows, interleaved timing, robust statistics, profile summaries.

Every figure is reported as a ratio against a baseline measured in the same run, with
baseline and subject repetitions interleaved, so that the noise of a shared machine
hits both sides alike. No figure is ever asserted on.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import random
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "BenchResult",
    "Row",
    "interleaved",
    "median",
    "paired_ratios",
    "profile_top",
    "stats_summary",
]


@dataclass
class Row:
    """One reported figure: ``figure`` compared with ``baseline`` as ``ratio``.

    ``goal`` is the largest acceptable ratio (``None``: reported, not judged).
    """

    bench: str
    metric: str
    figure: float
    unit: str
    baseline_name: str
    baseline: float
    baseline_unit: str
    ratio: float
    goal: float | None = None
    note: str = ""

    @property
    def met(self) -> bool | None:
        """Whether the ratio is within the goal (``None`` when there is no goal)."""
        return None if self.goal is None else self.ratio <= self.goal

    def as_dict(self) -> dict[str, Any]:
        """The row as JSON-ready data."""
        data = asdict(self)
        data["met"] = self.met
        return data


@dataclass
class BenchResult:
    """What one benchmark module returns: table rows and free-form details."""

    name: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence."""
    return float(statistics.median(values))


def stats_summary(values: Sequence[float]) -> dict[str, float | int]:
    """Median, min, max and count of a non-empty sequence."""
    return {
        "median": median(values),
        "min": float(min(values)),
        "max": float(max(values)),
        "n": len(values),
    }


def interleaved(
    subjects: Mapping[str, Callable[[], float]], repeats: int, *, seed: int = 0
) -> dict[str, list[float]]:
    """Call every subject ``repeats`` times, in a shuffled order within each round.

    Each subject does its own setup and returns the seconds it measured, so setup stays
    out of the figures. Round ``i`` of every subject ran at about the same time, which
    is what :func:`paired_ratios` relies on.
    """
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {name: [] for name in subjects}
    names = list(subjects)
    for _ in range(repeats):
        rng.shuffle(names)
        for name in names:
            samples[name].append(subjects[name]())
    return samples


def paired_ratios(subject: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """Round-by-round ratios ``subject[i] / baseline[i]``."""
    return [s / b for s, b in zip(subject, baseline, strict=True) if b > 0]


def _where(key: tuple[str, int, str]) -> str:
    filename, line, func = key
    if filename == "~":
        return func  # a builtin, e.g. "<method 'isoformat' of 'datetime.datetime' objects>"
    parts = filename.replace(os.sep, "/").split("/")
    for anchor in ("site-packages", "lib"):
        if anchor in parts:
            parts = parts[len(parts) - parts[::-1].index(anchor) :]
            break
    else:
        parts = parts[-2:]
    return f"{'/'.join(parts)}:{line}({func})"


def profile_top(func: Callable[[], object], *, limit: int = 15, per: int = 1) -> dict[str, Any]:
    """Profile ``func()`` and return the top entries by self time and by cumulative time.

    Times are in microseconds per unit of work (``per`` units were done by ``func``);
    ``share`` is the fraction of the total profiled self time. cProfile's own overhead
    inflates Python-level functions relative to C ones: read the shares as a map of
    where the time goes, not as exact costs.
    """
    profiler = cProfile.Profile()
    profiler.enable()
    func()
    profiler.disable()
    stats = pstats.Stats(profiler, stream=sys.stderr)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for _, _, tt, _, _ in raw.values()) or 1.0

    def entry(key: tuple[str, int, str]) -> dict[str, Any]:
        _, calls, tt, ct, _ = raw[key]
        return {
            "function": _where(key),
            "calls_per_unit": round(calls / per, 3),
            "self_us_per_unit": round(tt / per * 1e6, 3),
            "cum_us_per_unit": round(ct / per * 1e6, 3),
            "self_share": round(tt / total, 4),
        }

    by_self = sorted(raw, key=lambda k: raw[k][2], reverse=True)[:limit]
    by_cum = sorted(
        (k for k in raw if k[0] != "~" or "profiler" not in k[2]),
        key=lambda k: raw[k][3],
        reverse=True,
    )[:limit]
    return {
        "profiled_us_per_unit": round(total / per * 1e6, 3),
        "by_self": [entry(k) for k in by_self],
        "by_cumulative": [entry(k) for k in by_cum],
    }
