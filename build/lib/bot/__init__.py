"""A Telegram bot for Segmind's "Warmth of Jesus" image-to-video effect."""

import os

# Opt in to python-telegram-bot's coming timedelta durations (RetryAfter.retry_after):
# the bot reads both forms, and without this every 429 emits a deprecation warning.
os.environ.setdefault("PTB_TIMEDELTA", "1")

__version__ = "0.1.0"
