"""When to poll a job next, and how long to back off after a failure.

Segmind's jobs take about a minute, and a poll cannot make them faster. So the tracker
polls sparsely while a job cannot be done yet — halving the distance to the earliest
moment it has been seen to finish — and every ``interval`` seconds after that. A job
Segmind still reports QUEUED cannot finish before it has been processed, however long
it has waited, so its earliest finish moves on with it. Both figures are learnt from the
ledger (recent jobs of the same quality and length), so this is a pure function of what
is known; tests call it directly.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Learnt",
    "MAX_BACKOFF_SECONDS",
    "expected_earliest_finish",
    "next_poll_delay",
    "backoff_delay",
]

MAX_BACKOFF_SECONDS = 60.0
#: Below this many observations the learnt figure is not trusted.
_MIN_SAMPLES = 3


@dataclass(frozen=True)
class Learnt:
    """Low estimates from past jobs of the same quality and length (0: not known yet)."""

    earliest_finish: float  #: seconds from submit to COMPLETED
    earliest_processing: float  #: seconds from PROCESSING to COMPLETED
    #: What the status message says such a job usually takes (None: not known yet).
    usual: int | None = None


def expected_earliest_finish(run_seconds: Sequence[float]) -> float:
    """A low estimate of how long a job like this takes: the 10th percentile of history.

    Used for both spans: submit → COMPLETED, and PROCESSING first seen → COMPLETED. The
    bot sees PROCESSING at a poll, after it began, so the second is on the short side:
    the safe side for a low estimate.

    With too little history it is 0: poll every interval until the ledger has learnt.
    (Assuming Segmind's quoted ~50 s instead would leave a faster service, or a test
    double, waiting half a minute for its first poll.)
    """
    samples = sorted(s for s in run_seconds if s > 0)
    if len(samples) < _MIN_SAMPLES:
        return 0.0
    if len(samples) < 10:
        return samples[0]
    return statistics.quantiles(samples, n=10)[0]


def backoff_delay(
    failures: int,
    interval: float,
    *,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Capped exponential backoff with full jitter, never inside a ``Retry-After`` window."""
    rng = rng or random.Random()
    ceiling = min(MAX_BACKOFF_SECONDS, interval * (2 ** max(0, failures)))
    delay = interval + rng.uniform(0, max(0.0, ceiling - interval))
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def next_poll_delay(
    *,
    elapsed: float,
    earliest_finish: float,
    interval: float,
    last_seen_queued: float | None = None,
    earliest_processing: float = 0.0,
) -> float:
    """Seconds until the next status poll of a job submitted ``elapsed`` seconds ago.

    - Well before ``earliest_finish``: wait half the remaining time (at least ``interval``),
      so a 50 s job costs a handful of polls instead of fifty.
    - Within two intervals of it, or past it: every ``interval`` seconds, so a finished
      video is noticed within one interval.
    - Seen still QUEUED ``last_seen_queued`` seconds after the submit (Segmind has a
      backlog): processing began after that, so the job cannot finish before
      ``last_seen_queued + earliest_processing``.

    A poll that failed is followed by :func:`backoff_delay` instead, which honours the
    service's ``Retry-After``.
    """
    if last_seen_queued is not None:
        earliest_finish = max(earliest_finish, last_seen_queued + earliest_processing)
    remaining = earliest_finish - elapsed
    return interval if remaining <= 2 * interval else max(interval, remaining / 2)
