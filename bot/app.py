"""Builds the python-telegram-bot Application: settings in, a wired bot out."""

from __future__ import annotations

from telegram import Update
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    PreCheckoutQueryHandler,
    filters,
)

from .settings import Settings
from .telegram.handlers import COMMAND, Handlers
from .telegram.keyboards import LANGUAGE_PATTERN
from .telegram.runtime import Runtime

__all__ = ["build_application", "ALLOWED_UPDATES"]

#: Only what the bot handles; nothing else is fetched (or confirmed) for nothing.
ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY, Update.PRE_CHECKOUT_QUERY]
#: Updates handled at once. Handlers wait on Telegram's flood limits (a keyboard may
#: queue for seconds when many photos arrive together); with too few slots that queue
#: would hold up even the instant answers to button presses. A waiting handler is a
#: small coroutine: with 512 slots and 1,000 photos at once, Generate was answered
#: 14 s late (p95); with 4096, 0.11-0.13 s (docs/benchmarks.md).
CONCURRENT_UPDATES = 4096


def build_application(settings: Settings) -> Application:  # type: ignore[type-arg]
    """The real bot: handlers registered, services started in post_init, closed on stop."""
    runtime = Runtime(settings)
    handlers = Handlers(runtime)
    root = settings.telegram_api_url

    async def post_init(application: Application) -> None:  # type: ignore[type-arg]
        await runtime.start(application.bot, stop_bot=application.stop_running)

    async def post_stop(application: Application) -> None:  # type: ignore[type-arg]
        await runtime.stop_jobs()

    async def post_shutdown(application: Application) -> None:  # type: ignore[type-arg]
        await runtime.close()

    application = (
        ApplicationBuilder()
        .token(settings.telegram_bot_token.get_secret_value())
        .base_url(f"{root}/bot")
        .base_file_url(f"{root}/file/bot")
        .rate_limiter(runtime.limiter)
        .concurrent_updates(CONCURRENT_UPDATES)
        .get_updates_read_timeout(35.0)
        .post_init(post_init)
        .post_stop(post_stop)
        .post_shutdown(post_shutdown)
        .build()
    )
    application.bot_data["runtime"] = runtime

    private = filters.ChatType.PRIVATE
    groups = filters.ChatType.GROUPS
    application.add_handler(CommandHandler(["start", "help"], handlers.start))
    application.add_handler(CommandHandler("language", handlers.language))
    application.add_handler(CommandHandler(["stats", "jobs"], handlers.admin))
    application.add_handler(CommandHandler("refund", handlers.refund))
    application.add_handler(CommandHandler("paysupport", handlers.paysupport))
    application.add_handler(CommandHandler("terms", handlers.terms))
    # Before any other message handler: a payment must never be taken for a photo hint.
    application.add_handler(PreCheckoutQueryHandler(handlers.pre_checkout))
    application.add_handler(
        MessageHandler(filters.SUCCESSFUL_PAYMENT, handlers.successful_payment)
    )
    application.add_handler(
        MessageHandler(
            groups & (filters.CaptionRegex(rf"^/{COMMAND}\b") | filters.Regex(rf"^/{COMMAND}\b")),
            handlers.group_command,
        )
    )
    application.add_handler(
        MessageHandler(private & ~filters.StatusUpdate.ALL, handlers.private_message)
    )
    application.add_handler(
        CallbackQueryHandler(handlers.language_button, pattern=LANGUAGE_PATTERN)
    )
    application.add_handler(CallbackQueryHandler(handlers.button))
    application.add_error_handler(handlers.error)
    return application
