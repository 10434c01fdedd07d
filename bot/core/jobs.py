"""A job's life: its states, the transitions allowed between them, and its ledger row.

Every paid step is a recorded transition, so a crash anywhere resumes from the ledger::

    DRAFT ──Generate (free)──────────────────────┐
      │ ▲                                        ▼
      │ └─change options─ AWAITING_PAYMENT ──paid──▶ PREPARING
      └──Generate (priced)──▲

    PREPARING ──photo re-hosted──▶ SUBMITTING ──request_id (answer or history)──▶ QUEUED
                          │   ▲                            │  └─not found─▶ UNCERTAIN
                          │   └────not sent, retry─────────┤
                          └──▶ REJECTED ◀──refused─────────┘
    QUEUED ──▶ PROCESSING ──▶ COMPLETED ──sent──▶ DELIVERED
      │             │              ▲  └──▶ EXPIRED
      ├─────────────┼──────────────┘  (done between two polls)
      └─────────────┴──▶ FAILED | EXPIRED | TIMED_OUT

Any unfinished job may also end UNDELIVERABLE (the chat blocked or removed the bot).
A paid job that ends in any terminal state but DELIVERED owes its payment back: the
ledger records the refund as due in the same transaction that ends the job.
A terminal job whose user has not been told yet (``notified_at`` empty) is still
"unfinished" for the tracker: the outcome message is part of the promise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from .options import VideoOptions

__all__ = [
    "JobState",
    "Reason",
    "Job",
    "NewJob",
    "ACTIVE_STATES",
    "TERMINAL_STATES",
    "RETRYABLE",
    "can_transition",
    "offers_retry",
]


class JobState(StrEnum):
    #: Keyboard shown; options may change; nothing paid.
    DRAFT = "draft"
    #: Generate pressed with a price: options frozen, a Stars invoice sent; nothing paid
    #: yet. Changing the options goes back to DRAFT and voids the invoice.
    AWAITING_PAYMENT = "awaiting_payment"
    #: Generate pressed (the user's consent); the photo is being re-hosted. Safe to redo.
    PREPARING = "preparing"
    #: The submit is about to leave or has left (its seed, image URL and time stored).
    #: Found here after a crash or a lost answer: looked up in Segmind's request history.
    SUBMITTING = "submitting"
    #: Segmind accepted the job (``request_id`` stored) and has not started it.
    QUEUED = "queued"
    #: Segmind is generating the video.
    PROCESSING = "processing"
    #: The video exists (``output_url`` stored) and is being delivered.
    COMPLETED = "completed"
    #: Telegram accepted the video (or its link). Terminal.
    DELIVERED = "delivered"
    #: Segmind reported FAILED (content-policy blocks included). Terminal.
    FAILED = "failed"
    #: Segmind no longer knows the request or its video (results live 1 hour). Terminal.
    EXPIRED = "expired"
    #: Unfinished at the deadline (``JOB_DEADLINE_MINUTES``). Terminal.
    TIMED_OUT = "timed_out"
    #: Segmind refused the submit, or the photo could not be used; nothing was paid. Terminal.
    REJECTED = "rejected"
    #: The submit may have reached Segmind but no answer was recorded, and the request
    #: history did not show it either. Never resubmitted on its own; the user is offered
    #: a new, explicit "Try again". Terminal.
    UNCERTAIN = "uncertain"
    #: The chat blocked or removed the bot; nothing more is sent there. Terminal.
    UNDELIVERABLE = "undeliverable"


class Reason(StrEnum):
    """Why a job ended badly; the texts module turns each into words for the user."""

    CONTENT = "content"  #: Segmind FAILED the job (often the photo, e.g. a safety block)
    BAD_INPUT = "bad_input"  #: Segmind answered 400 to the submit
    SERVICE_UNAVAILABLE = "service_unavailable"  #: key rejected or credits exhausted
    BUSY = "busy"  #: rate limited or server errors
    PHOTO_TOO_BIG = "photo_too_big"  #: Telegram will not hand out files over 20 MB
    PHOTO_UNAVAILABLE = "photo_unavailable"  #: the photo could not be downloaded
    PHOTO_UNUSABLE = "photo_unusable"  #: not a decodable image, or too small for a video
    CONNECTION_LOST = "connection_lost"  #: the submit's answer never arrived
    DEADLINE = "deadline"  #: the job outlived JOB_DEADLINE_MINUTES
    RESULT_EXPIRED = "result_expired"  #: Segmind forgot the request or its video
    CHAT_GONE = "chat_gone"  #: the bot was blocked or removed


ACTIVE_STATES = frozenset(
    {
        JobState.PREPARING,
        JobState.SUBMITTING,
        JobState.QUEUED,
        JobState.PROCESSING,
        JobState.COMPLETED,
    }
)
TERMINAL_STATES = frozenset(
    {
        JobState.DELIVERED,
        JobState.FAILED,
        JobState.EXPIRED,
        JobState.TIMED_OUT,
        JobState.REJECTED,
        JobState.UNCERTAIN,
        JobState.UNDELIVERABLE,
    }
)
_S = JobState
_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    _S.DRAFT: frozenset({_S.PREPARING, _S.AWAITING_PAYMENT}),
    _S.AWAITING_PAYMENT: frozenset({_S.DRAFT, _S.PREPARING}),
    _S.PREPARING: frozenset({_S.SUBMITTING, _S.REJECTED}),
    _S.SUBMITTING: frozenset({_S.QUEUED, _S.PREPARING, _S.REJECTED, _S.UNCERTAIN}),
    _S.QUEUED: frozenset({_S.PROCESSING, _S.COMPLETED, _S.FAILED, _S.EXPIRED, _S.TIMED_OUT}),
    _S.PROCESSING: frozenset({_S.COMPLETED, _S.FAILED, _S.EXPIRED, _S.TIMED_OUT}),
    _S.COMPLETED: frozenset({_S.DELIVERED, _S.EXPIRED}),
}


#: Reasons after which pressing "Try again" makes sense: nothing was made, and waiting or
#: sending the same photo again may work.
RETRYABLE = frozenset({Reason.BUSY, Reason.CONNECTION_LOST, Reason.PHOTO_UNAVAILABLE})


def can_transition(source: JobState, target: JobState) -> bool:
    """The one rule for which state may follow which."""
    if target is JobState.UNDELIVERABLE:
        return source in ACTIVE_STATES
    return target in _TRANSITIONS.get(source, frozenset())


@dataclass(frozen=True)
class NewJob:
    """What a photo (plus the request for it) brings: enough to show a keyboard."""

    chat_id: int
    user_id: int
    chat_type: str
    #: The message that asked (the photo, or ``/warmth`` replying to it): the dedupe key.
    trigger_message_id: int
    #: The photo's message: the keyboard and the video reply to it.
    photo_message_id: int
    thread_id: int | None
    file_id: str
    file_unique_id: str
    file_size: int | None
    mime_type: str
    #: The asker's language tag (``pt_BR``…), kept for every message sent about the job
    #: later. Keyword-only, so it may follow the fields without defaults.
    language: str = field(default="en", kw_only=True)


@dataclass(frozen=True)
class Job(NewJob):
    """A row of the ledger: the photo it came from, the options, and how far it got."""

    id: int
    options: VideoOptions
    state: JobState
    reason: Reason | None
    keyboard_message_id: int | None
    request_id: str | None
    output_url: str | None
    video_file_id: str | None
    retry_of: int | None
    poll_count: int
    created_at: float
    generate_at: float | None
    submitted_at: float | None
    completed_at: float | None
    finished_at: float | None
    notified_at: float | None
    #: Stars asked for this job (frozen when its invoice went out); 0 = free.
    price_stars: int = 0
    #: Which invoice of this job pays for it: changing options voids older invoices.
    invoice_no: int = 0
    invoice_message_id: int | None = None
    #: The payment that started it (``telegram_payment_charge_id``); None = free.
    charge_id: str | None = None
    #: The photo's URL as the submit sent it (stored with SUBMITTING, before the POST).
    #: With ``options.seed`` it names the request in Segmind's request history.
    image_url: str | None = None
    #: When the submit left (stored with SUBMITTING): the request-history lookup of a
    #: submit whose answer was lost runs for a while from here.
    submit_sent_at: float | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def needs_tracking(self) -> bool:
        """Work is left: an active state, or an outcome the user has not heard yet."""
        return self.state in ACTIVE_STATES or (self.is_terminal and self.notified_at is None)

    @property
    def short_id(self) -> str:
        return f"J{self.id}"


def offers_retry(job: Job) -> bool:
    """Whether the outcome message carries a "Try again" button (a new, explicit consent)."""
    return job.state is JobState.UNCERTAIN or (
        job.state is JobState.REJECTED and job.reason in RETRYABLE
    )
