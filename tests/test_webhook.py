"""Issue 15: webhook mode, /healthz and /metrics, through the real PTB app.

The fake Telegram plays both sides of a webhook: it posts each update to the bot with
the secret header and retries until it gets a 2xx, through ``webhook_proxy`` standing in
for the TLS reverse proxy in front of the bot (the public URL is https, the bot listens
on plain HTTP on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
import sys

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.app import build_application
from bot.telegram import runtime as runtime_module
from bot.telegram.runtime import Runtime
from bot.web import run_webhook
from tests.conftest import (
    free_port,
    ledger,
    running,
    running_webhook,
    settled,
    wait_until,
)
from tests.test_reliability import generate

SECRET = "s3cret_Webhook-token"
PUBLIC_URL = "https://bot.example.test/telegram/hook"
USER = 4242


@pytest.fixture
def port():
    return free_port()


@pytest.fixture
def webhook_settings(make_settings, telegram, port):
    telegram.webhook_proxy = f"http://127.0.0.1:{port}"
    return make_settings(
        WEBHOOK_URL=PUBLIC_URL, WEBHOOK_SECRET=SECRET, HTTP_LISTEN=f"127.0.0.1:{port}"
    )


@pytest.fixture
async def hook_bot(webhook_settings):
    async with running_webhook(webhook_settings) as application:
        yield application


@pytest.fixture
async def http(port):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
        yield client


def a_text_update(update_id: int, text: str = "hello") -> dict:
    return {
        "update_id": update_id,
        "message": {
            "message_id": 77,
            "date": 1_700_000_000,
            "chat": {"id": USER, "type": "private"},
            "from": {"id": USER, "is_bot": False, "first_name": "U"},
            "text": text,
        },
    }


def replies_to(telegram, chat_id: int) -> list:
    return telegram.calls_of("sendMessage", chat_id=chat_id)


async def test_generate_to_video_over_the_webhook(telegram, segmind, hook_bot, database):
    [call] = telegram.calls_of("setWebhook")
    assert call.params["url"] == PUBLIC_URL
    assert call.params["secret_token"] == SECRET
    assert sorted(call.params["allowed_updates"]) == [
        "callback_query",
        "inline_query",
        "message",
        "pre_checkout_query",
    ]
    assert not call.params.get("drop_pending_updates")
    telegram.private_chat(USER)
    await generate(telegram, USER)
    await telegram.wait_for_call("sendVideo", chat_id=USER)
    await settled(hook_bot, telegram)
    assert [row["state"] for row in ledger(database)] == ["delivered"]
    assert len(segmind.jobs) == 1
    assert not telegram.calls_of("getUpdates")
    assert all(200 <= status < 300 for _, status in telegram.webhook_posts)


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"X-Telegram-Bot-Api-Secret-Token": "wrong"}, 403)],
    ids=["missing", "wrong"],
)
async def test_a_post_without_the_secret_is_refused_and_not_handled(
    telegram, hook_bot, http, headers, status
):
    telegram.private_chat(USER)
    response = await http.post("/telegram/hook", json=a_text_update(9001), headers=headers)
    assert response.status_code == status
    # The same update with the secret is then handled: the refused one was not claimed.
    ok = await http.post(
        "/telegram/hook",
        json=a_text_update(9001),
        headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
    )
    assert ok.status_code == 200
    await wait_until(lambda: replies_to(telegram, USER), what="the reply to the text")
    await settled(hook_bot, telegram)
    assert len(replies_to(telegram, USER)) == 1


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b'{"update_id": "x"}', b'{"message": {}}', b""],
    ids=["broken", "list", "bad-id", "no-id", "empty"],
)
async def test_a_malformed_body_is_400_and_the_bot_goes_on(telegram, hook_bot, http, body):
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"}
    response = await http.post("/telegram/hook", content=body, headers=headers)
    assert response.status_code == 400
    telegram.private_chat(USER)
    telegram.send_text(USER, USER, "hi")
    await wait_until(lambda: replies_to(telegram, USER), what="a reply after the bad post")


async def test_a_redelivered_update_is_handled_once(telegram, hook_bot):
    telegram.private_chat(USER)
    telegram.send_text(USER, USER, "hi")
    await wait_until(lambda: replies_to(telegram, USER), what="the reply")
    await settled(hook_bot, telegram)
    first_id = telegram.webhook_posts[-1][0]
    telegram.redeliver_update(first_id)  # Telegram sends it again (answer lost, say)
    await settled(hook_bot, telegram)
    assert [uid for uid, _ in telegram.webhook_posts].count(first_id) == 2
    assert len(replies_to(telegram, USER)) == 1


async def test_two_concurrent_posts_of_one_update_are_handled_once(telegram, hook_bot, http):
    telegram.private_chat(USER)
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    answers = await asyncio.gather(
        *(http.post("/telegram/hook", json=a_text_update(9100), headers=headers) for _ in range(2))
    )
    assert [a.status_code for a in answers] == [200, 200]
    await wait_until(lambda: replies_to(telegram, USER), what="the reply")
    await settled(hook_bot, telegram)
    assert len(replies_to(telegram, USER)) == 1


async def test_healthz_is_ok_while_the_ledger_and_telegram_answer(hook_bot, http):
    response = await http.get("/healthz")
    assert (response.status_code, response.text.strip()) == (200, "ok")


async def test_healthz_is_503_when_the_ledger_fails(hook_bot, http, monkeypatch):
    runtime = hook_bot.bot_data["runtime"]

    async def broken() -> int:
        raise OSError("disk gone")

    monkeypatch.setattr(runtime.ledger, "count_active", broken)
    response = await http.get("/healthz")
    assert response.status_code == 503
    assert response.text.strip() == "ledger not answering (OSError)"


async def test_healthz_is_503_when_telegram_is_unreachable(telegram, hook_bot, http):
    runtime = hook_bot.bot_data["runtime"]
    await telegram.stop()
    runtime.token_watch.check_now()  # a getMe, which now meets a closed port
    await wait_until(
        lambda: runtime.telegram_reach.problem(), what="the failed call to be noticed"
    )
    response = await http.get("/healthz")
    assert response.status_code == 503
    assert response.text.startswith("Telegram unreachable")
    assert "\n" not in response.text.strip()
    await telegram.start()  # same port: the bot hears it again at its next call
    runtime.token_watch.check_now()
    await wait_until(lambda: runtime.telegram_reach.problem() is None, what="recovery")
    assert (await http.get("/healthz")).status_code == 200


async def test_healthz_is_503_when_telegram_was_silent_too_long(hook_bot, http, monkeypatch):
    monkeypatch.setattr(runtime_module, "TELEGRAM_STALE_SECONDS", 0.0)
    response = await http.get("/healthz")
    assert response.status_code == 503
    assert response.text.startswith("no answer from Telegram for")


def samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_count_a_delivery(telegram, segmind, hook_bot, http):
    before = samples((await http.get("/metrics")).text)
    assert before[("warmth_deliveries_total", (("kind", "video"),))] == 0
    telegram.private_chat(USER)
    await generate(telegram, USER)
    await telegram.wait_for_call("sendVideo", chat_id=USER)
    await settled(hook_bot, telegram)
    response = await http.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    after = samples(response.text)
    assert after[("warmth_deliveries_total", (("kind", "video"),))] == 1
    assert after[("warmth_submits_total", ())] == 1
    assert after[("warmth_status_polls_total", ())] >= 1
    assert after[("warmth_jobs", (("state", "delivered"),))] == 1
    assert after[("warmth_generate_to_submit_seconds_count", ())] == 1
    assert after[("warmth_completed_to_video_seconds_count", ())] == 1
    assert after[("warmth_webhook_updates_total", (("outcome", "accepted"),))] >= 2
    assert ("warmth_limiter_queue_length", ()) in after
    assert ("warmth_telegram_errors_total", (("code", "429"),)) in after


async def test_metrics_count_segmind_errors_by_kind_and_telegram_refusals(
    telegram, segmind, hook_bot, http
):
    telegram.private_chat(USER)
    segmind.fail_next_status(500, error="Internal Server Error")  # a retry, then on
    await generate(telegram, USER)
    await telegram.wait_for_call("sendVideo", chat_id=USER)
    await settled(hook_bot, telegram)
    blocked = 4343
    telegram.private_chat(blocked)
    telegram.block_chat(blocked)
    telegram.send_text(blocked, blocked, "hi")  # the reply meets 403
    await wait_until(lambda: telegram.calls_of("sendMessage", chat_id=blocked), what="403")
    await settled(hook_bot, telegram)
    found = samples((await http.get("/metrics")).text)
    assert found[("warmth_segmind_errors_total", (("kind", "TemporaryError"),))] == 1
    assert found[("warmth_telegram_errors_total", (("code", "403"),))] == 1
    assert found[("warmth_telegram_errors_total", (("code", "429"),))] == 0


async def test_polling_with_http_listen_serves_health_and_metrics(make_settings, telegram, port):
    settings = make_settings(HTTP_LISTEN=f"127.0.0.1:{port}")
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as http,
        running(settings),
    ):
        assert (await http.get("/healthz")).status_code == 200
        assert "warmth_jobs" in (await http.get("/metrics")).text
        # No webhook route in polling mode.
        assert (await http.post("/", json=a_text_update(1))).status_code in (404, 405)


async def test_switching_back_to_polling_deletes_the_webhook(
    telegram, make_settings, webhook_settings
):
    async with running_webhook(webhook_settings):
        assert telegram.webhook_url == PUBLIC_URL
    telegram.private_chat(USER)
    telegram.send_text(USER, USER, "hi")  # waits at Telegram: the webhook is still set
    async with running(make_settings()) as application:
        await wait_until(lambda: replies_to(telegram, USER), what="the reply by polling")
        await settled(application, telegram)
    assert telegram.webhook_url == ""
    assert telegram.calls_of("deleteWebhook")
    info = await telegram._get_webhook_info({})
    assert info["url"] == ""


async def test_the_fake_refuses_getupdates_while_a_webhook_is_set(telegram):
    api = f"{telegram.api_url}{telegram.token}"
    async with httpx.AsyncClient(trust_env=False) as client:
        set_ = await client.post(
            f"{api}/setWebhook", json={"url": PUBLIC_URL, "secret_token": SECRET}
        )
        assert set_.json() == {"ok": True, "result": True}
        refused = await client.post(f"{api}/getUpdates", json={})
        assert refused.status_code == 409
        assert refused.json()["description"] == (
            "Conflict: can't use getUpdates method while webhook is active;"
            " use deleteWebhook to delete the webhook first"
        )
        plain = await client.post(f"{api}/setWebhook", json={"url": "http://x.test/"})
        assert plain.status_code == 400


async def test_sigterm_in_webhook_mode_stops_within_seconds(env, spawn, telegram, port):
    telegram.webhook_proxy = f"http://127.0.0.1:{port}"
    process = await spawn(
        {
            **env,
            "WEBHOOK_URL": PUBLIC_URL,
            "WEBHOOK_SECRET": SECRET,
            "HTTP_LISTEN": f"127.0.0.1:{port}",
        }
    )
    await telegram.wait_for_call("setWebhook", timeout=15)
    async with httpx.AsyncClient(trust_env=False) as http:
        # setWebhook is sent only once the server listens.
        health = await http.get(f"http://127.0.0.1:{port}/healthz")
        assert health.status_code == 200
    process.signal(signal.SIGTERM)
    assert await process.wait(timeout=5) == 0
    _, stderr = await process.output()
    assert SECRET not in stderr
    assert "Traceback" not in stderr


@pytest.mark.long
def test_a_polling_bot_without_http_listen_loads_no_server_or_metrics_library(tmp_path):
    """Polling's memory does not grow: aiohttp and prometheus_client stay unimported."""
    script = (
        "import sys\n"
        "from bot.__main__ import main\n"  # what python -m bot imports
        "from bot.app import build_application\n"
        "from bot.settings import load_settings\n"
        "env = {'TELEGRAM_BOT_TOKEN': '123456:TEST-token_abcdefghijklmnopqrstuvwxyz',\n"
        "       'SEGMIND_API_KEY': 'k', 'DATABASE_PATH': 'x.sqlite3'}\n"
        "build_application(load_settings(env, env_file=None))\n"
        "print(sorted(m for m in ('aiohttp', 'prometheus_client') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


async def test_a_taken_http_listen_port_stops_the_bot_with_one_line(env, spawn, telegram, port):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        process = await spawn({**env, "HTTP_LISTEN": f"127.0.0.1:{port}"})
        assert await process.wait(timeout=15) == 1
    _, stderr = await process.output()
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert lines == [f"error: HTTP_LISTEN 127.0.0.1:{port} cannot be used: Address already in use"]
    assert "Traceback" not in stderr


async def test_a_webhook_telegram_refuses_stops_the_bot_with_its_reason(
    env, spawn, telegram, port
):
    telegram.fail_next(
        "setWebhook",
        error_code=400,
        description="Bad Request: bad webhook: Failed to resolve host: Name or service not known",
    )
    process = await spawn(
        {
            **env,
            "WEBHOOK_URL": PUBLIC_URL,
            "WEBHOOK_SECRET": SECRET,
            "HTTP_LISTEN": f"127.0.0.1:{port}",
        }
    )
    assert await process.wait(timeout=15) == 1
    _, stderr = await process.output()
    assert stderr.splitlines()[-1] == (
        "error: Telegram refused WEBHOOK_URL: Bad webhook: failed to resolve host:"
        " name or service not known"
    )
    assert SECRET not in stderr


async def test_a_stop_asked_for_while_starting_in_webhook_mode_ends_the_run(
    webhook_settings, monkeypatch
):
    """The token watch or the ledger watch may stop the bot during post_init, before
    the loop runs: run_webhook must return, not serve for ever."""
    original = Runtime.start

    async def start_then_stop(self, bot, stop_bot):
        await original(self, bot, stop_bot)
        stop_bot()  # as the token watch does when Telegram refuses the token

    monkeypatch.setattr(Runtime, "start", start_then_stop)
    application = build_application(webhook_settings)
    # In a thread: run_webhook runs its own event loop, as python -m bot does.
    await asyncio.wait_for(asyncio.to_thread(run_webhook, application), timeout=20)
    assert not application.running


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_telegram_reach_follows_the_last_answer():
    from telegram.error import BadRequest, Forbidden, NetworkError, TimedOut

    clock = Clock()
    reach = runtime_module.TelegramReach(clock)
    assert reach.problem() is None  # just started: not yet stale
    clock.now += runtime_module.TELEGRAM_STALE_SECONDS + 1
    assert reach.problem() == "no answer from Telegram for 181 s"
    reach.answered(None)
    assert reach.problem() is None
    clock.now += 5
    reach.answered(TimedOut())
    assert reach.problem() == "Telegram unreachable (no answer for 5 s)"
    reach.answered(Forbidden("bot was blocked"))  # an answer: Telegram is there
    assert reach.problem() is None
    reach.answered(NetworkError("connection refused"))
    assert reach.problem() is not None
    reach.answered(BadRequest("message not found"))  # BadRequest is a NetworkError in PTB
    assert reach.problem() is None


async def test_the_fake_pushes_with_the_secret_and_retries_until_2xx(telegram):
    """Telegram's side of a webhook, as the fake plays it (no bot: a bare receiver)."""
    from aiohttp import web

    received: list[tuple[str | None, dict]] = []

    async def receive(request: web.Request) -> web.Response:
        received.append(
            (request.headers.get("X-Telegram-Bot-Api-Secret-Token"), await request.json())
        )
        return web.Response(status=500 if len(received) == 1 else 200)

    app = web.Application()
    app.router.add_post("/telegram/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        telegram.webhook_proxy = f"http://127.0.0.1:{runner.addresses[0][1]}"
        await telegram._set_webhook({"url": PUBLIC_URL, "secret_token": SECRET})
        telegram.private_chat(USER)
        update_id = telegram.push_update({"message": a_text_update(0)["message"]})
        await wait_until(lambda: telegram.pending_updates() == 0, what="the update taken")
        assert [(uid, status) for uid, status in telegram.webhook_posts] == [
            (update_id, 500),
            (update_id, 200),
        ]
        assert [secret for secret, _ in received] == [SECRET, SECRET]
        assert received[1][1]["update_id"] == update_id
        info = await telegram._get_webhook_info({})
        assert (
            info["last_error_message"]
            == "Wrong response from the webhook: 500 Internal Server Error"
        )
        assert info["pending_update_count"] == 0
    finally:
        await telegram._delete_webhook({})
        await runner.cleanup()


def test_a_short_webhook_secret_is_redacted_from_ptbs_debug_line():
    """Secrets under 6 characters are not replaced everywhere (they would mangle lines),
    but PTB's DEBUG line of setWebhook's parameters never shows one."""
    from bot.logs import RedactingFormatter

    record = logging.LogRecord(
        "telegram.Bot",
        logging.DEBUG,
        __file__,
        1,
        "Calling Bot API endpoint `%s` with parameters `%s`",
        ("setWebhook", {"url": PUBLIC_URL, "secret_token": "Zq9_x", "max_connections": 40}),
        None,
    )
    line = RedactingFormatter(["Zq9_x"]).format(record)
    assert "Zq9_x" not in line
    assert "'secret_token': '***'" in line
