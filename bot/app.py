"""Builds the python-telegram-bot Application: settings in, a wired bot out."""

from __future__ import annotations

import httpx
from telegram import Update
from telegram.error import BadRequest
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    InlineQueryHandler,
    MessageHandler,
    PreCheckoutQueryHandler,
    filters,
)
from telegram.request import HTTPXRequest

from .http_pool import lean_transport
from .settings import Settings
from .telegram.handlers import COMMAND, Handlers
from .telegram.inbox import InboxQueue, InboxRequest, InboxUpdateProcessor
from .telegram.keyboards import LANGUAGE_PATTERN
from .telegram.runtime import Runtime

__all__ = ["build_application", "ALLOWED_UPDATES", "ListenFailed", "WebhookRefused"]

#: Only what the bot handles; nothing else is fetched (or confirmed) for nothing.
ALLOWED_UPDATES = [
    Update.MESSAGE,
    Update.CALLBACK_QUERY,
    Update.PRE_CHECKOUT_QUERY,
    Update.INLINE_QUERY,  # Share: the user's own videos, offered in any chat
]
#: Updates handled at once. Handlers wait on Telegram's flood limits (a keyboard may
#: queue for seconds when many photos arrive together); with too few slots that queue
#: would hold up even the instant answers to button presses. A waiting handler is a
#: small coroutine: with 512 slots and 1,000 photos at once, Generate was answered
#: 14 s late (p95); with 4096, 0.11-0.13 s (docs/benchmarks.md).
CONCURRENT_UPDATES = 4096
#: The Bot API's connections (PTB's default of 256 at most). Kept alive: up to 64 idle,
#: about what a burst uses (30 messages a second on their way, plus button answers,
#: getFile and chat actions), where PTB's default keeps 20 and reconnects for the rest.
TELEGRAM_LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=64)
#: getUpdates is a long poll: Telegram may hold it this long before answering.
GET_UPDATES_READ_TIMEOUT = 35.0


class ListenFailed(RuntimeError):
    """The HTTP server cannot listen on ``HTTP_LISTEN``; ``str()`` says why, for an operator."""


class WebhookRefused(RuntimeError):
    """Telegram refused ``setWebhook``; ``str()`` is Telegram's reason (it holds no secret)."""


def build_application(settings: Settings) -> Application:  # type: ignore[type-arg]
    """The real bot: handlers registered, services started in post_init, closed on stop.

    With ``HTTP_LISTEN`` (or in webhook mode) the HTTP server starts after the services
    and, in webhook mode, the webhook is set once it listens; ``python -m bot`` then runs
    :func:`bot.web.run_webhook` instead of ``run_polling`` (no Updater is built).
    """
    metrics = None
    if settings.http_address is not None:
        # Imported only here: a polling bot without HTTP_LISTEN never loads them.
        from .metrics import Metrics

        metrics = Metrics()
    runtime = Runtime(settings, metrics)
    handlers = Handlers(runtime)
    root = settings.telegram_api_url

    async def post_init(application: Application) -> None:  # type: ignore[type-arg]
        def stop_bot() -> None:
            # Remembered: a stop asked for while starting must not be lost (run_webhook).
            application.bot_data["stop_asked"] = True
            application.stop_running()

        await runtime.start(application.bot, stop_bot=stop_bot)
        # Before the webhook is served: what an earlier run left unhandled comes first.
        await runtime.inbox.start(runtime.ledger, application.bot, application.update_queue.put)
        if metrics is None:
            return
        from .web import WebServer

        server = WebServer(settings, runtime, application, metrics)
        application.bot_data["web"] = server
        await server.start()
        if settings.webhook_mode:
            assert settings.webhook_secret is not None
            try:
                await application.bot.set_webhook(
                    url=settings.webhook_url,
                    secret_token=settings.webhook_secret.get_secret_value(),
                    allowed_updates=ALLOWED_UPDATES,
                    drop_pending_updates=False,
                )
            except BadRequest as exc:  # Telegram's reason names what is wrong with the URL
                raise WebhookRefused(exc.message) from exc

    async def post_stop(application: Application) -> None:  # type: ignore[type-arg]
        server = application.bot_data.pop("web", None)
        if server is not None:
            await server.stop()
        await runtime.stop_jobs()

    async def post_shutdown(application: Application) -> None:  # type: ignore[type-arg]
        await runtime.close()

    builder = ApplicationBuilder()
    if settings.webhook_mode:
        builder = builder.updater(None)  # updates come to bot.web, not by getUpdates
    application = (
        builder.token(settings.telegram_bot_token.get_secret_value())
        .base_url(f"{root}/bot")
        .base_file_url(f"{root}/file/bot")
        .rate_limiter(runtime.limiter)
        # PTB's own request, on a pool whose upkeep does not grow with it (bot.http_pool).
        .request(HTTPXRequest(httpx_kwargs={"transport": lean_transport(TELEGRAM_LIMITS)}))
        .update_queue(InboxQueue(runtime.inbox))
        .concurrent_updates(InboxUpdateProcessor(CONCURRENT_UPDATES, runtime.inbox))
        .get_updates_request(
            # One connection, as PTB's own; each batch stored before PTB confirms it.
            InboxRequest(
                runtime.inbox, connection_pool_size=1, read_timeout=GET_UPDATES_READ_TIMEOUT
            )
        )
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
    application.add_handler(CommandHandler("history", handlers.history))
    application.add_handler(InlineQueryHandler(handlers.inline_query))
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
