"""``python -m bot check``: are the settings, the ledger and the bot token all usable?"""

from __future__ import annotations

import sys

from telegram import Bot
from telegram.error import InvalidToken, NetworkError, TelegramError

from .settings import Settings
from .storage import LedgerUnusable, make_ledger

__all__ = ["run_check"]


async def run_check(settings: Settings) -> int:
    """Report each problem in one line; 0 only when everything works."""
    problems: list[str] = []
    print("ok: settings are valid")

    ledger = make_ledger(
        database_url=settings.ledger_url, database_path=settings.database_path, exclusive=False
    )
    try:
        await ledger.open()
        await ledger.prove_writable()
    except LedgerUnusable as exc:
        problems.append(f"{settings.ledger_where} {exc}")
    else:
        print(f"ok: job ledger {ledger.where} is sound, writable and up to date")
    finally:
        await ledger.close()

    root = settings.telegram_api_url
    bot = Bot(
        settings.telegram_bot_token.get_secret_value(),
        base_url=f"{root}/bot",
        base_file_url=f"{root}/file/bot",
    )
    try:
        async with bot:
            me = bot.bot
            print(f"ok: Telegram knows this bot as @{me.username} (id {me.id})")
    except InvalidToken:
        problems.append("TELEGRAM_BOT_TOKEN was rejected by Telegram")
    except NetworkError as exc:
        problems.append(f"TELEGRAM_API_URL {root} cannot be reached ({type(exc).__name__})")
    except TelegramError as exc:
        problems.append(f"Telegram refused getMe ({type(exc).__name__})")

    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0
