"""The harness for stepping the core's Tracker by hand, "the arq way".

A real SQLite ledger in ``tmp_path``, the real Segmind client over a scripted
``httpx.MockTransport`` (request history included), a recording messenger, the real
Alerts — and one fake clock read by all of them. Tests call :meth:`Harness.step` and
advance the clock themselves (or let :func:`run_until_settled` do it): no background
task, no sleep.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.core.alerts import Alerts
from bot.core.jobs import Job, JobState, NewJob
from bot.core.limits import Limits, StartOutcome
from bot.core.options import VideoOptions
from bot.core.tracker import Tracker, TrackerConfig
from bot.segmind import SegmindClient
from tests.core.doubles import (
    API_KEY,
    API_URL,
    CDN_URL,
    HISTORY_URL,
    UPLOAD_URL,
    AlertLog,
    FakeClock,
    FakeRequest,
    FakeSegmindAPI,
    RecordingLedger,
    RecordingMessenger,
)

CHAT = 4242
USER = 77
LIMITS = Limits(max_active_per_user=1000, daily_per_user=0)
INTERVAL = TrackerConfig().poll_interval
#: The instance id of the harness's tracker in the ledger's leases.
OWNER = "instance-A"


@dataclass
class Harness:
    clock: FakeClock
    ledger: RecordingLedger
    segmind: FakeSegmindAPI
    client: SegmindClient
    messenger: RecordingMessenger
    alerts: AlertLog
    alerts_core: Alerts
    tracker: Tracker
    #: (job, source, target) of every transition made inside :meth:`step`.
    step_moves: list[tuple[int, JobState, JobState]] = field(default_factory=list)
    _trigger: int = 0

    def new_tracker(
        self, config: dict[str, Any] | None = None, *, seed: int = 0, **options: Any
    ) -> Tracker:
        """Another Tracker on the same ledger, fakes and clock (a restarted process, a
        second instance, one with a hook): ``config`` its TrackerConfig fields,
        ``options`` its keyword arguments (owner, pace, hooks)."""
        return Tracker(
            self.ledger,
            self.client,
            self.messenger,
            self.alerts_core,
            TrackerConfig(**(config or {})),
            clock=self.clock,
            rng=random.Random(seed),
            **options,
        )

    def configure(self, **config: Any) -> None:
        """A fresh tracker with these TrackerConfig fields (same ledger, fakes, clock)."""
        # The same instance, configured anew.
        self.tracker = self.new_tracker(config, owner=self.tracker.owner)

    # -- making jobs through the ledger's own API --------------------------------------

    async def new_job(self, options: VideoOptions | None = None, user: int = USER) -> Job:
        """A draft for a fresh photo, Generate pressed: PREPARING."""
        self._trigger += 1
        new = NewJob(
            chat_id=CHAT,
            user_id=user,
            chat_type="private",
            trigger_message_id=self._trigger,
            photo_message_id=self._trigger,
            thread_id=None,
            file_id=f"photo-{self._trigger}",
            file_unique_id=f"unique-{self._trigger}",
            file_size=len(RecordingMessenger.PHOTO),
            mime_type="image/jpeg",
        )
        draft, created = await self.ledger.create_draft(new, options or VideoOptions())
        assert created
        started = await self.ledger.start(draft.id, user, LIMITS)
        assert started.outcome is StartOutcome.STARTED
        assert started.job is not None
        assert started.job.state is JobState.PREPARING
        return started.job

    async def submitting_job(self) -> Job:
        job = await self.new_job()
        moved = await self.ledger.transition(job.id, JobState.PREPARING, JobState.SUBMITTING)
        assert moved is not None
        return moved

    async def sent_job(
        self, *, accepted: bool = True, seed: int = 4242, sent_ago: float = 0.0
    ) -> tuple[Job, FakeRequest | None]:
        """A job whose submit left ``sent_ago`` seconds ago and whose answer never came
        back (the process died around the POST): SUBMITTING with its seed, image URL and
        send time, as the tracker stores them. Segmind accepted it when ``accepted``."""
        job = await self.new_job()
        image_url = f"{CDN_URL}/assets/sent-{job.id}.jpg"
        sent_at = self.clock() - sent_ago
        moved = await self.ledger.transition(
            job.id,
            JobState.PREPARING,
            JobState.SUBMITTING,
            seed=seed,
            image_url=image_url,
            submit_sent_at=sent_at,
        )
        assert moved is not None
        if not accepted:
            return moved, None
        body = {"image_url": image_url, "quality": "540p", "duration": 5, "seed": seed}
        request = self.segmind.add_job(
            f"sent-{job.id}", image_url=image_url, payload=body, created_at=sent_at
        )
        return moved, request

    async def queued_job(self, status: str = "QUEUED", **fake: Any) -> tuple[Job, FakeRequest]:
        """A job Segmind accepted just now; Segmind will report ``status`` for it."""
        job = await self.submitting_job()
        request_id = f"known-{job.id}"
        queued = await self.ledger.transition(
            job.id,
            JobState.SUBMITTING,
            JobState.QUEUED,
            request_id=request_id,
            submitted_at=self.clock(),
        )
        assert queued is not None
        return queued, self.segmind.add_job(request_id, status, **fake)

    async def processing_job(
        self, status: str = "PROCESSING", **fake: Any
    ) -> tuple[Job, FakeRequest]:
        job, request = await self.queued_job(status, **fake)
        moved = await self.ledger.transition(
            job.id, JobState.QUEUED, JobState.PROCESSING, processing_at=self.clock()
        )
        assert moved is not None
        return moved, request

    async def completed_job(self, **fake: Any) -> tuple[Job, FakeRequest]:
        """A job whose video exists (its output URL recorded) and is not yet delivered."""
        job, request = await self.processing_job("COMPLETED", **fake)
        moved = await self.ledger.transition(
            job.id,
            JobState.PROCESSING,
            JobState.COMPLETED,
            output_url=request.video_url,
            completed_at=self.clock(),
        )
        assert moved is not None
        return moved, request

    async def finished_job(self, state: JobState, **fields: Any) -> Job:
        """A job ended in ``state`` by the ledger (the user not told yet)."""
        sources = {
            JobState.REJECTED: JobState.PREPARING,
            JobState.UNCERTAIN: JobState.SUBMITTING,
            JobState.UNDELIVERABLE: JobState.PREPARING,
            JobState.FAILED: JobState.QUEUED,
            JobState.EXPIRED: JobState.QUEUED,
            JobState.TIMED_OUT: JobState.QUEUED,
        }
        source = sources[state]
        if source is JobState.PREPARING:
            job = await self.new_job()
        elif source is JobState.SUBMITTING:
            job = await self.submitting_job()
        else:
            job, _ = await self.queued_job()
        ended = await self.ledger.transition(job.id, source, state, **fields)
        assert ended is not None
        assert ended.notified_at is None
        return ended

    # -- driving --------------------------------------------------------------------------

    async def job(self, job_id: int) -> Job:
        job = await self.ledger.get(job_id)
        assert job is not None
        return job

    async def step(self, job_id: int) -> float | None:
        """One ``Tracker.step`` on the job as the ledger has it now, claimed for the
        tracker first (as its task does; a finished job is stepped as read)."""
        before = len(self.ledger.moves)
        job = await self.tracker.claim(job_id) or await self.job(job_id)
        delay = await self.tracker.step(job)
        self.step_moves.extend(self.ledger.moves[before:])
        return delay

    async def column(self, job_id: int, name: str) -> Any:
        """A ledger column the Job does not carry (e.g. ``processing_at``)."""
        assert name.isidentifier()
        async with self.ledger.db.execute(f"SELECT {name} FROM jobs WHERE id=?", (job_id,)) as cur:
            row = await cur.fetchone()
        assert row is not None
        return row[0]

    def moved(self, job_id: int) -> list[tuple[JobState, JobState]]:
        """The transitions steps made for this job, in order."""
        return [(source, target) for jid, source, target in self.step_moves if jid == job_id]


async def run_until_settled(
    h: Harness, job_id: int, *, max_steps: int = 100, until: JobState | None = None
) -> list[float]:
    """Step the job, advancing the fake clock by each returned delay, until a step
    returns None (or the job reaches ``until``); returns the delays. Fails if unbounded."""
    delays: list[float] = []
    for _ in range(max_steps):
        delay = await h.step(job_id)
        if delay is None:
            return delays
        assert delay >= 0, delay
        delays.append(delay)
        if until is not None and (await h.job(job_id)).state is until:
            return delays
        h.clock.advance(delay)
    raise AssertionError(f"job {job_id} not settled after {max_steps} steps: {delays[-5:]}")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def h(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Harness]:
    ledger = RecordingLedger(tmp_path / "ledger.sqlite3", clock=clock)
    await ledger.open()
    segmind = FakeSegmindAPI(clock)
    http = httpx.AsyncClient(transport=segmind.transport)
    client = SegmindClient(
        http,
        api_key=API_KEY,
        api_url=API_URL,
        upload_url=UPLOAD_URL,
        history_url=HISTORY_URL,
        clock=clock,
    )
    messenger = RecordingMessenger()
    alert_log = AlertLog()
    alerts = Alerts(ledger, alert_log, clock)
    harness = Harness(
        clock=clock,
        ledger=ledger,
        segmind=segmind,
        client=client,
        messenger=messenger,
        alerts=alert_log,
        alerts_core=alerts,
        tracker=Tracker(
            ledger,
            client,
            messenger,
            alerts,
            TrackerConfig(),
            clock=clock,
            rng=random.Random(0),
            owner=OWNER,
        ),
    )
    try:
        yield harness
    finally:
        await http.aclose()
        await ledger.close()
