"""Logging that never shows a secret, at any level.

Every Telegram URL holds the bot token, and exceptions from HTTP libraries quote URLs.
So the formatter redacts the *finished* line — message, arguments and traceback — of
the known secrets and of anything shaped like a bot token. httpx's per-request lines
are silenced as well: they say nothing the bot's own lines don't.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

__all__ = ["RedactingFormatter", "setup_logging", "redact"]

_TOKEN_SHAPE = re.compile(r"\d{5,20}:[A-Za-z0-9_-]{30,}")
#: PTB logs setWebhook's parameters at DEBUG: the webhook secret goes whatever its length.
_SECRET_TOKEN_PARAM = re.compile(r"""(['"]secret_token['"]:\s*['"])[A-Za-z0-9_-]+""")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _SECRET_TOKEN_PARAM.sub(r"\1***", text)
    return _TOKEN_SHAPE.sub("***", text)


#: Shorter "secrets" are placeholders, not keys; replacing them would mangle every line.
_MIN_SECRET_LENGTH = 6
#: PTB's network loops log each failed getMe/getUpdates with a full traceback of
#: library frames; the exception's one-line summary says the same to an operator.
_ONE_LINE_LOGGERS = ("telegram",)


class RedactingFormatter(logging.Formatter):
    def __init__(self, secrets: Iterable[str], fmt: str = _FORMAT) -> None:
        super().__init__(fmt)
        # Longest first, so a secret containing another is removed whole.
        self._secrets = sorted(
            (s for s in secrets if len(s) >= _MIN_SECRET_LENGTH), key=len, reverse=True
        )

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and record.name.startswith(_ONE_LINE_LOGGERS):
            error = record.exc_info[1]
            summary = f"{record.getMessage()} ({type(error).__name__}: {error})"
            record = logging.makeLogRecord(
                {**record.__dict__, "msg": summary, "args": None, "exc_info": None}
            )
            record.exc_text = None
        return redact(super().format(record), self._secrets)


class _StartUpFailureFilter(logging.Filter):
    """Drops PTB's "Network Retry Loop … Aborting" at start: ``python -m bot`` says the
    same in its own one line (which setting, what to do) right after."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Network Retry Loop (Bootstrap") and "Aborting" in message)


def setup_logging(level: str, secrets: Iterable[str]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(secrets))
    handler.addFilter(_StartUpFailureFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "aiosqlite", "hpack"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # PTB's own request logging is useful at DEBUG and redacted above; at INFO it is noise.
    if level != "DEBUG":
        logging.getLogger("telegram").setLevel(logging.WARNING)
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
