"""Segmind's v2 API: the client, and (re-exported from the core) the errors it raises."""

from ..core.errors import (
    BadResponse,
    InputRejected,
    JobFailed,
    KeyRejected,
    NotFound,
    OperatorError,
    OutOfCredits,
    SegmindError,
    TemporaryError,
    TooLarge,
)
from ..core.ports import StatusReport, Submission
from .client import MODEL_SLUG, SegmindClient, find_output_url

__all__ = [
    "MODEL_SLUG",
    "SegmindClient",
    "find_output_url",
    "Submission",
    "StatusReport",
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
]
