"""When to poll a job next, how long to back off after a failure, and how fast to poll.

Segmind's jobs take about a minute, and a poll cannot make them faster. So the tracker
does not poll a job while it cannot be done yet: its first poll comes half an interval
before the low end (the 5th percentile) of how long jobs like it took, and every
``interval`` seconds after that. Those run times are as the bot saw them, each at a poll
up to one interval after the job finished, so nearly every job is noticed within one
interval of finishing, as if it had been polled all along, at two or three polls a job
instead of one an interval. The half interval keeps the learnt figure honest: a job
found done at its first poll is recorded at that poll, so if more than one in twenty
are, the next figure is lower (Segmind got faster); were the first poll at the figure
itself, such jobs would hold it where it is, and any delay in polling would push it up.
A job Segmind still reports QUEUED cannot finish before it has been processed, however
long it has waited, so its earliest finish moves on with it. Both figures are learnt
from the ledger (recent jobs of the same quality and length), so this is a pure function
of what is known; tests call it directly. Segmind's status answers carry no estimate of
their own (only a 429's ``Retry-After``, which :func:`backoff_delay` honours).

:class:`PollPace` spaces the status polls of all jobs together, so that neither a restart
nor a thousand jobs finishing in the same minute sends Segmind more than a set number of
requests a second.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Learnt",
    "FIRST_LOOK_INTERVALS",
    "MAX_BACKOFF_SECONDS",
    "PollPace",
    "expected_earliest_finish",
    "finish_to_record",
    "next_poll_delay",
    "backoff_delay",
]

MAX_BACKOFF_SECONDS = 60.0
#: A job not yet seen at work is looked at this many intervals after its submit (then at
#: twice the time since its submit, while it stays queued).
FIRST_LOOK_INTERVALS = 2
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
    """A low estimate of how long a job like this takes: the 5th percentile of history
    (with fewer than 20 jobs known, the shortest).

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
    if len(samples) < 20:
        return samples[0]
    return statistics.quantiles(samples, n=20)[0]


def finish_to_record(*, seen_at: float, due_at: float) -> float:
    """When to record a job as finished that a poll found done at ``seen_at``, the poll
    having been due at ``due_at``: the earlier of the two.

    Run times are learnt from these records. A poll that came late (the pace's queue, a
    busy event loop) would otherwise record the bot's own delay as Segmind's, the next
    first polls would wait that much longer, come later still, and the learnt figure
    would creep up without end. Recorded as of the due time, a job done by then is what
    an on-time poll would have seen; one done after it gets a run a little short of its
    own: a low estimate, the safe side (one more poll, never a late one).
    """
    return min(seen_at, due_at)


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
    seen_at_work: bool = True,
) -> float:
    """Seconds until the next status poll of a job submitted ``elapsed`` seconds ago.

    - Not yet ``seen_at_work`` (still QUEUED): a look ``FIRST_LOOK_INTERVALS`` intervals
      after the submit, then each at twice the time since the submit, so the user's
      status line says when it is being made (Segmind's queue is usually seconds: one
      look). It also dates the start of processing, which the schedule learns from.
    - Until half an interval before ``earliest_finish`` (learnt from finishes seen at
      polls, late by up to one interval): no poll, it cannot be done yet.
    - Past that: every ``interval`` seconds.
    - Nothing learnt (``earliest_finish`` 0): every ``interval`` seconds.
    - Seen still QUEUED ``last_seen_queued`` seconds after the submit (Segmind has a
      backlog): processing began after that, so the job cannot finish before
      ``last_seen_queued + earliest_processing``.

    A poll that failed is followed by :func:`backoff_delay` instead, which honours the
    service's ``Retry-After``.
    """
    if last_seen_queued is not None:
        earliest_finish = max(earliest_finish, last_seen_queued + earliest_processing)
    if earliest_finish <= 0:
        return interval
    delay = max(interval, earliest_finish - interval / 2 - elapsed)
    if seen_at_work:
        return delay
    look = max(FIRST_LOOK_INTERVALS * interval, 2 * elapsed)
    return min(delay, max(interval, look - elapsed))


class PollPace:
    """Turns for status polls, at most ``per_second`` of them in any second.

    Each poll asks for its turn when it is due (:meth:`wait`); turns are handed out in
    that order, one every ``1 / per_second`` seconds, so a thousand jobs due at once (a
    restart, a burst of photos a minute ago) are polled over the next seconds instead of
    all in one. A busy event loop can still wake many turns late and together, so each
    poll also checks in just before it goes (:meth:`start`): no more than ``per_second``
    go in any one-second window, whatever the loop did.
    """

    def __init__(self, per_second: float) -> None:
        if not math.isfinite(per_second) or per_second < 1:
            raise ValueError(f"per_second must be a positive number, not {per_second}")
        self._gap = 1.0 / per_second
        self._limit = int(per_second)
        self._next_turn = -math.inf
        self._started: deque[float] = deque()

    def wait(self, now: float) -> float:
        """Take the next free turn; returns how long to wait for it (0: go now)."""
        turn = max(now, self._next_turn)
        self._next_turn = turn + self._gap
        return turn - now

    def start(self, now: float) -> float:
        """0: go now (counted); else how long to wait before checking in again.

        A request that takes no turn (a result, a history lookup) checks in here only:
        it goes ahead of the polls waiting for turns, within the same second's cap."""
        while self._started and self._started[0] <= now - 1.0:
            self._started.popleft()
        if len(self._started) < self._limit:
            self._started.append(now)
            return 0.0
        return self._started[0] + 1.0 - now
