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

:class:`ApiPace` spaces requests to Segmind's API together and caps those on their way,
so that a restart (the tracker paces the jobs it resumed, see ``Tracker._api``) sends
Segmind no more than a set number of requests in any second.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import statistics
from collections import deque
from collections.abc import AsyncIterator, Hashable, Sequence
from dataclasses import dataclass

__all__ = [
    "ApiPace",
    "Learnt",
    "FIRST_LOOK_INTERVALS",
    "MAX_BACKOFF_SECONDS",
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


class ApiPace:
    """Requests to Segmind's API (status polls, result fetches, history lookups): at most
    ``per_second`` go in any one-second window, counted when each one goes, and at most
    ``in_flight`` are on their way at once.

    Together the two bound what Segmind sees, however the event loops on either side
    stall: a request that reaches it within some second either left within that second
    (at most ``per_second``) or left before it and was still unanswered when it began (at
    most ``in_flight``). So it never sees more than ``per_second + in_flight`` in a second.

    A request goes in three moves, each without sleeping (the caller waits what it is
    told, then asks again):

    - :meth:`turn`: its place in line. Polls take turns ``1 / per_second`` apart in the
      order they ask, so a thousand jobs due at once (after a restart) are polled over
      the next seconds instead of all in one. A request that
      must not queue behind polls (a result fetch: a video waits on it) takes no turn.
    - :meth:`slot`: one of the ``in_flight`` places, waited for in order and held until
      the answer is in.
    - :meth:`start`, with the slot held, at the moment it goes: counted, or refused when
      a full second's worth went in the last second or, for a poll, another went less
      than half a turn ago (turns woken late and together by a busy loop, or let go
      together by answers that came back together). A refused request gets a fresh turn
      ahead of the polls still in line (it had its turn) but behind the others refused,
      no sooner than the window has room: those held back go one turn apart, not in a
      burst.
    """

    def __init__(self, per_second: float, in_flight: int) -> None:
        if not math.isfinite(per_second) or per_second < 1:
            raise ValueError(f"per_second must be a positive number, not {per_second}")
        if in_flight < 1:
            raise ValueError(f"in_flight must be at least 1, not {in_flight}")
        self._gap = 1.0 / per_second
        self._limit = int(per_second)
        self._next_turn = -math.inf
        #: The next turn for a request held back at :meth:`start` (ahead of the line).
        self._next_ahead = -math.inf
        #: Each waiting request's turn (by its key: the job it is for).
        self._turns: dict[Hashable, float] = {}
        #: When each request of the last second went.
        self._sent: deque[float] = deque()
        self._slots = asyncio.Semaphore(in_flight)
        self._out = 0
        self._queued = 0

    @property
    def in_flight(self) -> int:
        """Requests holding a slot now (on their way, or about to go)."""
        return self._out

    @property
    def waiting_for_slot(self) -> int:
        """Requests waiting for a slot to free."""
        return self._queued

    def in_line(self, key: Hashable) -> bool:
        """Whether ``key`` holds a turn it has not used yet."""
        return key in self._turns

    def forget(self, key: Hashable) -> None:
        """``key`` will not ask again (its job's task ended): its turn is given up."""
        self._turns.pop(key, None)

    def _rewound(self, now: float) -> None:
        """The clock went back (a wall clock set back): the turns and the last second,
        all dated in its future, are forgotten rather than waited for."""
        if self._sent and now < self._sent[-1]:
            self._sent.clear()
            self._turns.clear()
            self._next_turn = self._next_ahead = -math.inf

    def _take_turn(self, earliest: float, *, in_line: bool = True) -> float:
        if not in_line:  # ahead of the line: after the others held back
            turn = max(earliest, self._next_ahead)
            self._next_ahead = turn + self._gap
            return turn
        turn = max(earliest, self._next_turn)
        self._next_turn = turn + self._gap
        return turn

    def turn(self, key: Hashable, now: float, *, in_line: bool = True) -> float:
        """Seconds until ``key``'s turn; 0: it has come. A key with no turn takes the next
        free one when ``in_line`` (a poll); otherwise (a result) it needs none."""
        self._rewound(now)
        turn = self._turns.get(key)
        if turn is None:
            if not in_line:
                return 0.0
            turn = self._turns[key] = self._take_turn(now)
        return max(0.0, turn - now)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the ``in_flight`` places for as long as the request is out."""
        self._queued += 1
        try:
            await self._slots.acquire()
        finally:
            self._queued -= 1
        self._out += 1
        try:
            yield
        finally:
            self._out -= 1
            self._slots.release()

    def start(self, key: Hashable, now: float, *, in_line: bool = True) -> float:
        """The request for ``key`` goes now: 0 (counted), or the seconds until the fresh
        turn it was given because the last second already holds ``per_second`` or, for a
        request ``in_line``, one went less than half a turn ago. (A result follows its
        own status answer at once: at most ``in_flight`` such answers come together.) It
        has waited its turn already, or needs none: the fresh turn comes before the polls
        still in line, after the others held back."""
        self._rewound(now)
        while self._sent and self._sent[0] <= now - 1.0:
            self._sent.popleft()
        earliest = now
        if self._sent and in_line:
            earliest = self._sent[-1] + self._gap / 2  # never two at once
        if len(self._sent) >= self._limit:
            earliest = max(earliest, self._sent[0] + 1.0)  # the window has room
        if now >= earliest:
            self._sent.append(now)
            self._turns.pop(key, None)
            return 0.0
        turn = self._turns[key] = self._take_turn(earliest, in_line=False)
        return turn - now
