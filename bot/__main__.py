"""``python -m bot`` runs the bot; ``python -m bot check`` checks its set-up."""

from __future__ import annotations

import asyncio
import logging
import sys

from telegram.error import InvalidToken, NetworkError, TelegramError

from .app import ALLOWED_UPDATES, build_application
from .check import run_check
from .logs import setup_logging
from .settings import SettingsError, load_settings
from .storage import LedgerLocked, LedgerUnusable
from .telegram.runtime import CONFLICT_STOP_LINE

log = logging.getLogger("bot")

USAGE = "usage: python -m bot [check]"


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv and argv != ["check"]:
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

    application = build_application(settings)
    log.info("starting; jobs ledger at %s", settings.database_path)
    try:
        application.run_polling(allowed_updates=ALLOWED_UPDATES, drop_pending_updates=False)
    except InvalidToken:
        print("error: TELEGRAM_BOT_TOKEN was rejected by Telegram", file=sys.stderr)
        return 1
    except NetworkError as exc:
        print(
            f"error: cannot reach Telegram at TELEGRAM_API_URL ({type(exc).__name__})",
            file=sys.stderr,
        )
        return 1
    except TelegramError as exc:
        print(f"error: Telegram refused to start the bot: {type(exc).__name__}", file=sys.stderr)
        return 1
    except LedgerUnusable as exc:
        print(f"error: DATABASE_PATH {settings.database_path} {exc}", file=sys.stderr)
        return 1
    except LedgerLocked:
        print(
            f"error: another bot is running on this ledger (DATABASE_PATH "
            f"{settings.database_path}); stop it first",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        print(f"error: DATABASE_PATH cannot be used: {exc.strerror or exc}", file=sys.stderr)
        return 1
    gone = application.bot_data["runtime"].ledger_gone
    if gone is not None:
        advice = (
            "restore it from a backup before starting again, or its unfinished jobs are forgotten"
            if gone == "was deleted"
            else "its unfinished jobs are in the old file, not at this path"
        )
        print(
            f"error: DATABASE_PATH {settings.database_path} {gone} while the bot ran; the"
            f" bot stopped rather than write into a file no path names: {advice}",
            file=sys.stderr,
        )
        return 1
    if application.bot_data["runtime"].conflict_stopped:
        print(CONFLICT_STOP_LINE, file=sys.stderr)
        return 1
    if application.bot_data["runtime"].token_rejected:
        print(
            "error: TELEGRAM_BOT_TOKEN was rejected by Telegram while the bot ran (revoked?);"
            " unfinished jobs resume at the next start",
            file=sys.stderr,
        )
        return 1
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
