"""A Telegram bot for Segmind's "Warmth of Jesus" image-to-video effect."""

__version__ = "0.1.0"
