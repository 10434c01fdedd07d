"""The Segmind client against httpx.MockTransport: each answer maps to its error branch."""

import base64
import json
from datetime import UTC, datetime

import httpx
import pytest

from bot.core.errors import (
    BadResponse,
    InputRejected,
    JobFailed,
    KeyRejected,
    NotFound,
    OutOfCredits,
    TemporaryError,
    TooLarge,
)
from bot.core.options import VideoOptions
from bot.segmind import SegmindClient, find_output_url

API = "http://segmind.test"
UPLOAD = "http://upload.test/upload-asset"
KEY = "sg_key"
HISTORY = "http://history.test/inference-request/request-history"
#: Every submit carries its job's seed.
SEEDED = VideoOptions(seed=7)


def client_for(handler) -> tuple[SegmindClient, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return SegmindClient(http, api_key=KEY, api_url=API, upload_url=UPLOAD), http


def history_client(handler, now: float) -> tuple[SegmindClient, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client = SegmindClient(
        http, api_key=KEY, api_url=API, upload_url=UPLOAD, history_url=HISTORY, clock=lambda: now
    )
    return client, http


async def test_submit_sends_the_key_the_chosen_parameters_and_the_seed():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={"request_id": "r1", "status_url": f"{API}/s", "response_url": f"{API}/r"},
        )

    client, http = client_for(handler)
    async with http:
        submission = await client.submit(
            "https://img/x.jpg", VideoOptions(quality="720p", duration=8, seed=31337)
        )
    assert submission.request_id == "r1"
    (request,) = seen
    assert request.url == f"{API}/v2/warmth-of-jesus"
    assert request.headers["x-api-key"] == KEY
    assert json.loads(request.content) == {
        "image_url": "https://img/x.jpg",
        "quality": "720p",
        "duration": 8,
        "seed": 31337,
    }


async def test_submit_includes_seed_and_style_when_set():
    bodies = []

    def handler(request):
        bodies.append(json.loads(request.content))
        return httpx.Response(
            200, json={"request_id": "r", "status_url": "s", "response_url": "r"}
        )

    client, http = client_for(handler)
    async with http:
        await client.submit("https://i", VideoOptions(seed=42, style="clay"))
    assert bodies[0]["seed"] == 42
    assert bodies[0]["style"] == "clay"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"request_id": "r-only"}, "r-only"),  # accepted and charged: the id is enough
        ({"request_id": 12345, "status": "QUEUED"}, "12345"),
        ({"status_url": "s", "response_url": "r"}, None),
        ({"request_id": ""}, None),
        ({"request_id": None}, None),
    ],
)
async def test_a_submit_answer_needs_only_its_request_id(body, expected):
    client, http = client_for(lambda request: httpx.Response(200, json=body))
    async with http:
        if expected is None:
            with pytest.raises(BadResponse):
                await client.submit("https://i", SEEDED)
        else:
            assert (await client.submit("https://i", SEEDED)).request_id == expected


async def test_a_forbidden_combination_never_leaves():
    client, http = client_for(lambda r: pytest.fail("must not be sent"))
    async with http:
        with pytest.raises(InputRejected):
            await client.submit("https://i", VideoOptions(quality="1080p", duration=8, seed=7))


@pytest.mark.parametrize("seed", [None, 0, 1_000_000])
async def test_a_submit_without_a_valid_seed_never_leaves(seed):
    # Without its seed a request whose answer is lost could not be found again.
    client, http = client_for(lambda r: pytest.fail("must not be sent"))
    async with http:
        with pytest.raises(InputRejected):
            await client.submit("https://i", VideoOptions(seed=seed))


@pytest.mark.parametrize(
    ("status", "error", "maybe_sent"),
    [
        (400, InputRejected, None),
        (401, KeyRejected, None),
        (403, KeyRejected, None),
        (406, OutOfCredits, None),
        (429, TemporaryError, False),
        (500, TemporaryError, False),
        (502, TemporaryError, True),
        (504, TemporaryError, True),
    ],
)
async def test_submit_errors_map_to_the_tree(status, error, maybe_sent):
    headers = {"Retry-After": "7"} if status == 429 else {}
    client, http = client_for(
        lambda r: httpx.Response(status, json={"error": "provider text"}, headers=headers)
    )
    async with http:
        with pytest.raises(error) as caught:
            await client.submit("https://i", SEEDED)
    assert caught.value.status == status
    if maybe_sent is not None:
        assert caught.value.maybe_sent is maybe_sent
    if status == 429:
        assert caught.value.retry_after == 7


async def test_a_2xx_without_request_id_is_a_bad_response():
    client, http = client_for(lambda r: httpx.Response(200, json={"status": "ok"}))
    async with http:
        with pytest.raises(BadResponse):
            await client.submit("https://i", SEEDED)


async def test_connection_refused_is_known_not_sent_but_a_read_timeout_is_not():
    def refuse(request):
        raise httpx.ConnectError("refused", request=request)

    def hang(request):
        raise httpx.ReadTimeout("slow", request=request)

    for handler, maybe_sent in ((refuse, False), (hang, True)):
        client, http = client_for(handler)
        async with http:
            with pytest.raises(TemporaryError) as caught:
                await client.submit("https://i", SEEDED)
        assert caught.value.maybe_sent is maybe_sent
        assert caught.value.status is None


async def test_status_reads_states_and_the_422_failed_body():
    answers = iter(
        [
            httpx.Response(200, json={"status": "QUEUED"}),
            httpx.Response(200, json={"status": "PROCESSING"}),
            httpx.Response(422, json={"status": "FAILED", "error": "RAI block"}),
        ]
    )
    client, http = client_for(lambda r: next(answers))
    async with http:
        assert (await client.status("r")).status == "QUEUED"
        assert (await client.status("r")).status == "PROCESSING"
        failed = await client.status("r")
    assert failed.status == "FAILED"
    assert failed.error == "RAI block"


async def test_a_422_without_a_failed_body_is_still_a_failure():
    client, http = client_for(lambda r: httpx.Response(422, text="nope"))
    async with http:
        with pytest.raises(JobFailed):
            await client.status("r")


async def test_expired_request_is_not_found():
    client, http = client_for(lambda r: httpx.Response(404, json={"error": "Request not found"}))
    async with http:
        with pytest.raises(NotFound):
            await client.status("r")


@pytest.mark.parametrize(
    "output",
    [
        "https://cdn/v.mp4",
        ["https://cdn/v.mp4"],
        {"video": "https://cdn/v.mp4"},
        {"data": [{"url": "https://cdn/v.mp4"}]},
    ],
)
async def test_result_finds_the_video_in_any_output_shape(output):
    client, http = client_for(
        lambda r: httpx.Response(200, json={"status": "COMPLETED", "output": output})
    )
    async with http:
        report = await client.result("r")
    assert report.output_url == "https://cdn/v.mp4"


async def test_completed_without_output_is_a_bad_response():
    client, http = client_for(lambda r: httpx.Response(200, json={"status": "COMPLETED"}))
    async with http:
        with pytest.raises(BadResponse):
            await client.result("r")


def test_find_output_url_ignores_non_urls():
    assert find_output_url("not a url") is None
    assert find_output_url({"a": 1}) is None


async def test_upload_sends_a_data_url_and_returns_the_hosted_url():
    seen = []

    def handler(request):
        assert request.headers["content-type"] == "application/json"
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"file_urls": ["https://files/x.jpg"], "message": "ok"})

    client, http = client_for(handler)
    async with http:
        assert await client.upload(b"\xff\xd8abc", "image/jpeg") == "https://files/x.jpg"
        with pytest.raises(InputRejected):  # never spliced into the JSON body
            await client.upload(b"\xff\xd8abc", 'image/jpeg"],"x":["')
    assert seen == [
        {"data_urls": ["data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8abc").decode()]}
    ]


async def test_download_streams_to_disk_without_sending_the_key(tmp_path):
    seen = []

    def handler(request):
        seen.append(request)
        return httpx.Response(200, content=b"v" * 300_000)

    client, http = client_for(handler)
    target = tmp_path / "v.mp4"
    async with http:
        size = await client.download("https://cdn/v.mp4", target, max_bytes=1_000_000)
    assert size == 300_000 == target.stat().st_size
    assert "x-api-key" not in seen[0].headers


async def test_download_over_the_limit_is_too_large_and_leaves_no_file(tmp_path):
    client, http = client_for(lambda r: httpx.Response(200, content=b"v" * 5000))
    target = tmp_path / "v.mp4"
    async with http:
        with pytest.raises(TooLarge):
            await client.download("https://cdn/v.mp4", target, max_bytes=1000)
    assert not target.exists()


async def test_download_of_an_expired_video_is_not_found(tmp_path):
    client, http = client_for(lambda r: httpx.Response(404))
    async with http:
        with pytest.raises(NotFound):
            await client.download("https://cdn/v.mp4", tmp_path / "v", max_bytes=10)


# -- the request history --------------------------------------------------------------

#: 2024-05-01 12:00:00 UTC: the lookups below run then.
NOON = 1_714_564_800.0
IMAGE = "https://cdn.test/assets/a.jpg"


def row(request_id: str, seed: int = 5, image: str = IMAGE, at: float = NOON, **extra):
    """A history row as the SDK describes it: the inputs as sent in ``request_body``."""
    return {
        "request_id": request_id,
        "model_name": "warmth-of-jesus",
        "model_status": "PENDING",
        "credits_deduction": 0.3,
        "request_body": {"image_url": image, "quality": "540p", "duration": 5, "seed": seed},
        "generation_url": None,
        "created_at": datetime.fromtimestamp(at, UTC).isoformat(),
        **extra,
    }


async def test_find_request_asks_the_history_and_matches_image_and_seed():
    seen: list[httpx.Request] = []

    def handler(request):
        seen.append(request)
        return httpx.Response(
            200,
            json={
                "data": [row("other-seed", seed=6), row("other-image", image="x"), row("it")],
                "page": 1,
                "total": 3,
            },
        )

    client, http = history_client(handler, NOON)
    async with http:
        assert await client.find_request(IMAGE, 5, since=NOON - 30) == "it"
    (request,) = seen
    assert str(request.url).split("?")[0] == HISTORY
    assert request.headers["x-api-key"] == KEY
    assert dict(request.url.params) == {
        "model_name": "warmth-of-jesus",
        "from_date": "2024-05-01",
        "to_date": "2024-05-01",
        "page": "1",
        "per_page": "100",
        "sort_order": "desc",
    }


@pytest.mark.parametrize(
    "body",
    [
        [row("it")],  # a bare list
        {"data": {"items": [row("it")], "page": 1}},  # nested
        {"result": {"requests": [row("it")]}},  # found by looking for the list
        {"data": [{**row("it"), "request_body": json.dumps(row("it")["request_body"])}]},
        {"data": [{**row("it"), "request_body": {"image_url": IMAGE, "seed": "5"}}]},
        {"data": [{"request_id": "it", "request_body": {"image_url": IMAGE, "seed": 5}}]},
    ],
    ids=["list", "nested", "other-key", "body-as-json-text", "seed-as-text", "bare-row"],
)
async def test_history_rows_are_read_defensively(body):
    client, http = history_client(lambda r: httpx.Response(200, json=body), NOON)
    async with http:
        assert await client.find_request(IMAGE, 5, since=NOON - 30) == "it"


@pytest.mark.parametrize(
    "rows",
    [
        [],
        [{"request_id": "x"}],  # no request_body
        [{"request_body": {"image_url": IMAGE, "seed": 5}}],  # no request_id
        [row("it", model_name="some-other-model")],
        [row("it", request_body="not json")],
        ["not a row", 5, None, row("other", seed=6)],
    ],
    ids=["empty", "no-body", "no-id", "other-model", "unreadable-body", "mixed-list"],
)
async def test_rows_that_do_not_name_the_request_are_not_a_match(rows):
    client, http = history_client(lambda r: httpx.Response(200, json={"data": rows}), NOON)
    async with http:
        assert await client.find_request(IMAGE, 5, since=NOON - 30) is None


async def test_find_request_pages_while_rows_are_newer_than_the_submit():
    pages: list[int] = []

    def handler(request):
        page = int(request.url.params["page"])
        pages.append(page)
        newer = [row(f"n{page}-{i}", seed=9, at=NOON - i) for i in range(100)]
        return httpx.Response(200, json={"data": newer if page < 3 else [row("it", at=NOON)]})

    client, http = history_client(handler, NOON)
    async with http:
        assert await client.find_request(IMAGE, 5, since=NOON - 3600) == "it"
    assert pages == [1, 2, 3]


async def test_find_request_stops_paging_at_rows_older_than_the_submit():
    pages: list[int] = []

    def handler(request):
        pages.append(int(request.url.params["page"]))
        older = [row(f"o{i}", seed=9, at=NOON - 7200 - i) for i in range(100)]
        return httpx.Response(200, json={"data": older})

    client, http = history_client(handler, NOON)
    async with http:
        assert await client.find_request(IMAGE, 5, since=NOON - 60) is None
    assert pages == [1]


async def test_find_request_reads_a_few_pages_at_most():
    pages: list[int] = []

    def handler(request):
        pages.append(int(request.url.params["page"]))
        undated = [{"request_id": f"u{i}", "request_body": {}} for i in range(100)]
        return httpx.Response(200, json={"data": undated})

    client, http = history_client(handler, NOON)
    async with http:
        assert await client.find_request(IMAGE, 5, since=NOON - 60) is None
    assert pages == [1, 2, 3, 4, 5]


async def test_the_date_window_covers_the_submit_and_now_and_at_most_31_days():
    queries: list[dict[str, str]] = []

    def handler(request):
        queries.append(dict(request.url.params))
        return httpx.Response(200, json={"data": []})

    client, http = history_client(handler, NOON)
    async with http:
        await client.find_request(IMAGE, 5, since=NOON - 86400 * 2)
        await client.find_request(IMAGE, 5, since=NOON - 86400 * 90)
    assert (queries[0]["from_date"], queries[0]["to_date"]) == ("2024-04-29", "2024-05-01")
    assert (queries[1]["from_date"], queries[1]["to_date"]) == ("2024-04-01", "2024-05-01")


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (httpx.Response(500, json={"error": "boom"}), TemporaryError),
        (httpx.Response(503, text="down"), TemporaryError),
        (httpx.Response(429, json={"error": "slow down"}), TemporaryError),
        (httpx.Response(401, json={"error": "Invalid API key"}), KeyRejected),
        (httpx.Response(404, json={"error": "Not found"}), NotFound),
        (httpx.Response(200, text="<html>"), BadResponse),
        (httpx.Response(200, json={"message": "ok"}), BadResponse),
        (httpx.Response(200, json={"data": ["a", 5]}), BadResponse),
    ],
    ids=["500", "503", "429", "401", "404", "not-json", "no-list", "no-rows"],
)
async def test_history_errors_raise_the_core_error_tree(answer, error):
    client, http = history_client(lambda r: answer, NOON)
    async with http:
        with pytest.raises(error):
            await client.find_request(IMAGE, 5, since=NOON - 30)


async def test_a_history_transport_error_is_temporary():
    def hang(request):
        raise httpx.ReadTimeout("slow", request=request)

    client, http = history_client(hang, NOON)
    async with http:
        with pytest.raises(TemporaryError):
            await client.find_request(IMAGE, 5, since=NOON - 30)


async def test_without_a_history_url_a_lookup_fails_without_asking_anyone():
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: pytest.fail("asked")))
    client = SegmindClient(http, api_key=KEY, api_url=API, upload_url=UPLOAD, history_url=None)
    async with http:
        with pytest.raises(TemporaryError):
            await client.find_request(IMAGE, 5, since=NOON)
