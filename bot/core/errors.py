"""The errors the core acts on, one tree per port; adapters raise them, the tracker catches.

They live in the core, not beside the adapters, so the tracker can catch the branch it
can act on without importing HTTP or Telegram code. Video service (``VideoService``,
implemented by :mod:`bot.segmind`)::

    SegmindError
    ├── TemporaryError          wait and try again (429 with retry_after, 5xx, timeouts,
    │                           network); ``maybe_sent`` says whether a submit may have
    │                           reached the service (then it must not be repeated blindly)
    ├── OperatorError           the operator must act; the user cannot help
    │   ├── KeyRejected         401 / 403
    │   └── OutOfCredits        406
    ├── InputRejected           400: the parameters or the photo were refused
    ├── NotFound                404: unknown or expired request (results live 1 hour)
    ├── JobFailed               422 FAILED (content-policy blocks too); ``detail`` is the
    │                           provider's text: log it, never show it
    ├── BadResponse             a 2xx body we cannot read
    └── TooLarge                the video is larger than the caller can take

Chat platform (``Messenger``, implemented by :mod:`bot.telegram.messenger`)::

    MessengerError
    ├── ChatUnreachable         blocked, kicked, chat gone: stop sending there
    ├── PhotoUnavailable        the photo cannot be downloaded (``too_big`` over the limit)
    ├── PhotoUnusable           the photo is no image a video can be made from
    ├── SendFailed              flood control or network: retry, not before ``retry_after``
    ├── VideoRefused            the platform will not take this file; its link must do
    ├── AlreadyRefunded         the payment was refunded before: the refund is done
    └── RefundRefused           the platform will not refund this charge (unknown charge)

Ledger (``Ledger``, implemented by :mod:`bot.storage`, SQLite or PostgreSQL)::

    LedgerError                 the ledger cannot answer now; the same call may work a
    │                           minute later (``str()`` says why, in an operator's words)
    ├── LedgerWriteFailed       a write that did not happen (disk full, read-only file,
    │                           database unreachable): nothing was changed
    └── LedgerReadFailed        a read that got no answer (database unreachable, I/O error)
"""

from __future__ import annotations

__all__ = [
    "SegmindError",
    "TemporaryError",
    "OperatorError",
    "KeyRejected",
    "OutOfCredits",
    "InputRejected",
    "NotFound",
    "JobFailed",
    "BadResponse",
    "TooLarge",
    "MessengerError",
    "ChatUnreachable",
    "PhotoUnavailable",
    "PhotoUnusable",
    "SendFailed",
    "VideoRefused",
    "AlreadyRefunded",
    "RefundRefused",
    "InvalidTransition",
    "LedgerError",
    "LedgerWriteFailed",
    "LedgerReadFailed",
]


class SegmindError(Exception):
    """Base of everything the video service raises."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TemporaryError(SegmindError):
    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        maybe_sent: bool = True,
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after
        self.maybe_sent = maybe_sent


class OperatorError(SegmindError):
    pass


class KeyRejected(OperatorError):
    pass


class OutOfCredits(OperatorError):
    pass


class InputRejected(SegmindError):
    pass


class NotFound(SegmindError):
    pass


class JobFailed(SegmindError):
    def __init__(self, detail: str) -> None:
        super().__init__("job failed", status=422)
        self.detail = detail


class BadResponse(SegmindError):
    pass


class TooLarge(SegmindError):
    """The video is larger than the caller can take; ``size`` when the server said."""

    def __init__(self, size: int | None) -> None:
        super().__init__("video too large")
        self.size = size


class MessengerError(Exception):
    pass


class ChatUnreachable(MessengerError):
    """The bot was blocked, kicked or the chat is gone: stop sending there (no retries)."""


class PhotoUnavailable(MessengerError):
    """The photo cannot be downloaded; ``too_big`` when over the platform's limit."""

    def __init__(self, message: str, *, too_big: bool = False) -> None:
        super().__init__(message)
        self.too_big = too_big


class PhotoUnusable(MessengerError):
    """The file is not a raster image that can be decoded, or too small to make a video."""


class SendFailed(MessengerError):
    """A temporary failure (flood control, network): try again, not before ``retry_after``."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class VideoRefused(MessengerError):
    """The platform will not take this video file; its link must do."""


class AlreadyRefunded(MessengerError):
    """Telegram says the charge was refunded already (perhaps by our lost attempt)."""


class RefundRefused(MessengerError):
    """Telegram will not refund this charge (e.g. CHARGE_NOT_FOUND): operators must look."""


class InvalidTransition(RuntimeError):
    """A bug: code asked for a transition the state machine does not allow."""


class LedgerError(Exception):
    """The ledger cannot answer now, whichever backend it is; ``str()`` says why in an
    operator's words. Try again later: the fault may pass."""


class LedgerWriteFailed(LedgerError):
    """The ledger could not write (disk full, read-only, I/O error, database
    unreachable); nothing changed."""


class LedgerReadFailed(LedgerError):
    """The ledger could not be read (database unreachable, I/O error)."""
