"""What a job's status message says, and how coarse its clock is.

The status message is the one that showed the job's options keyboard
(``Job.keyboard_message_id``, in the ledger, so a restart edits the same message). It
says: waiting for its turn → being made (time so far, and how long such videos usually
take) → being sent → a one-line summary once the video is there.

Each edit is a request Telegram counts against the chat (about one a second; twenty a
minute in a group), and frequent progress edits are how bots earn long flood bans. So the
clock it shows is coarse and only moves forward: ten-second steps in the first minute,
whole minutes up to ten, then five-minute steps (in groups whole minutes from the start).
A status is shown only when it differs from the last one shown, and every part of it
(stage, time shown) only grows, so a job's edits are bounded by
:func:`max_status_edits` whatever its polls do.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "Progress",
    "Status",
    "coarse_elapsed",
    "max_status_edits",
    "status_for",
    "usual_seconds",
]

#: The shown clock's steps: (shown up to this many seconds, step in seconds).
_PRIVATE_STEPS = ((60, 10), (600, 60), (None, 300))
_GROUP_STEPS = ((600, 60), (None, 300))


class Progress(StrEnum):
    """The stages of a job's status message, in the order they are shown."""

    QUEUED = "queued"  #: accepted by the video service, waiting for its turn
    PROCESSING = "processing"  #: being made
    SENDING = "sending"  #: made; downloading it and uploading it to the chat
    #: The video (or its link) was sent: the status message becomes a summary.
    DONE = "done"


@dataclass(frozen=True)
class Status:
    """One rendering of the status message; equal statuses are never shown twice."""

    progress: Progress
    #: Seconds since the submit, coarse (see :func:`coarse_elapsed`); None: not shown.
    #: For DONE: seconds from Generate to the video.
    elapsed: int | None = None
    #: How long such videos usually take, learnt from the ledger; None: not known yet.
    usual: int | None = None


def coarse_elapsed(seconds: float, *, group: bool = False) -> int:
    """The time shown for ``seconds`` since the submit, rounded down to its step."""
    seconds = max(0.0, seconds)
    for limit, step in _GROUP_STEPS if group else _PRIVATE_STEPS:
        if limit is None or seconds < limit:
            return int(seconds // step) * step
    raise AssertionError("unreachable")


def max_status_edits(deadline_seconds: float, *, group: bool = False) -> int:
    """An upper bound on the edits of one job's status message: one per stage, plus one
    per step of the shown clock until the job's deadline, plus the final summary."""
    shown = {coarse_elapsed(s, group=group) for s in range(int(deadline_seconds) + 1)}
    return len(Progress) + len(shown)


def usual_seconds(run_seconds: list[float], *, min_samples: int = 3) -> int | None:
    """How long recent jobs like this took (their median), rounded to ten seconds; None
    with fewer than ``min_samples`` (a guess from one or two jobs would mislead)."""
    samples = sorted(s for s in run_seconds if s > 0)
    if len(samples) < min_samples:
        return None
    middle = len(samples) // 2
    median = samples[middle] if len(samples) % 2 else (samples[middle - 1] + samples[middle]) / 2
    return max(10, int(round(median / 10.0)) * 10)


def status_for(
    progress: Progress,
    *,
    elapsed: float | None,
    usual: int | None,
    group: bool,
) -> Status | None:
    """The status to show at this stage, or None when this stage is not shown.

    Groups skip SENDING: a group allows a message every three seconds, and an edit just
    before the video would hold the video up by that much.
    """
    if progress is Progress.SENDING and group:
        return None
    if progress is Progress.DONE:
        # The summary says how long it took from Generate: exact, it is shown once.
        return Status(progress, None if elapsed is None else int(round(elapsed)))
    shown = None
    if elapsed is not None and progress is not Progress.SENDING:
        shown = coarse_elapsed(elapsed, group=group) or None  # "0 s so far" says nothing
    return Status(progress, shown, None if progress is Progress.SENDING else usual)
