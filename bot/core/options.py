"""What a user may choose for a video, and the one rule that ties the choices together.

The model accepts 8 s only below 1080p. This module is the only place that knows it:
the keyboard, the store and the Segmind client all go through :func:`choose`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

__all__ = [
    "QUALITIES",
    "DURATIONS",
    "STYLES",
    "DEFAULT_QUALITY",
    "DEFAULT_DURATION",
    "SEED_RANGE",
    "Adjustment",
    "VideoOptions",
    "choose",
    "is_allowed",
    "with_next_style",
]

QUALITIES: tuple[str, ...] = ("360p", "540p", "720p", "1080p")
DURATIONS: tuple[int, ...] = (5, 8)
#: ``None`` means the model's own look; the others are Segmind's ``style`` values.
STYLES: tuple[str | None, ...] = (None, "anime", "3d_animation", "clay", "comic", "cyberpunk")
DEFAULT_QUALITY = "540p"
DEFAULT_DURATION = 5
SEED_RANGE = (1, 999_999)

_LONG_DURATION_MAX_QUALITY = "720p"


class Adjustment(StrEnum):
    """What :func:`choose` changed besides the field the user picked."""

    NONE = "none"
    #: 1080p was picked while 8 s was set: the duration became 5 s.
    DURATION_SHORTENED = "duration_shortened"
    #: 8 s was picked while 1080p was set: the quality became 720p.
    QUALITY_LOWERED = "quality_lowered"


@dataclass(frozen=True)
class VideoOptions:
    quality: str = DEFAULT_QUALITY
    duration: int = DEFAULT_DURATION
    style: str | None = None
    seed: int | None = None


def is_allowed(options: VideoOptions) -> bool:
    """True when Segmind accepts this combination."""
    return (
        options.quality in QUALITIES
        and options.duration in DURATIONS
        and options.style in STYLES
        and not (options.quality == "1080p" and options.duration != 5)
        and (options.seed is None or SEED_RANGE[0] <= options.seed <= SEED_RANGE[1])
    )


def choose(
    current: VideoOptions,
    *,
    quality: str | None = None,
    duration: int | None = None,
) -> tuple[VideoOptions, Adjustment]:
    """Apply one user choice and repair the other field so the result is always allowed.

    The field the user just picked wins; the other one moves to the nearest allowed value.
    Raises ``ValueError`` for a value that is not offered at all.
    """
    updated = current
    adjustment = Adjustment.NONE
    if quality is not None:
        if quality not in QUALITIES:
            raise ValueError(f"unknown quality {quality!r}")
        updated = replace(updated, quality=quality)
        if quality == "1080p" and updated.duration != 5:
            updated = replace(updated, duration=5)
            adjustment = Adjustment.DURATION_SHORTENED
    if duration is not None:
        if duration not in DURATIONS:
            raise ValueError(f"unknown duration {duration!r}")
        updated = replace(updated, duration=duration)
        if duration != 5 and updated.quality == "1080p":
            updated = replace(updated, quality=_LONG_DURATION_MAX_QUALITY)
            adjustment = Adjustment.QUALITY_LOWERED
    assert is_allowed(updated), updated
    return updated, adjustment


def with_next_style(current: VideoOptions) -> VideoOptions:
    """The options with the next style in the cycle the keyboard's style button walks."""
    index = STYLES.index(current.style) if current.style in STYLES else 0
    return replace(current, style=STYLES[(index + 1) % len(STYLES)])
