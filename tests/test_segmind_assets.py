"""Uploaded images expire (the fake models it like any hosted file), and the real
Segmind client can tell whether one is still served before re-using it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bot.segmind import SegmindClient
from tests.fakes.segmind import MODEL_SLUG, TEST_API_KEY, FakeSegmind

JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 100 + b"\xff\xd9"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSegmind]:
    async with FakeSegmind() as server:
        yield server


@pytest.fixture
async def client(fake: FakeSegmind) -> AsyncIterator[SegmindClient]:
    async with httpx.AsyncClient(timeout=5.0) as http:
        yield SegmindClient(
            http, api_key=TEST_API_KEY, api_url=fake.url, upload_url=fake.upload_url
        )


async def test_an_upload_is_served_until_it_expires(fake, client):
    url = await client.upload(JPEG)
    assert await client.still_serves(url)
    assert fake.asset_checks == 1

    fake.expire_asset(url)
    assert not await client.still_serves(url)
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).status_code == 404


async def test_uploads_expire_after_the_retention(fake, client):
    fake.asset_retention_seconds = 3600.0
    url = await client.upload(JPEG)
    assert await client.still_serves(url)
    fake.advance(3601.0)
    assert not await client.still_serves(url)


async def test_a_submit_naming_an_expired_upload_is_refused(fake, client):
    url = await client.upload(JPEG)
    fake.expire_asset(url)
    async with httpx.AsyncClient(headers={"x-api-key": TEST_API_KEY}) as http:
        response = await http.post(
            f"{fake.url}/v2/{MODEL_SLUG}",
            json={"image_url": url, "quality": "540p", "duration": 5, "seed": 7},
        )
    assert response.status_code == 400
    assert "image" in response.json()["error"]
    assert fake.jobs == {}


async def test_the_check_sends_no_api_key_and_doubt_means_not_served(fake, client):
    url = await client.upload(JPEG)
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(405)  # a host that does not do HEAD

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        strict = SegmindClient(http, api_key=TEST_API_KEY)
        assert not await strict.still_serves(url)
    assert seen[0].method == "HEAD"
    assert "x-api-key" not in seen[0].headers

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
        assert not await SegmindClient(http, api_key=TEST_API_KEY).still_serves(url)


async def test_uploaded_bytes_come_back_while_served(fake, client):
    url = await client.upload(JPEG, "image/jpeg")
    async with httpx.AsyncClient() as http:
        body = (await http.get(url)).content
    assert body == JPEG
