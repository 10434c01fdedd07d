"""A submit whose answer never arrived is looked up in Segmind's request history.

SUBMITTING keeps the job's seed, the image URL it sent and when it left; a lost answer
(a dropped connection, a 502/504, an unreadable 2xx, an answer the ledger could not
write) or a job found in SUBMITTING at a step's start is looked up by that pair, with
backoff, for HISTORY_LOOKUP_SECONDS from the submit. Found: QUEUED with that request_id,
and on to the one video. Not found: UNCERTAIN, one operator alert. Never a resubmit.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from bot.core.alerts import AlertKind
from bot.core.jobs import Job, JobState, Reason
from bot.core.options import VideoOptions
from bot.core.ports import Progress
from bot.core.tracker import (
    HISTORY_LOOKUP_SECONDS,
    LOOKUP_FIRST_DELAY,
    LOOKUP_MAX_DELAY,
)
from tests.core.conftest import LIMITS, USER, Harness, run_until_settled
from tests.core.doubles import API_KEY, CDN_URL, Reply

S = JobState

#: Ways a submit's answer is lost after Segmind accepted (and charged for) the job.
LOST_ANSWERS: list[Any] = [
    httpx.ReadTimeout,
    httpx.RemoteProtocolError,
    502,
    504,
    Reply(200, raw=b"<html>Gateway</html>"),
    Reply(200, body={"status": "QUEUED"}),
]
LOST_IDS = ["read-timeout", "connection-closed", "502", "504", "not-json", "no-request-id"]


async def step_until_left_submitting(h: Harness, job_id: int, max_steps: int = 50) -> list[float]:
    """Step the job, advancing the clock by each delay, until it is past SUBMITTING."""
    delays: list[float] = []
    for _ in range(max_steps):
        if (await h.job(job_id)).state not in (S.PREPARING, S.SUBMITTING):
            return delays
        delay = await h.step(job_id)
        assert delay is not None
        delays.append(delay)
        h.clock.advance(delay)
    raise AssertionError(f"still submitting after {max_steps} steps: {delays[-5:]}")


def history_queries(h: Harness) -> list[dict[str, str]]:
    return [dict(httpx.URL(seen.url).params) for seen in h.segmind.seen("history")]


# -- the seed -----------------------------------------------------------------------------


async def test_the_seed_and_image_url_are_stored_before_the_submit_leaves(h: Harness):
    job = await h.new_job()
    assert job.options.seed is None  # nothing chosen at Generate
    during_post: list[Job] = []

    async def look(_body):
        during_post.append(await h.job(job.id))

    h.segmind.on_submit = look
    await h.step(job.id)
    (stored,) = during_post
    assert stored.state is S.SUBMITTING
    assert stored.options.seed is not None
    assert 1 <= stored.options.seed <= 999_999
    assert stored.image_url == f"{CDN_URL}/assets/upload-1.jpg"
    assert stored.submit_sent_at == h.clock.now
    (submit,) = h.segmind.seen("submit")
    assert submit.json["seed"] == stored.options.seed
    assert submit.json["image_url"] == stored.image_url
    queued = await h.job(job.id)
    assert queued.options.seed == stored.options.seed  # kept for good


async def test_every_job_gets_its_own_seed(h: Harness):
    seeds = set()
    for _ in range(5):
        job = await h.new_job()
        await h.step(job.id)
        seeds.add((await h.job(job.id)).options.seed)
    assert len(seeds) == 5
    assert [seen.json["seed"] for seen in h.segmind.seen("submit")] == [
        (await h.job(job_id)).options.seed for job_id in range(1, 6)
    ]


async def test_a_submit_that_never_left_is_sent_again_with_the_same_seed(h: Harness):
    job = await h.new_job()
    h.segmind.fail("submit", httpx.ConnectError)
    delay = await h.step(job.id)
    assert delay is not None
    h.clock.advance(delay)
    await h.step(job.id)
    first, second = h.segmind.seen("submit")
    assert first.json["seed"] == second.json["seed"] == (await h.job(job.id)).options.seed


async def test_try_again_gets_a_new_seed(h: Harness):
    job, _ = await h.sent_job(accepted=False, seed=1234, sent_ago=HISTORY_LOOKUP_SECONDS)
    await run_until_settled(h, job.id)
    assert (await h.job(job.id)).state is S.UNCERTAIN
    retry = (await h.ledger.start_retry(job.id, USER, LIMITS, None)).job
    assert retry is not None
    assert retry.options.seed is None  # not the lost request's seed
    await h.step(retry.id)
    sent = (await h.job(retry.id)).options.seed
    assert sent is not None
    assert sent != 1234
    assert h.segmind.seen("submit")[-1].json["seed"] == sent


# -- found after a lost answer ------------------------------------------------------------


@pytest.mark.parametrize("lost", LOST_ANSWERS, ids=LOST_IDS)
async def test_a_lost_answer_is_found_in_the_history_and_the_video_delivered(h: Harness, lost):
    job = await h.new_job()
    h.segmind.accept_then(lost)
    delay = await h.step(job.id)
    # Still SUBMITTING (not UNCERTAIN): the history is asked shortly.
    assert delay == LOOKUP_FIRST_DELAY
    sent = await h.job(job.id)
    assert sent.state is S.SUBMITTING
    assert h.segmind.accepted == ["req-1"]
    assert h.messenger.methods() == ["fetch_photo"]

    h.clock.advance(delay)
    await h.step(job.id)
    queued = await h.job(job.id)
    assert (queued.state, queued.request_id) == (S.QUEUED, "req-1")
    # The job has run at Segmind since the submit left: its deadline counts from then.
    assert queued.submitted_at == sent.submit_sent_at
    assert h.moved(job.id) == [(S.PREPARING, S.SUBMITTING), (S.SUBMITTING, S.QUEUED)]
    assert h.messenger.stages()[0] is Progress.QUEUED

    h.segmind.jobs["req-1"].status = "COMPLETED"
    await run_until_settled(h, job.id)
    delivered = await h.job(job.id)
    assert delivered.state is S.DELIVERED
    assert len(h.messenger.videos) == 1
    assert h.segmind.count("submit") == 1  # zero new submits
    assert h.segmind.count("history") == 1
    assert h.alerts.of(AlertKind.SUBMIT_LOST) == []


async def test_the_lookup_asks_for_this_model_newest_first_over_the_days_since_the_submit(
    h: Harness,
):
    # A submit just after midnight UTC, looked up a day later (a restart after downtime).
    h.clock.now = datetime(2024, 3, 10, 0, 5, tzinfo=UTC).timestamp()
    job, request = await h.sent_job(sent_ago=0)
    assert request is not None
    h.clock.advance(86400.0)
    await h.step(job.id)
    assert (await h.job(job.id)).request_id == request.request_id
    (query,) = history_queries(h)
    assert query == {
        "model_name": "warmth-of-jesus",
        "from_date": "2024-03-09",  # a little before the submit, for clock differences
        "to_date": "2024-03-11",
        "page": "1",
        "per_page": "100",
        "sort_order": "desc",
    }
    assert h.segmind.seen("history")[0].headers["x-api-key"] == API_KEY


async def test_only_the_request_with_this_image_and_seed_matches(h: Harness):
    job, _ = await h.sent_job(accepted=False, seed=777)
    assert job.image_url is not None
    # Same photo, other seed; same seed, other photo: neither is this job's request.
    h.segmind.add_job("other-seed", payload={"image_url": job.image_url, "seed": 778})
    h.segmind.add_job("other-photo", payload={"image_url": f"{CDN_URL}/x.jpg", "seed": 777})
    h.segmind.add_job("this-one", payload={"image_url": job.image_url, "seed": 777})
    h.segmind.add_job("newer-other", payload={"image_url": job.image_url, "seed": 1})
    await h.step(job.id)
    assert (await h.job(job.id)).request_id == "this-one"


async def test_the_lookup_pages_past_newer_requests(h: Harness):
    job, request = await h.sent_job(sent_ago=60)
    assert request is not None
    for i in range(150):  # other users' jobs since, newest first ahead of ours
        h.segmind.add_job(f"later-{i}", payload={"image_url": f"{CDN_URL}/{i}.jpg", "seed": i})
    await h.step(job.id)
    assert (await h.job(job.id)).request_id == request.request_id
    assert [q["page"] for q in history_queries(h)] == ["1", "2"]


async def test_the_lookup_stops_at_rows_older_than_the_submit(h: Harness):
    for i in range(250):  # a busy day before the submit
        h.segmind.add_job(f"earlier-{i}", payload={"seed": i}, created_at=h.clock() - 7200 + i)
    h.clock.advance(60)
    job, _ = await h.sent_job(accepted=False)
    await h.step(job.id)
    assert (await h.job(job.id)).state is S.SUBMITTING
    assert [q["page"] for q in history_queries(h)] == ["1"]  # page 1 reached older rows


# -- record lag, errors, the window ------------------------------------------------------


async def test_a_record_that_lands_late_is_found_on_a_later_lookup(h: Harness):
    h.segmind.history_lag = 20.0
    job = await h.new_job()
    h.segmind.accept_then(httpx.ReadTimeout)
    delays = await step_until_left_submitting(h, job.id)
    queued = await h.job(job.id)
    assert (queued.state, queued.request_id) == (S.QUEUED, "req-1")
    lookups = h.segmind.count("history")
    assert lookups >= 3  # not found at first
    assert sum(delays[:-1]) >= 20.0
    # Backing off: each wait longer than the one before (jitter stays within a fifth).
    waits = delays[1:-1]
    assert all(later > earlier for earlier, later in zip(waits, waits[1:], strict=False))
    assert h.segmind.count("submit") == 1
    assert h.alerts.sent == []


@pytest.mark.parametrize(
    "trouble",
    [500, 503, 429, 401, 404, httpx.ReadTimeout, httpx.ConnectError, Reply(200, raw=b"<html>")],
    ids=["500", "503", "429", "401", "404", "timeout", "refused", "not-json"],
)
async def test_history_errors_count_as_not_yet_and_are_retried(h: Harness, trouble):
    job = await h.new_job()
    h.segmind.accept_then(httpx.ReadTimeout)
    h.segmind.fail("history", trouble, trouble, trouble)
    await step_until_left_submitting(h, job.id)
    queued = await h.job(job.id)
    assert (queued.state, queued.request_id) == (S.QUEUED, "req-1")
    assert h.segmind.count("history") == 4
    assert h.segmind.count("submit") == 1
    assert h.alerts.of(AlertKind.SUBMIT_LOST) == []


async def test_not_found_within_the_window_is_uncertain_and_alerts_once(h: Harness):
    first = await h.new_job()
    second = await h.new_job()
    h.segmind.fail("submit", httpx.ReadTimeout, httpx.ReadTimeout)  # never made it
    await h.step(first.id)
    await h.step(second.id)
    delays = await run_until_settled(h, first.id, until=S.UNCERTAIN, max_steps=40)
    assert max(delays) <= LOOKUP_MAX_DELAY
    await run_until_settled(h, second.id, until=S.UNCERTAIN, max_steps=40)
    for job_id in (first.id, second.id):
        ended = await h.job(job_id)
        assert (ended.state, ended.reason) == (S.UNCERTAIN, Reason.CONNECTION_LOST)
        assert ended.submit_sent_at is not None
        assert ended.finished_at is not None
        assert ended.finished_at - ended.submit_sent_at == pytest.approx(
            HISTORY_LOOKUP_SECONDS, abs=0.01
        )
    # One incident, one alert; each user told with a Try again.
    assert h.alerts.sent == [(AlertKind.SUBMIT_LOST, False)]
    await run_until_settled(h, first.id)
    await run_until_settled(h, second.id)
    assert [c.args for c in h.messenger.calls_to("send_outcome")] == [
        (Reason.CONNECTION_LOST,),
        (Reason.CONNECTION_LOST,),
    ]
    assert h.segmind.count("submit") == 2


async def test_a_history_that_fails_all_window_long_ends_uncertain(h: Harness):
    job = await h.new_job()
    h.segmind.accept_then(httpx.ReadTimeout)
    h.segmind.fail("history", *([500] * 100))
    await run_until_settled(h, job.id, until=S.UNCERTAIN, max_steps=40)
    ended = await h.job(job.id)
    assert ended.state is S.UNCERTAIN
    assert h.alerts.sent == [(AlertKind.SUBMIT_LOST, False)]
    assert h.segmind.count("submit") == 1  # paid and lost: never resubmitted on its own


# -- found in SUBMITTING when a step begins (a restart) -----------------------------------


async def test_a_job_found_submitting_is_looked_up_and_carries_on(h: Harness):
    job, request = await h.sent_job(sent_ago=1.0)  # the process died around the POST
    assert request is not None
    request.status = "COMPLETED"
    await h.step(job.id)
    queued = await h.job(job.id)
    assert (queued.state, queued.request_id) == (S.QUEUED, request.request_id)
    await run_until_settled(h, job.id)
    assert (await h.job(job.id)).state is S.DELIVERED
    assert len(h.messenger.videos) == 1
    assert h.segmind.count("submit") == 0
    assert h.segmind.count("upload") == 0


async def test_restarted_long_after_the_submit_one_clean_answer_decides(h: Harness):
    job, _ = await h.sent_job(accepted=False, sent_ago=3600.0)
    assert await h.step(job.id) == 0.0
    assert (await h.job(job.id)).state is S.UNCERTAIN
    assert h.segmind.count("history") == 1
    assert h.alerts.sent == [(AlertKind.SUBMIT_LOST, False)]


async def test_restarted_long_after_the_submit_a_failing_history_gets_a_whole_window(
    h: Harness,
):
    job, request = await h.sent_job(sent_ago=3600.0)
    h.segmind.fail("history", *([503] * 6))
    delays = await step_until_left_submitting(h, job.id)
    assert sum(delays) < HISTORY_LOOKUP_SECONDS
    queued = await h.job(job.id)
    assert request is not None
    assert (queued.state, queued.request_id) == (S.QUEUED, request.request_id)


async def test_with_lookups_off_a_lost_answer_is_uncertain_at_once(h: Harness):
    h.configure(history_lookup_seconds=0.0)
    job = await h.new_job()
    h.segmind.accept_then(httpx.ReadTimeout)
    assert await h.step(job.id) == 0.0
    assert await h.step(job.id) == 0.0
    assert (await h.job(job.id)).state is S.UNCERTAIN
    assert h.segmind.count("history") == 0


async def test_a_submitting_job_is_looked_up_without_meeting_the_chat(h: Harness):
    job, _ = await h.sent_job(accepted=False)
    delay = await h.step(job.id)
    assert delay is not None
    assert 0 < delay <= LOOKUP_FIRST_DELAY
    assert h.messenger.calls == []
    assert h.segmind.count("history") == 1


# -- an answer the ledger could not write ------------------------------------------------


async def test_a_request_id_the_ledger_cannot_write_is_logged_kept_and_written_later(
    h: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    job = await h.new_job()
    real = h.ledger.transition
    full = {"left": 2}

    async def disk_full(job_id, source, target, **fields):
        if target is S.QUEUED and full["left"]:
            full["left"] -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return await real(job_id, source, target, **fields)

    monkeypatch.setattr(h.ledger, "transition", disk_full)
    with caplog.at_level(logging.WARNING, logger="bot.core.tracker"):
        delay = await h.step(job.id)
    assert delay is not None
    assert (await h.job(job.id)).state is S.SUBMITTING
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("req-1" in line and "could not record" in line for line in warned), warned

    h.clock.advance(delay)
    await h.step(job.id)  # still full: kept in memory
    assert (await h.job(job.id)).state is S.SUBMITTING
    assert await run_until_settled(h, job.id, until=S.QUEUED)
    queued = await h.job(job.id)
    assert (queued.state, queued.request_id) == (S.QUEUED, "req-1")
    assert h.segmind.count("submit") == 1
    assert h.segmind.count("history") == 0  # the answer was in hand all along


async def test_chosen_options_go_with_a_recovered_job(h: Harness):
    job = await h.new_job(VideoOptions(quality="720p", duration=8, style="clay"))
    h.segmind.accept_then(504)
    await step_until_left_submitting(h, job.id)
    (submit,) = h.segmind.seen("submit")
    assert submit.json["quality"] == "720p"
    assert submit.json["style"] == "clay"
    assert (await h.job(job.id)).request_id == "req-1"
