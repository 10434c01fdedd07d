"""Small measuring helpers: /proc readings, percentiles, rates over sliding windows.

Linux only (reads ``/proc``); psutil is not a dependency.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ProcSample",
    "proc_sample",
    "percentile",
    "max_in_window",
    "peak_overlap",
]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcSample:
    """CPU time (user + system, seconds) and memory (MiB) of one process, right now."""

    cpu_seconds: float
    rss_mb: float
    peak_rss_mb: float


def _status_kib(text: str, field: str) -> float:
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    return math.nan


def proc_sample(pid: int | str = "self") -> ProcSample:
    """Read ``/proc/<pid>/stat`` (utime + stime) and ``/proc/<pid>/status`` (VmRSS, VmHWM)."""
    root = Path("/proc") / str(pid)
    stat = (root / "stat").read_text()
    # Fields after "(comm)": state is field 3, so utime (14) and stime (15) are 11 and 12.
    fields = stat.rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    status = (root / "status").read_text()
    return ProcSample(
        cpu_seconds=cpu,
        rss_mb=_status_kib(status, "VmRSS") / 1024.0,
        peak_rss_mb=_status_kib(status, "VmHWM") / 1024.0,
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def max_in_window(times: Iterable[float], window: float = 1.0) -> int:
    """The most events in any half-open window ``[t, t + window)`` (a sliding window)."""
    ordered = sorted(times)
    best = 0
    for index, start in enumerate(ordered):
        end = bisect.bisect_left(ordered, start + window, lo=index)
        best = max(best, end - index)
    return best


def peak_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The most intervals ``(start, end)`` open at the same moment."""
    events: list[tuple[float, int]] = []
    for start, end in intervals:
        events.append((start, 1))
        events.append((end, -1))
    events.sort(key=lambda event: (event[0], event[1]))
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best
