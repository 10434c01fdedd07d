"""What the core needs from the outside world, as Protocols: a ledger, a video service,
a chat platform. The tracker, alerts and statistics are typed against these only.

Adapters implement them: :mod:`bot.storage` (the ledger), :mod:`bot.segmind` (the video
service), :mod:`bot.telegram.messenger` (the chat). Tests of the core hand the tracker a
real SQLite ledger, the real Segmind client over ``httpx.MockTransport`` and a recording
messenger. The errors each port raises are drawn in :mod:`bot.core.errors`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeAlias

from .jobs import Job, JobState, NewJob
from .leases import Lease
from .limits import Limits, StartResult
from .options import VideoOptions
from .payments import NewPayment, Payment, PaymentOutcome, PreCheckout
from .progress import Progress, Status
from .users import UserPreferences

#: What a messenger awaits right before a message leaves, after any wait for the chat's
#: pace; raising stops the send (a job's lease confirmed, :class:`Messenger`).
BeforeSend: TypeAlias = Callable[[], Awaitable[None]] | None

__all__ = [
    "BeforeSend",
    "HistoryPage",
    "UPDATE_CLAIM_SECONDS",
    "Ledger",
    "Messenger",
    "PhotoFile",
    "Progress",
    "RunSeconds",
    "StarCharge",
    "Status",
    "StatusReport",
    "StoredUpdate",
    "Submission",
    "VideoService",
]


# -- the ledger -----------------------------------------------------------------------

#: How long a claimed update id is remembered: Telegram gives up retrying long before.
UPDATE_CLAIM_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class StoredUpdate:
    """A Telegram update the inbox kept, taken to be handled again: its JSON as received,
    and how many times it has been taken so far (its receipt counts as the first)."""

    update_id: int
    body: str
    attempts: int


@dataclass(frozen=True)
class RunSeconds:
    """Seconds recent jobs took: submit → COMPLETED, and PROCESSING seen → COMPLETED."""

    total: list[float]
    processing: list[float]


@dataclass(frozen=True)
class HistoryPage:
    """One page of a user's started jobs, newest first, and whether more lie either side."""

    jobs: list[Job]
    has_older: bool
    has_newer: bool


class Ledger(Protocol):
    """The truth about every job: state changes are compare-and-set, so a re-delivered
    update or a second task can never move a job twice. Times are Unix seconds."""

    async def open(self) -> None:
        """Open and migrate to the current schema."""

    async def close(self) -> None: ...

    async def create_draft(
        self, new: NewJob, options: VideoOptions, now: float | None = None
    ) -> tuple[Job, bool]:
        """A draft for the photo unless the asking message has one; (job, created)."""

    async def set_keyboard_message(self, job_id: int, message_id: int) -> None:
        """Remember which message shows this job's keyboard, then its status."""

    async def update_options(self, job_id: int, options: VideoOptions) -> Job | None:
        """Change a draft's options; None when the job is gone or no longer a draft."""

    async def count_started_since(self, user_id: int, since: float) -> int:
        """Jobs a user started since ``since``; refused submits don't count."""

    async def start(
        self,
        job_id: int,
        user_id: int,
        limits: Limits,
        now: float | None = None,
        *,
        price: int = 0,
        free_videos: int = 0,
    ) -> StartResult:
        """Generate pressed: DRAFT → PREPARING (free) or AWAITING_PAYMENT (INVOICE) once,
        within the user's limits."""

    async def start_retry(
        self,
        old_job_id: int,
        user_id: int,
        limits: Limits,
        status_message_id: int | None,
        now: float | None = None,
        *,
        price: int = 0,
        free_videos: int = 0,
    ) -> StartResult:
        """ "Try again" pressed: one new job copying an ended one, however often pressed."""

    async def start_again(
        self,
        old_job_id: int,
        user_id: int,
        limits: Limits,
        now: float | None = None,
        *,
        price: int = 0,
        free_videos: int = 0,
    ) -> StartResult:
        """ "Again" under a delivered video: one new job with the same photo, options and
        re-hosted image URL (a candidate, checked before use) and a new seed, however often
        pressed or re-delivered; priced like any other (INVOICE). A second press finds the
        first one's job (ALREADY_STARTED, or AWAITING_PAYMENT while its invoice is out)."""

    async def transition(
        self,
        job_id: int,
        source: JobState,
        target: JobState,
        *,
        lease: Lease | None = None,
        **fields: Any,
    ) -> Job | None:
        """Compare-and-set ``source`` → ``target``; None if the job was not in ``source``.

        With ``lease`` the write is fenced: it happens only while ``lease.owner`` holds
        the job's lease (not lapsed), extends it, and raises
        :class:`~bot.core.leases.LeaseLost` (nothing written) when it is not held.
        Setting ``notified_at`` lets go of the lease: the job needs no driver any more."""

    async def mark_notified(
        self, job_id: int, now: float | None = None, *, lease: Lease | None = None
    ) -> None:
        """The user has heard the outcome: the job leaves the tracker for good (and its
        lease is let go). Fenced with ``lease``, as :meth:`transition`."""

    async def get(self, job_id: int) -> Job | None: ...

    async def unfinished(self) -> list[Job]:
        """Jobs the tracker must (re)drive: active, or ended but not yet told."""

    async def recent(self, limit: int = 10) -> list[Job]:
        """The latest started jobs, newest first."""

    async def count_active(self) -> int: ...

    async def history(
        self,
        user_id: int,
        limit: int = 10,
        *,
        before_id: int | None = None,
        after_id: int | None = None,
        chat_id: int | None = None,
    ) -> HistoryPage:
        """A user's started jobs (Generate pressed or paid), newest first: the newest
        ``limit``, or those just older than ``before_id`` / just newer than ``after_id``;
        only those of ``chat_id`` when given."""

    async def delivered_videos(self, user_id: int, limit: int = 20) -> list[Job]:
        """A user's delivered jobs that have a Telegram video file id, newest first."""

    async def started_since(self, since: float) -> list[Job]: ...

    async def run_seconds(self, quality: str, duration: int, limit: int = 50) -> RunSeconds:
        """How long the video service took for recent jobs like this one."""

    async def alert_state(self, kind: str) -> tuple[bool, float] | None:
        """(open, last sent at) of an operator alert, None when never raised."""

    async def save_alert_state(self, kind: str, active: bool, last_sent_at: float) -> None: ...

    # Leases: which instance drives a job (see bot.core.leases)

    async def claim_job(self, job_id: int, lease: Lease, now: float | None = None) -> Job | None:
        """Claim (or extend) the lease of one unfinished job unless another instance
        holds it unlapsed; the job as it is now, or None (held elsewhere, finished, gone)."""

    async def claim_jobs(self, lease: Lease, limit: int, now: float | None = None) -> list[Job]:
        """Claim up to ``limit`` unfinished jobs nobody holds (never claimed, released,
        or lapsed), oldest first; concurrent callers never get the same job."""

    async def renew_leases(self, lease: Lease, now: float | None = None) -> list[int]:
        """Extend every unlapsed lease ``lease.owner`` holds on an unfinished job, in one
        statement; the ids of the jobs it still holds."""

    async def hold_job(
        self, job_id: int, state: JobState, lease: Lease, now: float | None = None
    ) -> bool:
        """Right before something goes out for a job: True, with the lease extended,
        while ``lease.owner`` holds it unlapsed and the job is still in ``state``."""

    async def release_leases(self, owner: str) -> None:
        """A clean stop: every job lease of ``owner`` is let go, for others to claim now."""

    async def claim_refunds(self, lease: Lease, now: float, limit: int = 10) -> list[Payment]:
        """As :meth:`refunds_to_work`, claimed for ``lease.owner`` (rows another instance
        holds unlapsed are left out): one instance at a time works each refund."""

    async def release_refunds(self, owner: str) -> None:
        """A clean stop: every refund claim of ``owner`` is let go."""

    # Telegram Stars (see bot.core.payments for the rules)

    async def set_invoice_message(self, job_id: int, message_id: int) -> None: ...

    async def free_videos_used(self, user_id: int) -> int:
        """Free jobs a user started that made (or may still make) a video."""

    async def reopen_draft(self, job_id: int, user_id: int) -> Job | None:
        """AWAITING_PAYMENT → DRAFT ("change options"); the invoice out is void."""

    async def check_payment(
        self, payload: str, user_id: int, amount: int, limits: Limits, now: float | None = None
    ) -> PreCheckout:
        """Pre-checkout: may this user pay this amount for this invoice now?"""

    async def record_payment(
        self, new: NewPayment, now: float | None = None
    ) -> tuple[PaymentOutcome, Payment, Job | None]:
        """Once per charge id, in the transaction that starts its job (or owes it back)."""

    async def payment(self, charge_id: str) -> Payment | None: ...

    async def payments_of(self, user_id: int, limit: int = 10) -> list[Payment]: ...

    async def refunds_to_work(self, now: float, limit: int = 50) -> list[Payment]:
        """Refunds due whose next attempt has come, and confirmed ones not yet told."""

    async def next_refund_at(self) -> float | None: ...

    # With ``lease`` (a claim from claim_refunds) these three are fenced like a job's
    # transition: LeaseLost, nothing written, when the claim is no longer held. A failed
    # attempt and the payer told let go of the claim.

    async def refund_confirmed(
        self, charge_id: str, now: float | None = None, *, lease: Lease | None = None
    ) -> None: ...

    async def refund_failed(
        self, charge_id: str, retry_at: float, *, lease: Lease | None = None
    ) -> None: ...

    async def refund_told(
        self, charge_id: str, now: float | None = None, *, lease: Lease | None = None
    ) -> None: ...

    async def request_refund(self, charge_id: str, now: float | None = None) -> Payment | None:
        """An operator's refund: owed back unless it already is; None if unknown."""

    async def stars_since(self, since: float) -> tuple[int, int]:
        """(Stars taken, Stars refunded) by payments made since ``since``."""

    async def refunds_due_before(self, before: float) -> list[Payment]:
        """Refunds still due that became due before ``before`` (stuck ones)."""

    # Webhook mode and operations

    async def receive_update(self, update_id: int, body: str, lease: Lease, now: float) -> bool:
        """Claim this Telegram ``update_id`` and store its JSON ``body``, held by
        ``lease.owner`` (one insert); True the first time (by any instance sharing the
        ledger), False for a retried or re-routed copy, which stores nothing. Handled
        updates (and given-up ones) older than :data:`UPDATE_CLAIM_SECONDS` may be
        forgotten."""

    async def updates_handled(self, update_ids: Sequence[int], now: float) -> None:
        """The handlers are done with these updates (one statement): never taken again."""

    async def renew_update_leases(self, lease: Lease, now: float) -> int:
        """Extend the hold of ``lease.owner`` on every update it has not finished handling
        (one statement); how many it holds."""

    async def claim_stranded_updates(
        self, lease: Lease, now: float, *, max_attempts: int, limit: int
    ) -> list[StoredUpdate]:
        """Up to ``limit`` stored updates not handled whose holder let go or lapsed (it
        died mid-handling), taken fewer than ``max_attempts`` times, oldest first: now
        held by ``lease.owner``, their attempts counted. Concurrent callers never get
        the same update."""

    async def jobs_by_state(self) -> dict[JobState, int]:
        """How many jobs are in each state (states with none may be left out)."""

    # What the bot remembers of each user

    async def user_preferences(self, user_id: int) -> UserPreferences:
        """The user's chosen language and last options (empty for a user never seen)."""

    async def set_language(self, user_id: int, language: str, now: float | None = None) -> None:
        """Remember the language the user chose with /language."""

    async def remember_options(
        self, user_id: int, options: VideoOptions, now: float | None = None
    ) -> None:
        """Remember the quality, duration and style the user just chose (not the seed)."""


# -- the video service ----------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    """A submit's answer: the ``request_id`` is all the bot needs to find the job again."""

    request_id: str


@dataclass(frozen=True)
class StatusReport:
    """One poll's answer. ``output_url`` only with the final body of a COMPLETED job."""

    status: str  #: QUEUED | PROCESSING | COMPLETED | FAILED
    error: str | None = None
    output_url: str | None = None


class VideoService(Protocol):
    """Segmind's async API. It has no idempotency key and no cancel."""

    async def upload(self, data: bytes, mime_type: str = "image/jpeg") -> str:
        """Re-host an image; returns a URL the service can fetch."""

    async def submit(self, image_url: str, options: VideoOptions) -> Submission:
        """Start one paid job: never call twice for one job. ``options.seed`` is required
        (with ``image_url`` it names the request in the history)."""

    async def find_request(self, image_url: str, seed: int, since: float) -> str | None:
        """The ``request_id`` of the account's request sent since ``since`` (Unix seconds)
        with this ``image_url`` and ``seed``, from the service's request history; None
        when the history does not (yet) list it."""

    async def status(self, request_id: str) -> StatusReport: ...

    async def result(self, request_id: str) -> StatusReport:
        """The final body; for COMPLETED it carries the video URL."""

    async def download(self, url: str, destination: Path, *, max_bytes: int) -> int:
        """Stream the video to ``destination``; its size. TooLarge past ``max_bytes``."""

    async def still_serves(self, url: str) -> bool:
        """Whether an image re-hosted earlier is still served at ``url`` (a cheap request;
        any doubt is False, and the photo is re-hosted)."""


# -- the chat platform ----------------------------------------------------------------


@dataclass(frozen=True)
class StarCharge:
    """One incoming Stars payment as the platform lists it (for reconciliation)."""

    charge_id: str
    user_id: int | None
    amount: int
    date: float


@dataclass(frozen=True)
class PhotoFile:
    """A photo ready for the video service, and its media type."""

    data: bytes
    mime_type: str


class Messenger(Protocol):
    """What the tracker needs from a chat platform, without knowing which one."""

    #: Largest video the platform accepts as an upload; above it the link is sent.
    max_upload_bytes: int

    async def fetch_photo(self, job: Job) -> PhotoFile:
        """The photo prepared for the video service (for re-hosting): PhotoUnusable when
        it is no image a video can be made from."""

    async def photo_link(self, job: Job) -> str:
        """A URL of the photo that a third party can fetch (may embed a secret)."""

    async def show_progress(self, job: Job, status: Status) -> bool:
        """Best effort: make the job's status message show ``status`` (DONE: its
        one-line summary). False when it was skipped for the chat's pace, so the next
        step tries again; True when shown, unchanged, or there is nothing to edit."""

    async def send_video(self, job: Job, path: Path, *, before_send: BeforeSend = None) -> str:
        """Send the video file as a reply to the photo; returns the platform's file id.
        ``before_send`` is awaited right before the request leaves, after any wait for
        the chat's pace; if it raises, nothing is sent and that error comes out."""

    async def send_video_link(
        self, job: Job, url: str, expires_at: float, *, before_send: BeforeSend = None
    ) -> None:
        """Send the video's link when it is too big to upload (``before_send`` as for
        :meth:`send_video`)."""

    async def send_outcome(self, job: Job) -> None:
        """Tell the user how a job that did not deliver a video ended, and what to do."""

    async def refund_stars(self, user_id: int, charge_id: str) -> None:
        """Give a Stars payment back in full; AlreadyRefunded if it was (then it is done)."""

    async def tell_refund(self, payment: Payment, job: Job | None) -> None:
        """Tell the payer the Stars went back, and why."""

    async def star_payments(self, since: float) -> list[StarCharge]:
        """Stars payments the platform lists for the bot since ``since`` (newest first)."""
