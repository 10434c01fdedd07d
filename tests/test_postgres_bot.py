"""The bot on PostgreSQL (``DATABASE_URL``), against the test run's own server and the
fakes: start-up lines, ``check``, the private-chat flow, and a PostgreSQL restart while a
job runs in a real ``python -m bot`` process."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import asyncpg

from bot.core.alerts import AlertKind
from bot.i18n import texts
from bot.storage.urls import redact_database_url
from bot.telegram import runtime as runtime_module
from tests.conftest import ADMIN_ID, free_port, running, running_webhook, wait_until
from tests.fakes.segmind import TEST_API_KEY
from tests.fakes.telegram import TEST_TOKEN
from tests.pgserver import PASSWORD, PostgresServer, closed_port
from tests.test_private_flow import button_data, reply_target, send_photo_get_keyboard

USER = 731
JOB_SECONDS = 60.0


async def pg_jobs(url: str) -> list[dict[str, Any]]:
    """The jobs table as an operator would read it with psql."""
    conn = await asyncpg.connect(url)
    try:
        return [dict(row) for row in await conn.fetch("SELECT * FROM jobs ORDER BY id")]
    finally:
        await conn.close()


async def until_delivered_and_told(url: str) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        jobs = await pg_jobs(url)
        if jobs and jobs[-1]["state"] == "delivered" and jobs[-1]["notified_at"] is not None:
            return jobs[-1]
        assert asyncio.get_running_loop().time() < deadline, f"not delivered: {jobs}"
        await asyncio.sleep(0.05)  # between reads of a state; never a wait in itself


def assert_no_secret(text: str) -> None:
    assert PASSWORD not in text
    assert "s3cret" not in text
    assert TEST_TOKEN not in text
    assert TEST_API_KEY not in text


async def test_a_malformed_database_url_is_named_in_one_line(spawn, env):
    for url in ("mysql://bot:pg-s3cret@127.0.0.1/db", "postgresql://bot:pg-s3cret@127.0.0.1:x/db"):
        process = await spawn({**env, "DATABASE_URL": url})
        assert await process.wait() == 2
        _, stderr = await process.output()
        assert stderr.strip().splitlines() == [
            "error: DATABASE_URL is malformed: must be "
            "postgresql://user:password@host:port/database"
        ]
        assert_no_secret(stderr)


async def test_postgres_unreachable_at_start_is_one_line_and_exit_1(
    spawn, env, postgres_server: PostgresServer
):
    url = postgres_server.url("bot", port=closed_port())
    process = await spawn({**env, "DATABASE_URL": url})
    assert await process.wait(timeout=30) == 1
    _, stderr = await process.output()
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: DATABASE_URL {redact_database_url(url)} cannot be reached (connection refused)"
    ]
    assert "Traceback" not in stderr
    assert_no_secret(stderr)


async def test_check_reports_the_postgres_ledger_in_one_line(
    spawn, env, postgres_url, postgres_server: PostgresServer
):
    good = await spawn({**env, "DATABASE_URL": postgres_url}, "check")
    assert await good.wait(timeout=30) == 0
    stdout, stderr = await good.output()
    assert (
        f"ok: job ledger {redact_database_url(postgres_url)} is sound, writable and up to date"
        in stdout.splitlines()
    )
    assert_no_secret(stdout + stderr)

    url = postgres_server.url("bot", port=closed_port())
    bad = await spawn({**env, "DATABASE_URL": url}, "check")
    assert await bad.wait(timeout=30) == 1
    stdout, stderr = await bad.output()
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: DATABASE_URL {redact_database_url(url)} cannot be reached (connection refused)"
    ]
    assert_no_secret(stdout + stderr)


async def test_generate_makes_one_video_with_the_ledger_in_postgres(
    telegram, segmind, make_settings, database, postgres_url
):
    telegram.private_chat(USER)
    async with running(make_settings(DATABASE_URL=postgres_url)):
        photo, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
        query = telegram.press_button(
            USER, USER, keyboard["message_id"], button_data(keyboard, "Generate")
        )
        (video,) = await telegram.wait_for_call("sendVideo", chat_id=USER)
        assert query in telegram.callback_answers
        assert reply_target(video.params) == photo["message_id"]
        job = await until_delivered_and_told(postgres_url)
    (submit,) = segmind.submits
    assert job["request_id"] == next(iter(segmind.jobs))
    assert (job["seed"], job["image_url"]) == (submit["seed"], submit["image_url"])
    assert job["video_file_id"]
    assert len(telegram.calls_of("sendVideo")) == 1
    assert not database.exists()  # nothing went to the SQLite default


async def test_a_postgres_restart_while_a_job_runs_loses_nothing(
    telegram, segmind, spawn, env, postgres_url, postgres_server: PostgresServer
):
    """A real ``python -m bot`` on PostgreSQL: the server restarts while the job is at
    Segmind; the bot reconnects by itself and delivers the one video."""
    telegram.private_chat(USER)
    segmind.processing_seconds = JOB_SECONDS
    process = await spawn({**env, "DATABASE_URL": postgres_url})
    _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
    telegram.press_button(USER, USER, keyboard["message_id"], button_data(keyboard, "Generate"))
    await telegram.wait_for_call(  # the status message: the job is at Segmind
        "editMessageText", chat_id=USER, where=lambda c: c.params["text"].startswith("⏳")
    )
    [job] = await pg_jobs(postgres_url)
    assert job["state"] in ("queued", "processing")
    polls_before = sum(segmind.status_polls())

    await asyncio.to_thread(postgres_server.restart)
    # The bot keeps polling through the restart, and records what it learns.
    await wait_until(lambda: sum(segmind.status_polls()) > polls_before + 2, what="polls go on")
    segmind.advance(JOB_SECONDS)
    await telegram.wait_for_call("sendVideo", chat_id=USER, timeout=20)
    delivered = await until_delivered_and_told(postgres_url)
    assert delivered["id"] == job["id"]
    assert len(segmind.submits) == 1
    assert len(telegram.calls_of("sendVideo")) == 1

    process.signal(signal.SIGTERM)
    assert await process.wait() == 0
    _, stderr = await process.output()
    assert_no_secret(stderr)


async def test_while_postgres_is_down_users_are_told_to_try_again_then_it_works(
    telegram,
    segmind,
    make_settings,
    postgres_url,
    postgres_server: PostgresServer,
    caplog,
    monkeypatch,
):
    """The Telegram layer meets PostgreSQL's faults as the core's ledger errors: a photo
    and a button get "try again in a minute", never silence or a traceback; operators
    hear of it once, and again when it is over."""
    monkeypatch.setattr(runtime_module, "LEDGER_PROBE_SECONDS", 0.2)
    telegram.private_chat(USER)
    telegram.private_chat(ADMIN_ID)
    async with running(make_settings(DATABASE_URL=postgres_url)):
        _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
        await asyncio.to_thread(postgres_server.stop_only)
        try:
            telegram.send_photo(USER, USER)
            await telegram.wait_for_call(
                "sendMessage",
                chat_id=USER,
                where=lambda c: c.params["text"] == texts.ledger_busy("en"),
            )
            telegram.press_button(
                USER, USER, keyboard["message_id"], button_data(keyboard, "720p")
            )
            await telegram.wait_for_call(
                "answerCallbackQuery",
                where=lambda c: c.params.get("text") == texts.ledger_busy("en"),
            )
            alert = texts.alert("en", AlertKind.LEDGER_FAILING)
            await telegram.wait_for_call(
                "sendMessage", chat_id=ADMIN_ID, where=lambda c: c.params["text"] == alert
            )
        finally:
            await asyncio.to_thread(postgres_server.start_again)
        resolved = texts.alert("en", AlertKind.LEDGER_FAILING, resolved=True)
        await telegram.wait_for_call(
            "sendMessage", chat_id=ADMIN_ID, where=lambda c: c.params["text"] == resolved
        )
        photo, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
        telegram.press_button(
            USER, USER, keyboard["message_id"], button_data(keyboard, "Generate")
        )
        (video,) = await telegram.wait_for_call("sendVideo", chat_id=USER)
        assert reply_target(video.params) == photo["message_id"]
        await until_delivered_and_told(postgres_url)
    assert len(segmind.submits) == 1
    assert "Traceback" not in caplog.text, caplog.text
    assert_no_secret(caplog.text)


async def test_a_second_bot_on_the_same_database_starts_beside_the_first(
    telegram, make_settings, spawn, env, postgres_url
):
    """Several bots share one DATABASE_URL (each job leased to one of them): a second
    one starts, serves, and stops cleanly; check works beside them."""
    async with running(make_settings(DATABASE_URL=postgres_url)):
        second = await spawn({**env, "DATABASE_URL": postgres_url})
        await wait_until(
            lambda: b"driving the jobs it claims in the ledger" in second.stderr,
            what="the second bot up",
            timeout=30,
        )
        assert second.process is not None
        assert second.process.returncode is None
        check = await spawn({**env, "DATABASE_URL": postgres_url}, "check")
        assert await check.wait(timeout=30) == 0
        second.signal(signal.SIGTERM)
        assert await second.wait(timeout=30) == 0
        _, stderr = await second.output()
        assert not [line for line in stderr.splitlines() if line.startswith("error:")]
        assert_no_secret(stderr)


async def test_webhook_mode_on_postgres_handles_each_update_once(
    telegram, segmind, make_settings, postgres_url
):
    """Webhook mode with the ledger in PostgreSQL: Generate -> one video, and an update
    Telegram posts again is claimed in PostgreSQL and handled once."""
    port = free_port()
    telegram.webhook_proxy = f"http://127.0.0.1:{port}"
    settings = make_settings(
        DATABASE_URL=postgres_url,
        WEBHOOK_URL="https://bot.example.test/telegram/hook",
        WEBHOOK_SECRET="s3cret_Webhook-token",
        HTTP_LISTEN=f"127.0.0.1:{port}",
    )
    telegram.private_chat(USER)
    async with running_webhook(settings):
        photo, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
        telegram.press_button(
            USER, USER, keyboard["message_id"], button_data(keyboard, "Generate")
        )
        (video,) = await telegram.wait_for_call("sendVideo", chat_id=USER)
        assert reply_target(video.params) == photo["message_id"]
        await until_delivered_and_told(postgres_url)
        replies = len(telegram.calls_of("sendMessage", chat_id=USER))
        photo_update = telegram.webhook_posts[0][0]

        def posts_of_the_photo() -> int:
            return [uid for uid, _ in telegram.webhook_posts].count(photo_update)

        # Telegram posts it again, twice (its answers lost, say).
        telegram.redeliver_update(photo_update)
        await wait_until(lambda: posts_of_the_photo() == 2, what="the first copy posted")
        telegram.redeliver_update(photo_update)
        await wait_until(lambda: posts_of_the_photo() == 3, what="the second copy posted")
        telegram.send_text(USER, USER, "/help")  # handled after the copies: a marker
        await telegram.wait_for_call("sendMessage", chat_id=USER, count=replies + 1)
    assert len(telegram.calls_of("sendMessage", chat_id=USER)) == replies + 1
    assert len(segmind.submits) == 1
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT COUNT(*) FROM updates") >= 3
        assert await conn.fetchval("SELECT COUNT(*) FROM jobs") == 1
    finally:
        await conn.close()
