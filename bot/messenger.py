"""What the tracker needs from a chat platform, without knowing which one.

The Telegram implementation is :mod:`bot.telegram_messenger`; tests of the domain can
hand the tracker anything with these methods. Errors are the three things the tracker
can act on: the chat is gone for good, the photo cannot be had, or try again later.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Protocol

from .jobs import Job

__all__ = [
    "Progress",
    "Messenger",
    "MessengerError",
    "ChatUnreachable",
    "PhotoUnavailable",
    "SendFailed",
    "VideoRefused",
]


class Progress(StrEnum):
    """The stages a job's status message shows; it changes only when the stage does."""

    QUEUED = "queued"
    PROCESSING = "processing"
    #: The video (or its link) was sent: the status message has done its job.
    DONE = "done"


class MessengerError(Exception):
    pass


class ChatUnreachable(MessengerError):
    """The bot was blocked, kicked or the chat is gone: stop sending there (no retries)."""


class PhotoUnavailable(MessengerError):
    """The photo cannot be downloaded; ``too_big`` when over the platform's limit."""

    def __init__(self, message: str, *, too_big: bool = False) -> None:
        super().__init__(message)
        self.too_big = too_big


class SendFailed(MessengerError):
    """A temporary failure (flood control, network): try again, not before ``retry_after``."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class VideoRefused(MessengerError):
    """The platform will not take this video file; its link must do."""


class Messenger(Protocol):
    #: Largest video the platform accepts as an upload; above it the link is sent.
    max_upload_bytes: int

    async def fetch_photo(self, job: Job) -> bytes:
        """The photo's bytes (for re-hosting)."""

    async def photo_link(self, job: Job) -> str:
        """A URL of the photo that a third party can fetch (may embed a secret)."""

    async def show_progress(self, job: Job, progress: Progress) -> None:
        """Best effort: update the job's status message."""

    async def send_video(self, job: Job, path: Path) -> str:
        """Send the video file as a reply to the photo; returns the platform's file id."""

    async def send_video_link(self, job: Job, url: str, expires_at: float) -> None:
        """Send the video's link when it is too big to upload."""

    async def send_outcome(self, job: Job) -> None:
        """Tell the user how a job that did not deliver a video ended, and what to do."""

    async def alert_admins(self, text: str) -> None:
        """Best effort: a private message to every operator."""
