"""The fake Segmind server behaves like the API described in shared/segmind-api.md."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.mp4 import VideoInfo, read_video_info
from tests.fakes.segmind import (
    MODEL_SLUG,
    TEST_API_KEY,
    FakeSegmind,
    video_bytes,
    video_chunks,
)

HEADERS = {"x-api-key": TEST_API_KEY}
VALID_BODY: dict[str, Any] = {
    "image_url": "https://example.com/photo.jpg",
    "duration": 5,
    "quality": "540p",
    "seed": 56698,
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeSegmind]:
    async with FakeSegmind(queued_seconds=0.02, processing_seconds=0.05) as server:
        yield server


@pytest.fixture
async def client(fake: FakeSegmind) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.url, headers=HEADERS, timeout=5.0) as http:
        yield http


async def submit(client: httpx.AsyncClient, **overrides: Any) -> httpx.Response:
    return await client.post(f"/v2/{MODEL_SLUG}", json={**VALID_BODY, **overrides})


async def wait_finished(client: httpx.AsyncClient, request_id: str) -> httpx.Response:
    """Poll the status endpoint until the job leaves QUEUED/PROCESSING."""
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        response = await client.get(f"/v2/requests/{request_id}/status")
        if response.json().get("status") not in ("QUEUED", "PROCESSING"):
            return response
        await asyncio.sleep(0.005)  # a poll loop waiting for a state, like wait_until
    raise AssertionError("job did not finish")


async def test_submit_walks_queued_processing_completed(
    fake: FakeSegmind, client: httpx.AsyncClient
) -> None:
    fake.queued_seconds = fake.processing_seconds = 10.0
    response = await submit(client)
    assert response.status_code == 200
    data = response.json()
    request_id = data["request_id"]
    assert data["status_url"] == f"{fake.url}/v2/requests/{request_id}/status"
    assert data["response_url"] == f"{fake.url}/v2/requests/{request_id}"

    seen: list[str] = []
    for _ in range(3):
        status = await client.get(data["status_url"])
        assert status.status_code == 200
        assert status.json() == {"status": status.json()["status"], "request_id": request_id}
        seen.append(status.json()["status"])
        fake.advance(10.0)
    assert seen == ["QUEUED", "PROCESSING", "COMPLETED"]

    job = fake.jobs[request_id]
    assert job.body == VALID_BODY
    assert fake.submits == [VALID_BODY]
    assert fake.status_polls() == [3]


async def test_job_finishes_on_the_real_clock(
    fake: FakeSegmind, client: httpx.AsyncClient
) -> None:
    request_id = (await submit(client)).json()["request_id"]
    order = ["QUEUED", "PROCESSING", "COMPLETED"]
    seen: list[str] = []
    deadline = time.monotonic() + 3.0
    while not seen or seen[-1] != "COMPLETED":
        assert time.monotonic() < deadline
        status = (await client.get(f"/v2/requests/{request_id}/status")).json()["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        await asyncio.sleep(0.005)  # the scenario: a client polling on the real clock
    assert seen == sorted(seen, key=order.index)  # never goes backwards
    assert fake.jobs[request_id].status_polls >= len(seen)


async def test_result_before_completion_reports_progress(
    fake: FakeSegmind, client: httpx.AsyncClient
) -> None:
    fake.queued_seconds = 10.0
    request_id = (await submit(client)).json()["request_id"]
    response = await client.get(f"/v2/requests/{request_id}")
    assert response.status_code == 200
    assert response.json() == {"status": "QUEUED", "request_id": request_id}
    fake.advance(10.0)
    assert (await client.get(f"/v2/requests/{request_id}")).json()["status"] == "PROCESSING"
    assert fake.jobs[request_id].result_fetches == 2


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ("str", lambda url: url),
        ("list", lambda url: [url]),
        ("dict", lambda url: {"video": url}),
    ],
)
async def test_result_output_shapes(
    fake: FakeSegmind, client: httpx.AsyncClient, shape: Any, expected: Any
) -> None:
    fake.output_shape = shape
    request_id = (await submit(client)).json()["request_id"]
    fake.advance(1.0)
    response = await client.get(f"/v2/requests/{request_id}")
    assert response.status_code == 200
    video_url = f"{fake.url}/outputs/{request_id}.mp4"
    assert response.json() == {
        "status": "COMPLETED",
        "request_id": request_id,
        "output": expected(video_url),
        "metrics": {"inference_time": 50.1},
    }


async def test_video_download_streams_video_size_bytes(
    fake: FakeSegmind, client: httpx.AsyncClient
) -> None:
    fake.video_size = 3 * 64 * 1024 + 17
    request_id = (await submit(client)).json()["request_id"]
    fake.advance(1.0)
    chunks: list[bytes] = []
    async with client.stream("GET", fake.video_url(request_id)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "video/mp4"
        assert response.headers["content-length"] == str(fake.video_size)
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
    body = b"".join(chunks)
    assert body == video_bytes(fake.video_size, header=fake.video_header(request_id))
    assert body[4:8] == b"ftyp"
    assert fake.jobs[request_id].video_downloads == 1


async def test_video_has_an_mp4_header_with_the_jobs_size_and_length(
    fake: FakeSegmind, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """The bot reads the header it downloads; the box sizes add up to the file's."""
    request_id = (await submit(client)).json()["request_id"]  # 540p, 5 s
    fake.advance(1.0)
    body = (await client.get(fake.video_url(request_id))).content
    path = tmp_path / "v.mp4"
    path.write_bytes(body)
    assert read_video_info(path) == VideoInfo(width=960, height=540, duration=5, has_audio=False)
    fake.video_kind = "damaged"
    path.write_bytes((await client.get(fake.video_url(request_id))).content)
    assert read_video_info(path) is None


async def test_video_is_404_before_completion_and_for_unknown_ids(
    fake: FakeSegmind, client: httpx.AsyncClient
) -> None:
    fake.queued_seconds = 10.0
    request_id = (await submit(client)).json()["request_id"]
    assert (await client.get(fake.video_url(request_id))).status_code == 404
    assert (await client.get(fake.video_url("nope"))).status_code == 404


def test_video_chunks_are_bounded_and_deterministic() -> None:
    chunks = list(video_chunks(200_000))
    assert all(len(chunk) <= 64 * 1024 for chunk in chunks)
    assert sum(len(chunk) for chunk in chunks) == 200_000
    assert b"".join(chunks) == video_bytes(200_000)
    assert video_bytes(10) == video_bytes(100)[:10]


async def test_failed_job_is_422_with_error_body(
    fake: FakeSegmind, client: httpx.AsyncClient
) -> None:
    fake.fail_next_job()
    request_id = (await submit(client)).json()["request_id"]
    status = await wait_finished(client, request_id)
    expected = {
        "status": "FAILED",
        "request_id": request_id,
        "error": "Content blocked by safety filter (RAI)",
    }
    assert status.status_code == 422
    assert status.json() == expected
    result = await client.get(f"/v2/requests/{request_id}")
    assert result.status_code == 422
    assert result.json() == expected

    # Only the next accepted job fails.
    other = (await submit(client)).json()["request_id"]
    assert (await wait_finished(client, other)).json()["status"] == "COMPLETED"


async def test_expire_makes_status_result_and_video_404(
    fake: FakeSegmind, client: httpx.AsyncClient
) -> None:
    request_id = (await submit(client)).json()["request_id"]
    assert (await wait_finished(client, request_id)).status_code == 200
    fake.expire(request_id)
    for path in (
        f"/v2/requests/{request_id}/status",
        f"/v2/requests/{request_id}",
        f"/outputs/{request_id}.mp4",
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
    assert (await client.get(f"/v2/requests/{request_id}")).json() == {
        "error": "Request not found"
    }


async def test_results_expire_after_retention(
    fake: FakeSegmind, client: httpx.AsyncClient
) -> None:
    request_id = (await submit(client)).json()["request_id"]
    fake.advance(3000.0)
    assert (await client.get(f"/v2/requests/{request_id}/status")).status_code == 200
    fake.advance(700.0)
    assert (await client.get(f"/v2/requests/{request_id}/status")).status_code == 404
    assert (await client.get(f"/v2/requests/{request_id}")).status_code == 404


async def test_retention_knob_applies_at_runtime(
    fake: FakeSegmind, client: httpx.AsyncClient
) -> None:
    fake.retention_seconds = 0.01
    request_id = (await submit(client)).json()["request_id"]
    fake.advance(1.0)  # finished 0.93 s ago: gone with 0.01 s retention, kept with the default
    assert (await client.get(f"/v2/requests/{request_id}/status")).status_code == 404


async def test_unknown_request_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/requests/does-not-exist/status")
    assert response.status_code == 404
    assert response.json() == {"error": "Request not found"}


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "sg_wrong"}])
async def test_missing_or_wrong_key_is_401(fake: FakeSegmind, headers: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=fake.url, headers=headers) as anonymous:
        responses = [
            await anonymous.post(f"/v2/{MODEL_SLUG}", json=VALID_BODY),
            await anonymous.get("/v2/requests/x/status"),
            await anonymous.get("/v2/requests/x"),
            await anonymous.post("/upload-asset", json={"data_urls": []}),
        ]
    for response in responses:
        assert response.status_code == 401
        assert response.json() == {"error": "Invalid API key"}
    assert fake.jobs == {}
    assert fake.submits == [VALID_BODY]  # refused attempts are still recorded


@pytest.mark.parametrize(
    "overrides",
    [
        {"quality": "1080p", "duration": 8},
        {"quality": "4k"},
        {"quality": None},
        {"duration": 6},
        {"duration": "5"},
        {"duration": True},
        {"duration": None},
        {"seed": 0},
        {"seed": 1_000_000},
        {"seed": "42"},
        {"style": "watercolour"},
        {"image_url": "ftp://example.com/a.jpg"},
        {"image_url": "not a url"},
        {"image_url": None},
        {"image_url": 42},
    ],
)
async def test_invalid_parameters_are_400(
    fake: FakeSegmind, client: httpx.AsyncClient, overrides: dict[str, Any]
) -> None:
    body = {k: v for k, v in {**VALID_BODY, **overrides}.items() if v is not None}
    response = await client.post(f"/v2/{MODEL_SLUG}", json=body)
    assert response.status_code == 400
    assert isinstance(response.json()["error"], str)
    assert fake.jobs == {}
    assert fake.submits == [body]


async def test_non_json_body_is_400(fake: FakeSegmind, client: httpx.AsyncClient) -> None:
    response = await client.post(f"/v2/{MODEL_SLUG}", content=b"{not json")
    assert response.status_code == 400
    assert fake.submits == [{}]


@pytest.mark.parametrize(
    "overrides",
    [
        {"quality": "1080p", "duration": 5},
        {"quality": "360p", "duration": 8},
        {"seed": 1},
        {"seed": 999_999},
        {"style": "anime"},
        {"style": None},
        {"unknown_key": "ignored"},
    ],
)
async def test_valid_variants_are_accepted(
    client: httpx.AsyncClient, overrides: dict[str, Any]
) -> None:
    response = await submit(client, **overrides)
    assert response.status_code == 200, response.text


async def test_credits_run_out_with_406(fake: FakeSegmind, client: httpx.AsyncClient) -> None:
    fake.credits = 2
    assert (await submit(client)).status_code == 200
    assert (await submit(client, quality="4k")).status_code == 400  # refused: costs nothing
    assert fake.credits == 1
    assert (await submit(client)).status_code == 200
    assert fake.credits == 0
    response = await submit(client)
    assert response.status_code == 406
    assert response.json() == {"error": "Insufficient credits"}
    assert len(fake.jobs) == 2
    assert len(fake.submits) == 4


async def test_fail_next_submit_429_with_retry_after(
    fake: FakeSegmind, client: httpx.AsyncClient
) -> None:
    fake.credits = 5
    fake.fail_next_submit(429, retry_after=7, times=2)
    for _ in range(2):
        response = await submit(client)
        assert response.status_code == 429
        assert response.headers["retry-after"] == "7"
        assert response.json() == {"error": "Rate limit exceeded"}
    assert fake.jobs == {}
    assert fake.credits == 5
    assert (await submit(client)).status_code == 200
    assert fake.credits == 4


@pytest.mark.parametrize(
    ("status", "error"),
    [(500, "Internal server error"), (502, "Bad gateway"), (504, "Gateway timeout")],
)
async def test_fail_next_submit_5xx_bodies(
    fake: FakeSegmind, client: httpx.AsyncClient, status: int, error: str
) -> None:
    fake.fail_next_submit(status)
    response = await submit(client)
    assert response.status_code == status
    assert response.json() == {"error": error}
    assert "retry-after" not in response.headers


async def test_fail_next_status_applies_to_status_and_result(
    fake: FakeSegmind, client: httpx.AsyncClient
) -> None:
    request_id = (await submit(client)).json()["request_id"]
    fake.advance(1.0)
    fake.fail_next_status(502, times=2)
    fake.fail_next_status(429, error="Slow down", retry_after=3)
    assert (await client.get(f"/v2/requests/{request_id}/status")).status_code == 502
    assert (await client.get(f"/v2/requests/{request_id}")).status_code == 502
    limited = await client.get(f"/v2/requests/{request_id}/status")
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "3"
    assert limited.json() == {"error": "Slow down"}
    assert (await client.get(f"/v2/requests/{request_id}")).status_code == 200
    assert fake.jobs[request_id].status_polls == 2
    assert fake.jobs[request_id].result_fetches == 2


async def test_accept_then_drop_next_submit(fake: FakeSegmind, client: httpx.AsyncClient) -> None:
    fake.credits = 3
    fake.accept_then_drop_next_submit()
    with pytest.raises(httpx.RemoteProtocolError):
        await submit(client)
    assert len(fake.jobs) == 1
    assert fake.credits == 2
    assert fake.requests_log[-1][1:] == ("POST", f"/v2/{MODEL_SLUG}", 0)

    # The job runs anyway, and the next submit is answered normally.
    (request_id,) = fake.jobs
    assert (await wait_finished(client, request_id)).json()["status"] == "COMPLETED"
    assert (await submit(client)).status_code == 200


async def test_submit_delay_lets_clients_time_out(
    fake: FakeSegmind, client: httpx.AsyncClient
) -> None:
    fake.submit_delay = 0.5
    with pytest.raises(httpx.ReadTimeout):
        await client.post(f"/v2/{MODEL_SLUG}", json=VALID_BODY, timeout=0.1)
    assert len(fake.jobs) == 1


async def test_upload_asset_round_trip(fake: FakeSegmind, client: httpx.AsyncClient) -> None:
    image = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4
    data_url = "data:image/jpeg;base64," + base64.b64encode(image).decode()
    response = await client.post(fake.upload_url, json={"data_urls": [data_url]})
    assert response.status_code == 200
    data = response.json()
    assert data["message"] == "Files uploaded successfully"
    (file_url,) = data["file_urls"]
    assert file_url.startswith(f"{fake.url}/assets/")
    assert file_url.endswith(".jpg")
    assert fake.uploads == [len(image)]

    async with httpx.AsyncClient() as anonymous:  # asset URLs are public
        asset = await anonymous.get(file_url)
    assert asset.status_code == 200
    assert asset.content == image
    assert asset.headers["content-type"] == "image/jpeg"


@pytest.mark.parametrize(
    "payload",
    [
        {"data_urls": ["https://example.com/a.jpg"]},
        {"data_urls": ["data:image/jpeg;base64,@@@not base64@@@"]},
        {"data_urls": ["data:text/plain;base64,aGVsbG8="]},
        {"data_urls": ["data:image/jpeg;base64,"]},
        {"data_urls": []},
        {"data_urls": "data:image/jpeg;base64,aGVsbG8="},
        {},
    ],
)
async def test_upload_rejects_bad_data_urls(
    fake: FakeSegmind, client: httpx.AsyncClient, payload: dict[str, Any]
) -> None:
    response = await client.post(fake.upload_url, json=payload)
    assert response.status_code == 400
    assert isinstance(response.json()["error"], str)
    assert fake.uploads == []


async def test_unknown_asset_is_404(fake: FakeSegmind, client: httpx.AsyncClient) -> None:
    assert (await client.get(f"{fake.url}/assets/missing.jpg")).status_code == 404


async def test_fail_next_upload(fake: FakeSegmind, client: httpx.AsyncClient) -> None:
    fake.fail_next_upload(500)
    data_url = "data:image/png;base64," + base64.b64encode(b"png").decode()
    response = await client.post(fake.upload_url, json={"data_urls": [data_url]})
    assert response.status_code == 500
    assert response.json() == {"error": "Internal server error"}
    response = await client.post(fake.upload_url, json={"data_urls": [data_url]})
    assert response.status_code == 200
    assert response.json()["file_urls"][0].endswith(".png")


async def test_requests_log_records_every_request(
    fake: FakeSegmind, client: httpx.AsyncClient
) -> None:
    await submit(client)
    await client.get("/v2/requests/nope/status")
    await client.get("/no/such/route")
    logged = [entry[1:] for entry in fake.requests_log]
    assert logged == [
        ("POST", f"/v2/{MODEL_SLUG}", 200),
        ("GET", "/v2/requests/nope/status", 404),
        ("GET", "/no/such/route", 404),
    ]
    times = [entry[0] for entry in fake.requests_log]
    assert times == sorted(times)


async def test_stop_is_idempotent_and_url_needs_start() -> None:
    server = FakeSegmind()
    with pytest.raises(RuntimeError):
        _ = server.url
    await server.start()
    await server.stop()
    await server.stop()


# -- the request history ------------------------------------------------------------------


async def history(client: httpx.AsyncClient, **params: Any) -> httpx.Response:
    return await client.get("/inference-request/request-history", params=params)


async def test_history_lists_requests_with_their_body_as_sent_newest_first(
    fake: FakeSegmind, client: httpx.AsyncClient
) -> None:
    fake.queued_seconds = fake.processing_seconds = 10.0
    first = (await submit(client, seed=1)).json()["request_id"]
    second = (await submit(client, seed=2, style="clay")).json()["request_id"]
    fake.fail_next_job()
    third = (await submit(client, seed=3)).json()["request_id"]
    fake.jobs[first].submitted_at -= 20.0  # finished by now
    fake.jobs[third].submitted_at -= 20.0  # failed by now

    response = await history(client, model_name=MODEL_SLUG, per_page=100)
    assert response.status_code == 200
    body = response.json()
    rows = body["data"]
    assert [row["request_id"] for row in rows] == [third, second, first]
    assert body["pagination"] == {"page": 1, "per_page": 100, "total": 3, "total_pages": 1}
    assert rows[1]["request_body"] == {**VALID_BODY, "seed": 2, "style": "clay"}
    assert [row["model_status"] for row in rows] == ["FAILED", "PENDING", "COMPLETED"]
    assert rows[0]["error"] == "Content blocked by safety filter (RAI)"
    assert rows[2]["generation_url"] == fake.video_url(first)
    assert rows[1]["generation_url"] is None
    for row in rows:
        assert row["model_name"] == MODEL_SLUG
        assert row["model_created"].endswith("Z")
        assert row["credits_deduction"] > 0
    assert fake.history_lookups == 1


async def test_history_pages_and_filters(fake: FakeSegmind, client: httpx.AsyncClient) -> None:
    ids = [(await submit(client, seed=seed)).json()["request_id"] for seed in range(1, 6)]
    page1 = (await history(client, per_page=2, page=1)).json()["data"]
    page3 = (await history(client, per_page=2, page=3)).json()["data"]
    page4 = (await history(client, per_page=2, page=4)).json()["data"]
    assert [row["request_id"] for row in page1] == ids[:2:-1][:2]
    assert [row["request_id"] for row in page3] == [ids[0]]
    assert page4 == []
    ascending = (await history(client, sort_order="asc")).json()["data"]
    assert [row["request_id"] for row in ascending] == ids
    assert (await history(client, model_name="other-model")).json()["data"] == []
    assert (await history(client, status="FAILED")).json()["data"] == []
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert len((await history(client, from_date=today, to_date=today)).json()["data"]) == 5
    past = (await history(client, from_date="2020-01-01", to_date="2020-01-31")).json()
    assert past["data"] == []


@pytest.mark.parametrize(
    "params",
    [
        {"per_page": 101},
        {"per_page": 0},
        {"page": 0},
        {"from_date": "2024-01-01", "to_date": "2024-03-01"},  # over 31 days
        {"from_date": "2024-02-01", "to_date": "2024-01-01"},
        {"from_date": "yesterday"},
    ],
)
async def test_history_refuses_what_segmind_refuses(
    fake: FakeSegmind, client: httpx.AsyncClient, params: dict[str, Any]
) -> None:
    response = await history(client, **params)
    assert response.status_code == 400
    assert isinstance(response.json()["error"], str)


async def test_history_needs_the_key_and_can_be_made_to_fail(
    fake: FakeSegmind, client: httpx.AsyncClient
) -> None:
    async with httpx.AsyncClient(base_url=fake.url) as anonymous:
        assert (await anonymous.get("/inference-request/request-history")).status_code == 401
    fake.fail_next_history(503, times=2)
    assert (await history(client)).status_code == 503
    assert (await history(client)).status_code == 503
    assert (await history(client)).status_code == 200
    assert fake.history_lookups == 4


async def test_a_fresh_record_lands_in_the_history_after_the_lag(
    fake: FakeSegmind, client: httpx.AsyncClient
) -> None:
    fake.history_lag_seconds = 30.0
    request_id = (await submit(client)).json()["request_id"]
    assert (await history(client)).json()["data"] == []
    one = f"/inference-request/request-history/{request_id}"
    assert (await client.get(one)).status_code == 404
    fake.advance(30.0)
    (row,) = (await history(client)).json()["data"]
    assert row["request_id"] == request_id
    assert row["request_body"] == VALID_BODY
    single = await client.get(one)
    assert single.status_code == 200
    assert single.json()["request_id"] == request_id


async def test_accept_then_drop_takes_a_count_and_every_dropped_submit_is_in_the_history(
    fake: FakeSegmind, client: httpx.AsyncClient
) -> None:
    fake.credits = 5
    fake.accept_then_drop_next_submit(times=2)
    for seed in (11, 12):
        with pytest.raises(httpx.RemoteProtocolError):
            await submit(client, seed=seed)
    assert (await submit(client, seed=13)).status_code == 200
    assert fake.credits == 2  # all three charged
    rows = (await history(client)).json()["data"]
    assert [row["request_body"]["seed"] for row in rows] == [13, 12, 11]


async def test_held_submit_answers_are_accepted_and_wait_for_release(
    fake: FakeSegmind, client: httpx.AsyncClient
) -> None:
    fake.hold_submit_answers()
    pending = [asyncio.create_task(submit(client, seed=seed)) for seed in (1, 2, 3)]
    deadline = time.monotonic() + 3.0
    while len(fake.jobs) < 3:  # accepted (and charged) while nobody has an answer
        assert time.monotonic() < deadline, "submits not accepted"
        await asyncio.sleep(0.005)
    assert not any(task.done() for task in pending)
    assert len((await history(client)).json()["data"]) == 3
    fake.release_submit_answers()
    answers = await asyncio.gather(*pending)
    assert sorted(answer.json()["request_id"] for answer in answers) == sorted(fake.jobs)
    assert (await submit(client)).status_code == 200  # no longer held


async def test_a_held_upload_waits_for_release_and_a_client_gone_stores_nothing(
    fake: FakeSegmind, client: httpx.AsyncClient
) -> None:
    data_url = "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8jpeg").decode()
    deadline = time.monotonic() + 3.0

    # A client that gives up while its upload is held: nothing stored, nothing held.
    fake.hold_next_upload()
    with pytest.raises(httpx.ReadTimeout):
        await client.post(fake.upload_url, json={"data_urls": [data_url]}, timeout=0.2)
    while fake.uploads_held:  # the fake notices the closed connection
        assert time.monotonic() < deadline, "the abandoned upload is still held"
        await asyncio.sleep(0.005)
    assert fake.uploads == []

    gate = fake.hold_next_upload()
    pending = asyncio.create_task(client.post(fake.upload_url, json={"data_urls": [data_url]}))
    while fake.uploads_held < 1:  # read in full, waiting at its gate
        assert time.monotonic() < deadline, "upload not held"
        await asyncio.sleep(0.005)
    assert not pending.done()
    assert fake.uploads == []
    gate.set()
    answer = await pending
    assert answer.status_code == 200
    assert fake.uploads == [len(b"\xff\xd8jpeg")]
    assert fake.uploads_held == 0
    again = await client.post(fake.upload_url, json={"data_urls": [data_url]})
    assert again.status_code == 200  # only the next one was held
