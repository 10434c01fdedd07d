"""Fixtures: the local fake Telegram and Segmind servers, and the real bot running against them."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx._transports.default as httpx_transports
import pytest
from telegram.ext import Application

from bot.app import ALLOWED_UPDATES, build_application
from bot.core.jobs import TERMINAL_STATES
from bot.settings import Settings, load_settings
from bot.telegram import pacing
from tests.fakes.segmind import TEST_API_KEY, FakeSegmind
from tests.fakes.telegram import TEST_TOKEN, FakeTelegram
from tests.pgserver import PostgresServer
from tests.processes import BotProcess

ADMIN_ID = 900
#: The chat gaps the in-process bot keeps in tests, unless marked ``real_chat_pace``.
FAST_PRIVATE_CHAT_GAP = 0.05
FAST_GROUP_CHAT_GAP = 0.15


@pytest.fixture(autouse=True, scope="session")
def one_ssl_context() -> Iterator[None]:
    """Build httpx's default SSL context once for the whole run, not once per client.

    Loading the CA bundle costs about 45 ms of CPU, and a test of the in-process bot builds
    four httpx clients (two in PTB, one for Segmind, one in the fake Telegram): that was
    15 of the 17 s of fixture setup in a full run. Every test URL is plain http on
    127.0.0.1, so the context is never even used, and one ``ssl.SSLContext`` may be shared
    by many clients. Other ``verify`` values are built as usual.
    """
    original = httpx.create_ssl_context
    shared: dict[bool, ssl.SSLContext] = {}

    def create_ssl_context(
        verify: Any = True, cert: Any = None, trust_env: bool = True
    ) -> ssl.SSLContext:
        if verify is not True or cert is not None:
            return original(verify=verify, cert=cert, trust_env=trust_env)
        if trust_env not in shared:
            shared[trust_env] = original(verify=verify, cert=cert, trust_env=trust_env)
        return shared[trust_env]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(httpx_transports, "create_ssl_context", create_ssl_context)
        yield


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "real_chat_pace: the in-process bot keeps Telegram's real per-chat gaps (1 s, 3 s)",
    )
    config.addinivalue_line(
        "markers",
        "long: lasts seconds (real paces, subprocesses) without a fixture or marker that"
        " says so; handed out early (see pytest_collection_modifyitems)",
    )


#: Fixtures that run ``python -m bot`` as a subprocess (several, for the last two): a
#: test using one lasts seconds to tens of seconds, mostly waiting on the children.
SUBPROCESS_FIXTURES = frozenset({"spawn", "webhook_bot", "two_instances", "start_cluster"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Hand the long tests out early, spread among the quick ones.

    ``make test`` gives each xdist worker one test at a time (``--maxschedchunk=1``), in
    this order. In file order, one of the longest could start last and run alone at the
    end. Here the long tests take every few places of the first half of the run, so
    they are all under way well before the end, while the quick tests between them keep
    the subprocesses from all starting at once on a small machine. Each group keeps its
    collection order.
    """

    def is_long(item: pytest.Item) -> bool:
        if SUBPROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            return True
        return any(item.get_closest_marker(m) for m in ("long", "real_chat_pace"))

    long = [i for i in items if is_long(i)]
    quick = [i for i in items if not is_long(i)]
    every = max(1, len(quick) // (2 * len(long))) if long else 1
    ordered: list[pytest.Item] = []
    for n, item in enumerate(long):
        ordered.append(item)
        ordered += quick[n * every : (n + 1) * every]
    ordered += quick[len(long) * every :]
    assert len(ordered) == len(items)
    items[:] = ordered


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """This test process's own PostgreSQL server, started on first use (xdist: one per
    worker) and stopped at the end of the run."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """``DATABASE_URL`` of a fresh, empty database for this test alone, dropped after it.

    Plain (not async), so an async fixture may ask for it with ``getfixturevalue``.
    """
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def segmind() -> AsyncIterator[FakeSegmind]:
    fake = FakeSegmind(queued_seconds=0.05, processing_seconds=0.15)
    await fake.start()
    yield fake
    await fake.stop()


def bot_env(
    telegram: FakeTelegram, segmind: FakeSegmind, database: Path, **overrides: Any
) -> dict[str, str]:
    """The environment a bot process gets: both fakes, a fast poll, one admin."""
    env = {
        "TELEGRAM_BOT_TOKEN": TEST_TOKEN,
        "SEGMIND_API_KEY": TEST_API_KEY,
        "TELEGRAM_API_URL": telegram.url,
        "SEGMIND_API_URL": segmind.url,
        "SEGMIND_UPLOAD_URL": segmind.upload_url,
        "SEGMIND_HISTORY_URL": segmind.history_url,
        "DATABASE_PATH": str(database),
        "POLL_INTERVAL_SECONDS": "0.05",
        "ADMIN_IDS": str(ADMIN_ID),
        "LOG_LEVEL": "DEBUG",
    }
    env.update({key: str(value) for key, value in overrides.items()})
    return env


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "data" / "bot.sqlite3"


@pytest.fixture
def make_settings(
    telegram: FakeTelegram,
    segmind: FakeSegmind,
    database: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., Settings]:
    """Settings for an in-process bot against the fakes.

    Unless the test is marked ``real_chat_pace``, the bot's per-chat gaps are shortened:
    with the real ones every job waits a second (three in a group) between its status
    edit and its video, and no test but the pacing ones is about that second. The real
    gaps stay covered by the tests marked ``real_chat_pace``, by tests/test_pacer.py and
    by the ``python -m bot`` processes of tests/test_crash.py (not patched).
    """
    if request.node.get_closest_marker("real_chat_pace") is None:
        monkeypatch.setattr(pacing, "PRIVATE_CHAT_GAP", FAST_PRIVATE_CHAT_GAP)
        monkeypatch.setattr(pacing, "GROUP_CHAT_GAP", FAST_GROUP_CHAT_GAP)

    def make(**overrides: Any) -> Settings:
        return load_settings(bot_env(telegram, segmind, database, **overrides), env_file=None)

    return make


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Application]:
    """Run the real Application as ``run_polling`` does, minus the signal handling."""
    application = build_application(settings)
    await application.initialize()
    assert application.post_init is not None
    await application.post_init(application)
    await application.start()
    assert application.updater is not None
    await application.updater.start_polling(
        poll_interval=0, timeout=1, allowed_updates=ALLOWED_UPDATES
    )
    try:
        yield application
    finally:
        await application.updater.stop()
        await application.stop()
        assert application.post_stop is not None
        await application.post_stop(application)
        await application.shutdown()
        assert application.post_shutdown is not None
        await application.post_shutdown(application)


@contextlib.asynccontextmanager
async def running_webhook(settings: Settings) -> AsyncIterator[Application]:
    """Run the real Application as ``bot.web.run_webhook`` does, minus the signals."""
    application = build_application(settings)
    await application.initialize()
    assert application.post_init is not None
    await application.post_init(application)
    await application.start()
    try:
        yield application
    finally:
        server = application.bot_data.get("web")
        if server is not None:
            await server.stop()
        await application.stop()
        assert application.post_stop is not None
        await application.post_stop(application)
        await application.shutdown()
        assert application.post_shutdown is not None
        await application.post_shutdown(application)


def free_port() -> int:
    """A port nobody listens on now (the bot binds it a moment later)."""
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def bot(make_settings: Callable[..., Settings]) -> AsyncIterator[Application]:
    async with running(make_settings()) as application:
        yield application


async def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``predicate`` until it is truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.02)  # between checks of a state; never a wait in itself


def ledger(database: Path) -> list[dict[str, Any]]:
    """The jobs table as rows, read with plain sqlite3 (what an operator would see)."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM jobs ORDER BY id")]


def unsettled_jobs(database: Path) -> list[dict[str, Any]]:
    """Jobs the bot still owes something: started and not ended, or ended and not told."""
    if not database.exists():
        return []
    return [
        row
        for row in ledger(database)
        if row["state"] != "draft"
        and not (row["state"] in TERMINAL_STATES and row["notified_at"] is not None)
    ]


def _updates_in_hand(application: Application) -> int:
    """Updates PTB has taken from Telegram and not finished handling.

    This is the update queue's count of unfinished items: ``put`` raises it, and it falls
    only after an update's handler has returned (``task_done`` in PTB's update wrapper);
    ``Application.stop()`` waits on the same count (``update_queue.join()``). Reading
    ``qsize()`` and the running handlers instead would miss an update that has left the
    queue and whose handler task has not started yet.
    """
    return int(vars(application.update_queue)["_unfinished_tasks"])


def busy(application: Application, telegram: FakeTelegram) -> str | None:
    """What the in-process bot is still doing; None once it has settled."""
    runtime = application.bot_data["runtime"]
    if telegram.pending_updates():
        return f"{telegram.pending_updates()} update(s) not yet fetched and confirmed"
    if _updates_in_hand(application):
        return f"{_updates_in_hand(application)} update(s) being handled"
    if not runtime.tracker.idle:
        return "job tasks still running"
    if runtime.limiter.backlog:
        return f"{runtime.limiter.backlog} request(s) waiting in the rate limiter"
    jobs = unsettled_jobs(runtime.settings.database_path)
    if jobs:
        return f"jobs not finished: {[(job['id'], job['state']) for job in jobs]}"
    return None


async def until_quiet(busy: Callable[[], str | None], timeout: float, what: str) -> None:
    """Wait until ``busy()`` is None (nothing going on); on timeout, say what still was."""
    reason: list[str | None] = [None]

    def quiet() -> bool:
        reason[0] = busy()
        return reason[0] is None

    try:
        await wait_until(quiet, timeout)
    except AssertionError:
        raise AssertionError(f"{what} did not settle in {timeout:g}s: {reason[0]}") from None


async def settled(
    application: Application,
    telegram: FakeTelegram,
    timeout: float = 10.0,
) -> None:
    """Wait until nothing more can happen without new input, before asserting that
    something did not happen.

    Settled means: Telegram has handed out every queued update and the bot has confirmed
    it (a getUpdates with a later offset), every update's handler has returned, no job
    task is running (a job waiting for its next poll or retry counts as running), nothing
    waits in the rate limiter, and the ledger owes nothing (every job a draft, or ended
    and told). A fixed sleep would pass by being early; this cannot, because time spent
    while the bot is busy does not count. A bot that never settles fails here.
    """
    await until_quiet(lambda: busy(application, telegram), timeout, "the bot")


# -- the bot as a child process ---------------------------------------------------------


@pytest.fixture
def env(telegram, segmind, database):
    return bot_env(telegram, segmind, database, POLL_INTERVAL_SECONDS="0.1")


@pytest.fixture
async def spawn(tmp_path):
    started: list[BotProcess] = []

    async def spawn(env: dict[str, str], *args: str, module: str = "bot") -> BotProcess:
        process = await BotProcess(env, tmp_path, *args, module=module).start()
        started.append(process)
        return process

    yield spawn
    for process in started:
        await process.kill()
