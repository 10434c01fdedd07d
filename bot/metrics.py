"""The bot's Prometheus metrics: every name in one place, and where each is counted.

Imported only when the HTTP server runs (``HTTP_LISTEN`` or webhook mode), so a bot that
long-polls without it never loads ``prometheus_client``. The core does not know about
metrics: the video service and the messenger are wrapped here (:class:`MeteredVideoService`,
:class:`MeteredMessenger`) and count what passes through them; the tracker tells
:meth:`Metrics.submitted` through its ``on_submitted`` hook, and the rate limiter tells
:meth:`Metrics.telegram_answered` about every Telegram answer. Jobs by state are read
from the ledger at each scrape.

Names (all ``warmth_``)::

    jobs{state}                            gauge, from the ledger at each scrape
    submits_total                          jobs Segmind accepted
    deliveries_total{kind=video|link}      videos (or their links) Telegram accepted
    refunds_total                          Stars refunds Telegram confirmed
    status_polls_total                     status polls sent to Segmind
    telegram_errors_total{code=429|403}    flood waits and refusals from Telegram
    segmind_errors_total{kind}             Segmind errors by class (TemporaryError, ...)
    limiter_queue_length                   requests waiting in the Telegram rate limiter
    webhook_updates_total{outcome}         accepted, duplicate, refused, malformed
    generate_to_submit_seconds             histogram: Generate pressed → Segmind accepted
    completed_to_video_seconds             histogram: COMPLETED seen → video sent
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from telegram.error import Forbidden, RetryAfter, TelegramError

from .core.errors import SegmindError
from .core.jobs import Job, JobState
from .core.options import VideoOptions
from .core.payments import Payment
from .core.ports import (
    BeforeSend,
    Ledger,
    Messenger,
    PhotoFile,
    StarCharge,
    Status,
    StatusReport,
    Submission,
    VideoService,
)

__all__ = ["CONTENT_TYPE", "MeteredMessenger", "MeteredVideoService", "Metrics"]

T = TypeVar("T")

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Seconds buckets: a submit takes a second or two after Generate (an upload first); a
#: video a few seconds after COMPLETED (download, then upload), a minute when pacing waits.
_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    """One registry per bot (not the process-wide default: tests build many bots)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.jobs = Gauge("warmth_jobs", "Jobs by state", ["state"], registry=registry)
        self.submits = Counter("warmth_submits", "Jobs Segmind accepted", registry=registry)
        self.deliveries = Counter(
            "warmth_deliveries", "Videos (or links) delivered", ["kind"], registry=registry
        )
        self.refunds = Counter(
            "warmth_refunds", "Stars refunds Telegram confirmed", registry=registry
        )
        self.status_polls = Counter(
            "warmth_status_polls", "Status polls sent to Segmind", registry=registry
        )
        self.telegram_errors = Counter(
            "warmth_telegram_errors",
            "429 and 403 answers from Telegram",
            ["code"],
            registry=registry,
        )
        self.segmind_errors = Counter(
            "warmth_segmind_errors", "Segmind errors by kind", ["kind"], registry=registry
        )
        self.limiter_queue = Gauge(
            "warmth_limiter_queue_length",
            "Requests waiting in the Telegram rate limiter",
            registry=registry,
        )
        self.webhook_updates = Counter(
            "warmth_webhook_updates", "Webhook posts by outcome", ["outcome"], registry=registry
        )
        self.generate_to_submit = Histogram(
            "warmth_generate_to_submit_seconds",
            "Seconds from Generate to Segmind accepting the job",
            buckets=_BUCKETS,
            registry=registry,
        )
        self.completed_to_video = Histogram(
            "warmth_completed_to_video_seconds",
            "Seconds from COMPLETED seen to the video sent",
            buckets=_BUCKETS,
            registry=registry,
        )
        for state in JobState:  # every state shows, 0 included
            self.jobs.labels(state=state.value)
        for code in ("429", "403"):
            self.telegram_errors.labels(code=code)
        for kind in ("video", "link"):
            self.deliveries.labels(kind=kind)

    def watch_limiter(self, backlog: Callable[[], int]) -> None:
        self.limiter_queue.set_function(lambda: float(backlog()))

    def submitted(self, job: Job) -> None:
        """The tracker recorded a request id: the tracker's ``on_submitted`` hook."""
        self.submits.inc()
        if job.generate_at is not None and job.submitted_at is not None:
            self.generate_to_submit.observe(max(0.0, job.submitted_at - job.generate_at))

    def telegram_answered(self, error: TelegramError | None) -> None:
        """Every Telegram answer that passed the rate limiter (None: success)."""
        if isinstance(error, RetryAfter):
            self.telegram_errors.labels(code="429").inc()
        elif isinstance(error, Forbidden):
            self.telegram_errors.labels(code="403").inc()

    async def render(self, ledger: Ledger) -> bytes:
        """The text a scrape gets; jobs by state read from the ledger now."""
        counts = await ledger.jobs_by_state()
        for state in JobState:
            self.jobs.labels(state=state.value).set(counts.get(state, 0))
        return generate_latest(self.registry)


class MeteredVideoService:
    """The video service, counting submits, polls and errors by kind."""

    def __init__(self, inner: VideoService, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def _counted(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except SegmindError as exc:
            self._metrics.segmind_errors.labels(kind=type(exc).__name__).inc()
            raise

    async def upload(self, data: bytes, mime_type: str = "image/jpeg") -> str:
        return await self._counted(self._inner.upload(data, mime_type))

    async def submit(self, image_url: str, options: VideoOptions) -> Submission:
        return await self._counted(self._inner.submit(image_url, options))

    async def find_request(self, image_url: str, seed: int, since: float) -> str | None:
        return await self._counted(self._inner.find_request(image_url, seed, since))

    async def status(self, request_id: str) -> StatusReport:
        self._metrics.status_polls.inc()
        return await self._counted(self._inner.status(request_id))

    async def result(self, request_id: str) -> StatusReport:
        return await self._counted(self._inner.result(request_id))

    async def download(self, url: str, destination: Path, *, max_bytes: int) -> int:
        return await self._counted(self._inner.download(url, destination, max_bytes=max_bytes))

    async def still_serves(self, url: str) -> bool:
        return await self._inner.still_serves(url)  # never raises: nothing to count


class MeteredMessenger:
    """The messenger, counting deliveries (and how long after COMPLETED) and refunds."""

    def __init__(
        self, inner: Messenger, metrics: Metrics, clock: Callable[[], float] = time.time
    ) -> None:
        self._inner = inner
        self._metrics = metrics
        self._clock = clock
        self.max_upload_bytes = inner.max_upload_bytes

    def _delivered(self, job: Job, kind: str) -> None:
        self._metrics.deliveries.labels(kind=kind).inc()
        if job.completed_at is not None:
            self._metrics.completed_to_video.observe(max(0.0, self._clock() - job.completed_at))

    async def fetch_photo(self, job: Job) -> PhotoFile:
        return await self._inner.fetch_photo(job)

    async def photo_link(self, job: Job) -> str:
        return await self._inner.photo_link(job)

    async def show_progress(self, job: Job, status: Status) -> bool:
        return await self._inner.show_progress(job, status)

    async def send_video(self, job: Job, path: Path, *, before_send: BeforeSend = None) -> str:
        file_id = await self._inner.send_video(job, path, before_send=before_send)
        self._delivered(job, "video")
        return file_id

    async def send_video_link(
        self, job: Job, url: str, expires_at: float, *, before_send: BeforeSend = None
    ) -> None:
        await self._inner.send_video_link(job, url, expires_at, before_send=before_send)
        self._delivered(job, "link")

    async def send_outcome(self, job: Job) -> None:
        await self._inner.send_outcome(job)

    async def refund_stars(self, user_id: int, charge_id: str) -> None:
        await self._inner.refund_stars(user_id, charge_id)
        self._metrics.refunds.inc()

    async def tell_refund(self, payment: Payment, job: Job | None) -> None:
        await self._inner.tell_refund(payment, job)

    async def star_payments(self, since: float) -> list[StarCharge]:
        return await self._inner.star_payments(since)
