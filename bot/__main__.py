"""``python -m bot`` runs the bot; ``python -m bot check`` checks its set-up;
``python -m bot copy-ledger`` copies a SQLite ledger's unfinished work into PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import sys

from telegram.error import InvalidToken, NetworkError, TelegramError

from .app import ALLOWED_UPDATES, ListenFailed, WebhookRefused, build_application
from .check import run_check
from .copy_ledger import run_copy_ledger
from .core.errors import LedgerError
from .logs import setup_logging
from .settings import Settings, SettingsError, load_settings
from .storage import LedgerLocked, LedgerUnusable
from .telegram.runtime import CONFLICT_STOP_LINE, Runtime

log = logging.getLogger("bot")

USAGE = "usage: python -m bot [check | copy-ledger]"


def _fail(line: str) -> int:
    """The operator's one line on stderr; exit status 1."""
    print(f"error: {line}", file=sys.stderr)
    return 1


def _why_not_started(exc: BaseException, settings: Settings) -> str:
    if isinstance(exc, ListenFailed):
        host, port = settings.http_address or ("", 0)
        return f"HTTP_LISTEN {host}:{port} cannot be used: {exc}"
    if isinstance(exc, WebhookRefused):
        return f"Telegram refused WEBHOOK_URL: {exc}"
    if isinstance(exc, InvalidToken):
        return "TELEGRAM_BOT_TOKEN was rejected by Telegram"
    if isinstance(exc, NetworkError):
        return f"cannot reach Telegram at TELEGRAM_API_URL ({type(exc).__name__})"
    if isinstance(exc, TelegramError):
        return f"Telegram refused to start the bot: {type(exc).__name__}"
    if isinstance(exc, LedgerUnusable | LedgerError):
        return f"{settings.ledger_where} {exc}"
    if isinstance(exc, LedgerLocked):
        return f"another bot is running on this ledger ({settings.ledger_where}); stop it first"
    assert isinstance(exc, OSError)
    return f"DATABASE_PATH cannot be used: {exc.strerror or exc}"


def _why_stopped(runtime: Runtime, settings: Settings) -> str | None:
    """Why a bot that ran stopped on its own (None: it was asked to stop)."""
    gone = runtime.ledger_gone
    if gone is not None:  # only a SQLite file goes (PostgreSQL's gone() is always None)
        advice = (
            "restore it from a backup before starting again, or its unfinished jobs are forgotten"
            if gone == "was deleted"
            else "its unfinished jobs are in the old file, not at this path"
        )
        return (
            f"DATABASE_PATH {settings.database_path} {gone} while the bot ran; the"
            f" bot stopped rather than write into a file no path names: {advice}"
        )
    if runtime.conflict_stopped:
        return CONFLICT_STOP_LINE.removeprefix("error: ")
    if runtime.token_rejected:
        return (
            "TELEGRAM_BOT_TOKEN was rejected by Telegram while the bot ran (revoked?);"
            " unfinished jobs resume at the next start"
        )
    return None


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv and argv not in (["check"], ["copy-ledger"]):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        settings = load_settings()
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.secrets)
    if argv == ["check"]:
        return asyncio.run(run_check(settings))
    if argv == ["copy-ledger"]:
        return asyncio.run(run_copy_ledger(settings))

    application = build_application(settings)
    log.info("starting; jobs ledger at %s", settings.ledger_where)
    try:
        if settings.webhook_mode:
            from .web import run_webhook  # aiohttp is loaded only when it serves

            log.info("webhook mode: updates come to %s", settings.webhook_path)
            run_webhook(application)
        else:
            # PTB deletes any webhook first, so switching back to polling just works.
            application.run_polling(allowed_updates=ALLOWED_UPDATES, drop_pending_updates=False)
    except (
        TelegramError,
        LedgerUnusable,
        LedgerLocked,
        LedgerError,
        OSError,
        ListenFailed,
        WebhookRefused,
    ) as exc:
        return _fail(_why_not_started(exc, settings))
    stopped = _why_stopped(application.bot_data["runtime"], settings)
    if stopped is not None:
        return _fail(stopped)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
