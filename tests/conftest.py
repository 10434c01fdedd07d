"""Fixtures: the local fake Telegram and Segmind servers, and the real bot running against them."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from telegram.ext import Application

from bot.app import ALLOWED_UPDATES, build_application
from bot.settings import Settings, load_settings
from tests.fakes.segmind import TEST_API_KEY, FakeSegmind
from tests.fakes.telegram import TEST_TOKEN, FakeTelegram

ADMIN_ID = 900


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
    telegram: FakeTelegram, segmind: FakeSegmind, database: Path
) -> Callable[..., Settings]:
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
        await asyncio.sleep(0.02)


def ledger(database: Path) -> list[dict[str, Any]]:
    """The jobs table as rows, read with plain sqlite3 (what an operator would see)."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM jobs ORDER BY id")]
