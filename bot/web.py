"""The bot's HTTP server on ``HTTP_LISTEN``: the webhook, ``GET /healthz``, ``GET /metrics``.

aiohttp, because it is asyncio-native and well kept, runs in the bot's own event loop
beside PTB (no second loop, no thread, no ASGI server in between), and is already what
the test fakes use. PTB's own webhook server would need tornado and has no room for
extra routes. This module is imported only when the server runs, so a long-polling bot
without ``HTTP_LISTEN`` never loads aiohttp or prometheus_client.

The webhook (webhook mode only) checks ``X-Telegram-Bot-Api-Secret-Token`` in constant
time (missing: 401, wrong: 403, nothing read further), parses the update (malformed:
400), claims its ``update_id`` and stores the update in the ledger in one statement
(the inbox, :mod:`bot.telegram.inbox`: a retried or re-routed copy is answered 200 and
dropped) and puts it on PTB's update queue: Telegram gets its 200 once the update is
stored, and the handlers run as for a polled update; if this process dies before they
finish, the stored update is handled again by the next start or another instance. A
ledger that cannot record it answers 503, so Telegram retries the update later.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import signal
import threading
from typing import Any

from aiohttp import web
from telegram import Update
from telegram.ext import Application

from .app import ListenFailed
from .core.errors import LedgerWriteFailed
from .metrics import CONTENT_TYPE, Metrics
from .settings import HEALTH_PATH, METRICS_PATH, Settings
from .telegram.runtime import Runtime

__all__ = ["SECRET_HEADER", "HEALTH_LEDGER_TIMEOUT", "WebServer", "run_webhook"]

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
#: /healthz gives the ledger this long to answer a read.
HEALTH_LEDGER_TIMEOUT = 3.0
#: Telegram's updates are small; anything larger is not one.
_MAX_BODY = 1024 * 1024


class WebServer:
    """Serves the routes on ``settings.http_address``; started in post_init, stopped last."""

    def __init__(
        self,
        settings: Settings,
        runtime: Runtime,
        application: Application,  # type: ignore[type-arg]
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._runtime = runtime
        self._application = application
        self._metrics = metrics
        self._runner: web.AppRunner | None = None
        secret = settings.webhook_secret
        self._secret = secret.get_secret_value().encode() if secret is not None else b""
        #: (host, port) actually bound (port 0 picks a free one: tests).
        self.bound: tuple[str, int] | None = None

    async def start(self) -> None:
        address = self._settings.http_address
        assert address is not None
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_get(HEALTH_PATH, self._health)
        app.router.add_get(METRICS_PATH, self._metrics_page)
        if self._settings.webhook_mode:
            app.router.add_post(self._settings.webhook_path, self._webhook)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, address[0], address[1], reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            # asyncio words it "error while attempting to bind on …": the errno says enough.
            raise ListenFailed(os.strerror(exc.errno) if exc.errno else str(exc)) from exc
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.bound = (host, port)
        log.info("HTTP server on %s:%s", host, port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # -- routes ----------------------------------------------------------------------

    async def _webhook(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER)
        if given is None:
            self._metrics.webhook_updates.labels(outcome="refused").inc()
            return web.Response(status=401, text="secret token missing")
        if not hmac.compare_digest(given.encode(), self._secret):
            self._metrics.webhook_updates.labels(outcome="refused").inc()
            return web.Response(status=403, text="wrong secret token")
        parsed = await self._parse(request)
        if parsed is None:
            self._metrics.webhook_updates.labels(outcome="malformed").inc()
            return web.Response(status=400, text="not a Telegram update")
        update, body = parsed
        try:
            first = await self._runtime.inbox.receive(update.update_id, body)
        except LedgerWriteFailed:
            self._runtime.ledger_failed()
            return web.Response(status=503, text="ledger unavailable; retry later")
        if not first:
            log.info("update %s arrived again: already handled, dropped", update.update_id)
            self._metrics.webhook_updates.labels(outcome="duplicate").inc()
            return web.Response(text="ok")
        await self._application.update_queue.put(update)
        self._metrics.webhook_updates.labels(outcome="accepted").inc()
        return web.Response(text="ok")

    async def _parse(self, request: web.Request) -> tuple[Update, str] | None:
        """The update and its JSON as received (what the inbox stores), or None."""
        try:
            body = (await request.read()).decode()
            data: Any = json.loads(body)
            if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
                return None
            return Update.de_json(data, self._application.bot), body
        except Exception as exc:  # any shape PTB cannot read is the sender's fault
            log.warning("webhook: malformed update (%s)", type(exc).__name__)
            return None

    async def _health(self, request: web.Request) -> web.Response:
        problem = await self.problem()
        if problem is not None:
            return web.Response(status=503, text=f"{problem}\n")
        return web.Response(text="ok\n")

    async def problem(self) -> str | None:
        """Why the bot is not healthy, in one line; None when it is."""
        try:
            async with asyncio.timeout(HEALTH_LEDGER_TIMEOUT):
                await self._runtime.ledger.count_active()
        except Exception as exc:
            return f"ledger not answering ({type(exc).__name__})"
        return self._runtime.telegram_reach.problem()

    async def _metrics_page(self, request: web.Request) -> web.Response:
        try:
            body = await self._metrics.render(self._runtime.ledger)
        except Exception as exc:
            return web.Response(status=503, text=f"ledger not answering ({type(exc).__name__})\n")
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def run_webhook(application: Application) -> None:  # type: ignore[type-arg]
    """``run_polling`` for webhook mode: the same lifecycle and stop signals, no Updater.

    PTB's ``stop_running()`` stops the loop's ``run_forever``, exactly as in its own
    ``run_polling``; SIGINT/SIGTERM do the same here. post_init has started the HTTP
    server and set the webhook; the server stops first at shutdown (no update is taken
    that could not be handled), then the application and its jobs stop as in polling.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    if threading.current_thread() is threading.main_thread():  # signals reach it only
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, loop.stop)
    try:
        loop.run_until_complete(application.initialize())
        if application.post_init is not None:
            loop.run_until_complete(application.post_init(application))
        if application.bot_data.get("stop_asked"):
            return  # stopped while starting (token refused, ledger gone): no run at all
        loop.run_until_complete(application.start())
        loop.run_forever()
    finally:
        try:
            web_server = application.bot_data.get("web")
            if isinstance(web_server, WebServer):
                loop.run_until_complete(web_server.stop())
            if application.running:
                loop.run_until_complete(application.stop())
                if application.post_stop is not None:
                    loop.run_until_complete(application.post_stop(application))
            loop.run_until_complete(application.shutdown())
            if application.post_shutdown is not None:
                loop.run_until_complete(application.post_shutdown(application))
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
