"""What the bot remembers of a user between photos: their language and last options."""

from __future__ import annotations

from dataclasses import dataclass

from .options import VideoOptions, is_allowed

__all__ = ["UserPreferences"]


@dataclass(frozen=True)
class UserPreferences:
    """None where the user never chose: the language then comes from Telegram or
    ``DEFAULT_LANGUAGE``, the options from :class:`VideoOptions`' defaults."""

    #: Chosen with /language (a tag such as ``pt_BR``).
    language: str | None = None
    #: The quality, duration and style last chosen on a keyboard (no seed).
    options: VideoOptions | None = None

    def next_options(self) -> VideoOptions:
        """The options of the user's next keyboard: their last ones when still allowed."""
        if self.options is not None and is_allowed(self.options):
            return VideoOptions(self.options.quality, self.options.duration, self.options.style)
        return VideoOptions()
