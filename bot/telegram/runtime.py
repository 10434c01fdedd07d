"""The services one running bot shares, wired in ``post_init`` and closed at shutdown.

Hooks go in through constructors: the rate limiter tells the alerts about long flood
waits, the messenger tells the token watch about a refused call, and the token watch
stops the application.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import httpx
from telegram import Bot, BotCommandScopeAllGroupChats, BotCommandScopeAllPrivateChats
from telegram.error import BadRequest, InvalidToken, NetworkError, TelegramError
from telegram.ext import ExtBot

from ..core.alerts import AlertKind, Alerts
from ..core.errors import LedgerWriteFailed
from ..core.jobs import Job
from ..core.leases import instance_id
from ..core.limits import Limits
from ..core.payments import NewPayment, Payment, PaymentOutcome
from ..core.ports import Ledger, Messenger, StarCharge, VideoService
from ..core.refunds import RECONCILE_WINDOW_SECONDS, Reconciliation, Refunds
from ..core.tasks import Background, cancel_and_wait
from ..core.tracker import HISTORY_LOOKUP_SECONDS, Tracker, TrackerConfig
from ..http_pool import lean_transport
from ..i18n import texts
from ..i18n.catalogues import LANGUAGES
from ..segmind import SegmindClient
from ..settings import Settings
from ..storage import LedgerUnusable, StoredLedger, make_ledger
from ..storage.held import HeldPayments
from .inbox import Inbox
from .messenger import TelegramMessenger
from .pacing import Priority, PriorityRateLimiter, SharedBudget
from .photos import Photos

if TYPE_CHECKING:  # loaded only with the HTTP server (bot.metrics imports prometheus_client)
    from ..metrics import Metrics

__all__ = [
    "CONFLICT_GAP_SECONDS",
    "CONFLICT_STOP_LINE",
    "CONFLICT_STOP_SECONDS",
    "ConflictWatch",
    "LEDGER_CHECK_SECONDS",
    "LEDGER_PROBE_SECONDS",
    "LedgerWatch",
    "Runtime",
    "TELEGRAM_STALE_SECONDS",
    "TelegramReach",
    "TokenWatch",
]

log = logging.getLogger(__name__)

_HTTP_TIMEOUT = httpx.Timeout(30.0, connect=10.0, write=60.0)
#: Every connection kept alive: with fewer, a thousand jobs polling churned through
#: sockets (1,299 in TIME-WAIT) and httpcore's pool scans (docs/benchmarks.md); the
#: pool is a LeanConnectionPool, whose upkeep does not grow with it.
_HTTP_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=100)
#: How often the bot asks Telegram who it is, to notice a revoked token.
TOKEN_CHECK_SECONDS = 60.0
#: getUpdates answered 409 Conflict this long in a row: another process polls the token.
CONFLICT_STOP_SECONDS = 30.0
#: A quiet spell this long between two conflicts ends a streak. PTB retries a failed
#: getUpdates after 1 s, then 1.5 times longer each time, at most 30 s apart.
CONFLICT_GAP_SECONDS = 45.0
#: While the ledger cannot be written, a harmless write is tried this often.
LEDGER_PROBE_SECONDS = 10.0
#: How often the bot makes sure DATABASE_PATH still names the file it opened. Short, so
#: that a deleted or replaced ledger stops the bot before much is written into the old
#: file; an ``os.stat`` costs microseconds. (A subprocess test shortens it through
#: tests/short_intervals.py: read here at each use.)
LEDGER_CHECK_SECONDS = 10.0
#: What ``python -m bot`` prints when the conflict stopped it (the one place it is worded).
CONFLICT_STOP_LINE = (
    "error: another process is polling Telegram with this TELEGRAM_BOT_TOKEN"
    f" (409 Conflict for {CONFLICT_STOP_SECONDS:.0f} s); stop it, or run one bot per token"
)


#: No answer from Telegram for this long and /healthz says so. The token watch asks
#: getMe every TOKEN_CHECK_SECONDS, so a healthy bot hears from Telegram at least that often.
TELEGRAM_STALE_SECONDS = 3 * 60.0


class TelegramReach:
    """Whether Telegram answered recently, from every answer the rate limiter sees.

    Any answer, an API error included, proves Telegram reachable; a network error or a
    timeout after the last answer says it is not (for /healthz).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        #: The last answer (or the start, before any): what "recently" counts from.
        self._answered_at = clock()
        #: The last call failed on the network (and none answered since).
        self._unreachable = False

    def answered(self, error: TelegramError | None) -> None:
        # A BadRequest is an answer: PTB derives it from NetworkError.
        self._unreachable = isinstance(error, NetworkError) and not isinstance(error, BadRequest)
        if not self._unreachable:
            self._answered_at = self._clock()

    def problem(self) -> str | None:
        """None when Telegram answered recently; otherwise why not, in one line."""
        silent = self._clock() - self._answered_at
        if self._unreachable:
            return f"Telegram unreachable (no answer for {silent:.0f} s)"
        if silent > TELEGRAM_STALE_SECONDS:
            return f"no answer from Telegram for {silent:.0f} s"
        return None


class TokenWatch(Background):
    """Stops the bot when Telegram no longer accepts its token.

    A token revoked while the bot runs ends PTB's getUpdates loop with one log line and
    leaves a process that looks alive but hears nothing and delivers nothing. So every
    ``TOKEN_CHECK_SECONDS``, and at once when a call is refused as unauthorised, the bot
    asks ``getMe``; if that is refused too it stops (``python -m bot`` then exits 1).
    Unfinished jobs stay in the ledger and resume at the next start.
    """

    task_name = "token-watch"

    def __init__(self, bot: Bot, *, on_rejected: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._bot = bot
        self._poke = asyncio.Event()
        self.rejected = False
        #: Called once when the token is found rejected (the application's stop).
        self._on_rejected = on_rejected

    def check_now(self) -> None:
        self._poke.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TOKEN_CHECK_SECONDS):
                    await self._poke.wait()
            self._poke.clear()
            try:
                await self._bot.get_me()
            except InvalidToken:
                break
            except TelegramError:
                continue  # Telegram unreachable says nothing about the token
        log.error(
            "Telegram rejected TELEGRAM_BOT_TOKEN (revoked?): stopping; unfinished jobs"
            " stay in the ledger and resume at the next start"
        )
        self.rejected = True
        if self._on_rejected is not None:
            self._on_rejected()


class ConflictWatch:
    """Stops the bot when getUpdates keeps answering 409 Conflict.

    Two processes polling one token take turns being refused; PTB hands each refusal to
    the error handler and retries, for ever. One conflict (a restart overlapping the old
    process) is nothing; conflicts that persist for ``CONFLICT_STOP_SECONDS`` stop the bot
    (``python -m bot`` then exits 1 with :data:`CONFLICT_STOP_LINE`). getUpdates does not
    pass the rate limiter, so a success cannot be seen here: a gap of
    ``CONFLICT_GAP_SECONDS`` without a conflict (longer than PTB's longest retry
    interval) ends the streak.
    """

    def __init__(
        self,
        *,
        on_persistent: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_persistent = on_persistent
        self._clock = clock
        self._since: float | None = None
        self._last: float | None = None
        self.stopped = False

    def conflict(self) -> None:
        """getUpdates was answered 409 Conflict."""
        now = self._clock()
        if self._last is None or now - self._last > CONFLICT_GAP_SECONDS:
            self._since = now
        self._last = now
        assert self._since is not None
        if self.stopped or now - self._since < CONFLICT_STOP_SECONDS:
            log.warning("getUpdates: 409 Conflict (another process polls this token?)")
            return
        log.error(
            "getUpdates answered 409 Conflict for %.0f s: another process polls this"
            " TELEGRAM_BOT_TOKEN; stopping (unfinished jobs resume at the next start)",
            now - self._since,
        )
        self.stopped = True
        if self._on_persistent is not None:
            self._on_persistent()


class LedgerWatch:
    """One alert when the ledger stops taking writes, one when it takes them again.

    Told by the handlers and the tracker each time a write failed (disk full, read-only):
    the first time, operators are alerted (``LEDGER_FAILING``) and a harmless write is
    tried every ``LEDGER_PROBE_SECONDS`` until it works; then the alert is cleared.
    """

    def __init__(
        self,
        ledger: StoredLedger,
        alerts: Alerts,
        *,
        on_gone: Callable[[], None] | None = None,
        on_writable: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._ledger = ledger
        self._alerts = alerts
        #: Awaited once writes work again (what was held in memory is recorded then).
        self._on_writable = on_writable
        self._task: asyncio.Task[None] | None = None
        self._check: asyncio.Task[None] | None = None
        #: Called once when DATABASE_PATH no longer names the file opened (the stop).
        self._on_gone = on_gone
        #: What happened to the file ("was deleted", …) once noticed, else None.
        self.gone: str | None = None

    def start(self) -> None:
        """Every ``LEDGER_CHECK_SECONDS``: does DATABASE_PATH still name the open file?"""
        self._check = asyncio.create_task(self._watch_path(), name="ledger-path-watch")

    async def _watch_path(self) -> None:
        while True:
            await asyncio.sleep(LEDGER_CHECK_SECONDS)
            if await self.check_path():
                return

    async def check_path(self) -> bool:
        """True (and the bot stopping) when the ledger file was deleted or replaced."""
        if self.gone is not None:
            return True
        problem = self._ledger.gone()
        if problem is None:
            return False
        self.gone = problem
        log.error("the ledger %s %s while the bot ran: stopping", self._ledger.where, problem)
        with contextlib.suppress(Exception):
            await self._alerts.trouble(AlertKind.LEDGER_FAILING)
        if self._on_gone is not None:
            self._on_gone()
        return True

    @property
    def failing(self) -> bool:
        return self._task is not None and not self._task.done()

    def failed(self) -> None:
        """A write failed just now."""
        if self.failing:
            return
        self._task = asyncio.create_task(self._until_writable(), name="ledger-watch")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await cancel_and_wait(self._check)
        self._task = self._check = None

    async def _until_writable(self) -> None:
        if await self.check_path():
            return
        log.error(
            "the ledger %s cannot be written: users are asked to try again; trying a"
            " write every %.0f s",
            self._ledger.where,
            LEDGER_PROBE_SECONDS,
        )
        await self._alerts.trouble(AlertKind.LEDGER_FAILING)
        while True:
            await asyncio.sleep(LEDGER_PROBE_SECONDS)
            try:
                await self._ledger.prove_writable()
            except LedgerUnusable:
                continue
            break
        log.info("the ledger %s takes writes again", self._ledger.where)
        await self._alerts.save_unsaved()
        if self._on_writable is not None:
            await self._on_writable()
        await self._alerts.cleared(AlertKind.LEDGER_FAILING)


def telegram_language_code(language: str) -> str:
    """Telegram's ``language_code`` for menus is two letters (ISO 639-1): ``pt_BR`` → ``pt``."""
    return language.split("_", 1)[0]


async def _publish_profile(bot: Bot, lang: str, code: str | None, *, paid: bool) -> None:
    """One language's command menus, description and short description; ``code`` None
    is what users of a language without its own get."""
    private = [("start", texts.command_start(lang)), ("help", texts.command_help(lang))]
    if paid:
        private += [
            ("paysupport", texts.command_paysupport(lang)),
            ("terms", texts.command_terms(lang)),
        ]
    history = ("history", texts.command_history(lang))
    language = ("language", texts.command_language(lang))
    private += [history, language]
    group = [("warmth", texts.command_warmth(lang)), ("help", texts.command_help(lang))]
    group += [history, language]
    await bot.set_my_commands(private, scope=BotCommandScopeAllPrivateChats(), language_code=code)
    await bot.set_my_commands(group, scope=BotCommandScopeAllGroupChats(), language_code=code)
    await bot.set_my_description(texts.bot_description(lang), language_code=code)
    await bot.set_my_short_description(texts.bot_short_description(lang), language_code=code)


async def _publish_commands(bot: Bot, *, paid: bool, default_language: str) -> None:
    """The command menus, description and short description users see, in every
    language (Telegram shows each user theirs) and, without a language code, in
    ``DEFAULT_LANGUAGE``. Nice to have, so a refusal is only logged. With a price,
    /paysupport and /terms are in the menu (Telegram requires them for sales)."""
    profiles = [(default_language, None)] + [
        (language, telegram_language_code(language)) for language in LANGUAGES
    ]
    results = await asyncio.gather(
        *(_publish_profile(bot, lang, code, paid=paid) for lang, code in profiles),
        return_exceptions=True,
    )
    for (lang, _code), result in zip(profiles, results, strict=True):
        if isinstance(result, TelegramError):
            log.warning("could not publish the command menu (%s): %s", lang, result)
        elif isinstance(result, BaseException):
            raise result


class Runtime:
    """Holds the services; handlers reach them through here, typed."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        #: Counted into when the HTTP server serves /metrics; None otherwise.
        self.metrics = metrics
        self.telegram_reach = TelegramReach()
        #: Every request to Telegram passes it (PTB's rate-limiter seam); built first,
        #: because the Application is built with it.
        self.limiter = PriorityRateLimiter(
            on_flood=self._telegram_flooded, on_answer=self._telegram_answered
        )
        #: This process's id in the ledger's leases (bot.core.leases), made once.
        self.instance = instance_id()
        #: Updates stored until handled (started in post_init, with the queue).
        self.inbox = Inbox(self.instance, on_ledger_failed=self.ledger_failed)
        self.limits = Limits(
            max_active_per_user=settings.max_active_jobs_per_user,
            daily_per_user=settings.daily_jobs_per_user,
        )
        self._ledger: Ledger | None = None
        self._tracker: Tracker | None = None
        self._alerts: Alerts | None = None
        self._refunds: Refunds | None = None
        #: Payments Telegram confirmed while the ledger could not record them; each is
        #: also in the side file, so a process that dies first records it at next start.
        self._held_payments: list[NewPayment] = []
        self._held_file = HeldPayments(settings.database_path)
        self._reconciliation: Reconciliation | None = None
        self._messenger: TelegramMessenger | None = None
        self._http: httpx.AsyncClient | None = None
        self._photos: Photos | None = None
        self.token_watch: TokenWatch | None = None
        self.conflict_watch: ConflictWatch | None = None
        self._ledger_watch: LedgerWatch | None = None

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            raise RuntimeError("runtime not started")
        return self._ledger

    @property
    def refunds(self) -> Refunds:
        if self._refunds is None:
            raise RuntimeError("runtime not started")
        return self._refunds

    @property
    def photos(self) -> Photos:
        if self._photos is None:
            raise RuntimeError("runtime not started")
        return self._photos

    @property
    def tracker(self) -> Tracker:
        if self._tracker is None:
            raise RuntimeError("runtime not started")
        return self._tracker

    def _telegram_answered(self, error: TelegramError | None) -> None:
        self.telegram_reach.answered(error)
        if self.metrics is not None:
            self.metrics.telegram_answered(error)

    async def _telegram_flooded(self, flooded: bool) -> None:
        if self._alerts is None:
            return
        if flooded:
            await self._alerts.trouble(AlertKind.TELEGRAM_REFUSING)
        else:
            await self._alerts.cleared(AlertKind.TELEGRAM_REFUSING)

    async def start(self, bot: ExtBot[Priority], stop_bot: Callable[[], None]) -> None:
        """Open the ledger, wire the services, and resume every unfinished job.

        ``stop_bot`` stops the application (its ``stop_running``): called when
        the token is refused, when getUpdates keeps meeting another poller, or when the
        ledger file is deleted or replaced.
        """
        self.conflict_watch = ConflictWatch(on_persistent=stop_bot)
        ledger = make_ledger(
            database_url=self.settings.ledger_url,
            database_path=self.settings.database_path,
            exclusive=True,
        )
        await ledger.open()
        self._ledger = ledger
        if isinstance(ledger, SharedBudget):  # PostgreSQL: other instances may share the token
            self.limiter.share(ledger)
        self._http = httpx.AsyncClient(
            timeout=_HTTP_TIMEOUT, transport=lean_transport(_HTTP_LIMITS)
        )
        segmind: VideoService = SegmindClient(
            self._http,
            api_key=self.settings.segmind_api_key.get_secret_value(),
            api_url=self.settings.segmind_api_url,
            upload_url=self.settings.segmind_upload_url,
            history_url=self.settings.segmind_history_url,
        )
        self.token_watch = TokenWatch(bot, on_rejected=stop_bot)
        # Prepared photos live beside the ledger: the one folder every deployment keeps
        # writable (the systemd unit's ReadWritePaths, the container's volume).
        self._photos = Photos(
            bot,
            self._http,
            self.settings.database_path.parent / "photos",
            on_unauthorized=self.token_watch.check_now,
        )
        self._photos.open()
        limiter = self.limiter
        messenger = TelegramMessenger(
            bot,
            self.settings.admin_ids,
            limiter.pacer,
            photos=self._photos,
            on_unauthorized=self.token_watch.check_now,
            language=self.settings.default_language,
        )
        self._messenger = messenger
        self._alerts = Alerts(ledger, messenger.alert_operators)
        metered: Messenger = messenger
        on_submitted: Callable[[Job], None] | None = None
        if self.metrics is not None:  # counted where the work passes (bot.metrics)
            from ..metrics import MeteredMessenger, MeteredVideoService

            segmind = MeteredVideoService(segmind, self.metrics)
            metered = MeteredMessenger(messenger, self.metrics)
            on_submitted = self.metrics.submitted
            self.metrics.watch_limiter(lambda: limiter.backlog)
        alerts = self._alerts
        self._ledger_watch = LedgerWatch(
            ledger, alerts, on_gone=stop_bot, on_writable=self.record_held_payments
        )

        async def refund_refused(payment: Payment) -> None:
            # Telegram refused the refund itself: operators must look at once.
            await alerts.trouble(AlertKind.REFUND_STUCK)

        self._refunds = Refunds(ledger, metered, on_refused=refund_refused, owner=self.instance)
        self._reconciliation = Reconciliation(ledger, metered, alerts)
        self._tracker = Tracker(
            ledger,
            segmind,
            metered,
            self._alerts,
            TrackerConfig(
                poll_interval=self.settings.poll_interval_seconds,
                deadline_seconds=self.settings.job_deadline_seconds,
                image_url_mode=self.settings.image_url_mode,
                history_lookup_seconds=HISTORY_LOOKUP_SECONDS,
            ),
            on_refund_due=self._refunds.poke,
            on_ledger_failed=self.ledger_failed,
            on_submitted=on_submitted,
            owner=self.instance,
        )
        log.info("instance %s: driving the jobs it claims in the ledger", self.instance)
        await self._tracker.resume()
        await self._record_payments_held_before()
        self._refunds.start()
        if not self.settings.price_stars.is_free:
            self._reconciliation.start()
        await _publish_commands(
            bot,
            paid=not self.settings.price_stars.is_free,
            default_language=self.settings.default_language,
        )
        self.token_watch.start()
        self._ledger_watch.start()

    @property
    def token_rejected(self) -> bool:
        return self.token_watch is not None and self.token_watch.rejected

    def ledger_failed(self) -> None:
        """A ledger write failed (disk full, read-only): operators hear of it once."""
        if self._ledger_watch is not None:
            self._ledger_watch.failed()

    def hold_payment(self, payment: NewPayment) -> None:
        """Stars were taken but the ledger cannot record it now: keep it in memory and
        record it (starting its job, or owing it back) as soon as writes work again."""
        log.warning(
            "payment %s (%d %s from user %s) held in memory: the ledger cannot be written",
            payment.charge_id,
            payment.amount,
            payment.currency,
            payment.user_id,
        )
        self._held_payments.append(payment)
        self._held_file.add(payment)
        self.ledger_failed()

    async def _record_payments_held_before(self) -> None:
        """A process that died holding payments left them in the side file: record
        them now (those already recorded are recognised by their charge id)."""
        held = {payment.charge_id for payment in self._held_payments}
        earlier = [p for p in self._held_file.load() if p.charge_id not in held]
        if not earlier:
            return
        log.warning("recording %d payment(s) held by an earlier run", len(earlier))
        self._held_payments.extend(earlier)
        await self.record_held_payments()

    async def record_held_payments(self) -> None:
        """The ledger takes writes again: record what was held, as if it came now."""
        while self._held_payments:
            payment = self._held_payments[0]
            try:
                outcome, _, job = await self.ledger.record_payment(payment)
            except LedgerWriteFailed:
                self.ledger_failed()
                return
            self._held_payments.pop(0)
            log.info("payment %s recorded after the ledger recovered", payment.charge_id)
            if outcome is PaymentOutcome.STARTED and job is not None:
                self.tracker.track(job.id)
            elif outcome is PaymentOutcome.REFUND_DUE:
                self.refunds.poke()
        self._held_file.clear()

    async def charge_at_telegram(self, charge_id: str) -> StarCharge | None:
        """A Stars payment as Telegram lists it (the reconciliation's window), or None;
        for a charge the ledger lacks. ``SendFailed``/``ChatUnreachable``: not known now."""
        if self._messenger is None:
            raise RuntimeError("runtime not started")
        listed = await self._messenger.star_payments(time.time() - RECONCILE_WINDOW_SECONDS)
        return next((charge for charge in listed if charge.charge_id == charge_id), None)

    async def refund_unrecorded(self, charge: StarCharge) -> bool:
        """Record a charge the ledger lacks (its payment was lost to a crash or a full
        disk) as owed back at once, and start its refund; False if it has no payer.

        It is recorded without its invoice payload on purpose: recorded with it, a job
        still awaiting that payment would start, and the operator asked for the Stars
        back, not for the video."""
        if charge.user_id is None:
            return False
        await self.ledger.record_payment(
            NewPayment(
                charge_id=charge.charge_id,
                provider_charge_id="",
                user_id=charge.user_id,
                chat_id=charge.user_id,
                payload="",
                amount=charge.amount,
            )
        )
        self.refunds.poke()
        return True

    @property
    def ledger_gone(self) -> str | None:
        """What happened to the ledger file, when its deletion or replacement stopped us."""
        return None if self._ledger_watch is None else self._ledger_watch.gone

    @property
    def conflict_stopped(self) -> bool:
        """Stopped because another process kept polling this token."""
        return self.conflict_watch is not None and self.conflict_watch.stopped

    async def stop_jobs(self) -> None:
        """Stop driving jobs at once; the ledger keeps where each one was."""
        await self.inbox.stop()
        if self.token_watch is not None:
            await self.token_watch.stop()
        if self._ledger_watch is not None:
            await self._ledger_watch.stop()
        if self._reconciliation is not None:
            await self._reconciliation.stop()
        if self._refunds is not None:
            await self._refunds.stop()
        if self._tracker is not None:
            await self._tracker.stop()

    async def close(self) -> None:
        await self.stop_jobs()
        if self._photos is not None:
            self._photos.close()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._ledger is not None:
            await self._ledger.close()
            self._ledger = None
