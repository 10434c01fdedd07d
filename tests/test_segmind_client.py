"""The Segmind client against httpx.MockTransport: each answer maps to its error branch."""

import json

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


def client_for(handler) -> tuple[SegmindClient, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return SegmindClient(http, api_key=KEY, api_url=API, upload_url=UPLOAD), http


async def test_submit_sends_the_key_and_only_the_chosen_parameters():
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
            "https://img/x.jpg", VideoOptions(quality="720p", duration=8)
        )
    assert submission.request_id == "r1"
    (request,) = seen
    assert request.url == f"{API}/v2/warmth-of-jesus"
    assert request.headers["x-api-key"] == KEY
    assert json.loads(request.content) == {
        "image_url": "https://img/x.jpg",
        "quality": "720p",
        "duration": 8,
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
                await client.submit("https://i", VideoOptions())
        else:
            assert (await client.submit("https://i", VideoOptions())).request_id == expected


async def test_a_forbidden_combination_never_leaves():
    client, http = client_for(lambda r: pytest.fail("must not be sent"))
    async with http:
        with pytest.raises(InputRejected):
            await client.submit("https://i", VideoOptions(quality="1080p", duration=8))


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
            await client.submit("https://i", VideoOptions())
    assert caught.value.status == status
    if maybe_sent is not None:
        assert caught.value.maybe_sent is maybe_sent
    if status == 429:
        assert caught.value.retry_after == 7


async def test_a_2xx_without_request_id_is_a_bad_response():
    client, http = client_for(lambda r: httpx.Response(200, json={"status": "ok"}))
    async with http:
        with pytest.raises(BadResponse):
            await client.submit("https://i", VideoOptions())


async def test_connection_refused_is_known_not_sent_but_a_read_timeout_is_not():
    def refuse(request):
        raise httpx.ConnectError("refused", request=request)

    def hang(request):
        raise httpx.ReadTimeout("slow", request=request)

    for handler, maybe_sent in ((refuse, False), (hang, True)):
        client, http = client_for(handler)
        async with http:
            with pytest.raises(TemporaryError) as caught:
                await client.submit("https://i", VideoOptions())
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
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"file_urls": ["https://files/x.jpg"], "message": "ok"})

    client, http = client_for(handler)
    async with http:
        assert await client.upload(b"\xff\xd8abc", "image/jpeg") == "https://files/x.jpg"
    assert seen[0]["data_urls"][0].startswith("data:image/jpeg;base64,")


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
