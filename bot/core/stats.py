"""Operator statistics, computed from ledger rows (no SQL here, no Telegram)."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from .jobs import Job, JobState

__all__ = ["Stats", "summarize"]

DAY = 86_400.0


@dataclass(frozen=True)
class Stats:
    today: Counter[str]  #: jobs started in the last 24 h, by state
    week: Counter[str]  #: jobs started in the last 7 days, by state
    median_seconds: float | None  #: Generate → video, delivered jobs of the last 7 days
    p95_seconds: float | None
    failures: Counter[str]  #: jobs of the last 7 days that ended without a video, by reason
    active: int


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summarize(jobs: Sequence[Job], now: float, active: int) -> Stats:
    """``jobs``: those started in the last 7 days."""
    week = [job for job in jobs if (job.generate_at or 0) >= now - 7 * DAY]
    today = [job for job in week if (job.generate_at or 0) >= now - DAY]
    durations = [
        job.notified_at - job.generate_at
        for job in week
        if job.state is JobState.DELIVERED and job.notified_at and job.generate_at
    ]
    failures = Counter(
        (job.reason.value if job.reason else job.state.value)
        for job in week
        if job.is_terminal and job.state is not JobState.DELIVERED
    )
    return Stats(
        today=Counter(job.state.value for job in today),
        week=Counter(job.state.value for job in week),
        median_seconds=statistics.median(durations) if durations else None,
        p95_seconds=_percentile(durations, 0.95) if durations else None,
        failures=failures,
        active=active,
    )
