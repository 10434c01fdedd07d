"""bot.http_pool: the connection pool's upkeep no longer looks at every connection for
every request, and still never sends on a connection the server closed, closes lapsed
idle connections, and keeps at most ``max_keepalive_connections`` idle.

Against a small HTTP/1.1 server on 127.0.0.1 that counts its connections; the pool's
clock is a fake, so whether the periodic sweep runs is the test's choice, not timing's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpcore
import httpx
import pytest

from bot.http_pool import SWEEP_SECONDS, LeanConnectionPool, lean_transport
from tests.conftest import wait_until


class CountingServer:
    """Answers every GET with ``ok`` on a kept-alive connection; counts connections.
    ``gate`` holds answers until set; ``close_after`` closes each after one answer."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0
        self.requests = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.arrived = asyncio.Condition()
        self.close_after = False
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.opened += 1
        try:
            while True:
                try:
                    await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                async with self.arrived:
                    self.requests += 1
                    self.arrived.notify_all()
                await self.gate.wait()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
                if self.close_after:
                    return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self.closed += 1

    async def wait_for_requests(self, count: int) -> None:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: self.requests >= count), 10)


@pytest.fixture
async def server() -> AsyncIterator[CountingServer]:
    running = CountingServer()
    await running.start()
    yield running
    await running.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def at_once(client: httpx.AsyncClient, server: CountingServer, count: int) -> None:
    """``count`` requests on ``count`` connections: each answered once all have come."""
    server.gate.clear()
    requests = [asyncio.create_task(client.get(server.url)) for _ in range(count)]
    await server.wait_for_requests(server.requests + count)
    server.gate.set()
    for response in await asyncio.gather(*requests):
        assert response.status_code == 200


def pool_of(client: httpx.AsyncClient) -> LeanConnectionPool:
    transport = client._transport
    assert isinstance(transport, httpx.AsyncHTTPTransport)
    assert isinstance(transport._pool, LeanConnectionPool)
    return transport._pool


async def test_a_request_checks_only_the_connection_it_reuses(
    server: CountingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpcore's own pool asks each of its idle connections whether the server closed
    it (two system calls) whenever a request starts or ends: 40 times a request here."""
    clock = Clock()
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
    async with httpx.AsyncClient(transport=lean_transport(limits, clock=clock)) as client:
        await at_once(client, server, 20)
        checks = 0
        has_expired = httpcore.AsyncHTTPConnection.has_expired

        def counted(connection: httpcore.AsyncHTTPConnection) -> bool:
            nonlocal checks
            checks += 1
            return has_expired(connection)

        monkeypatch.setattr(httpcore.AsyncHTTPConnection, "has_expired", counted)
        for _ in range(10):
            assert (await client.get(server.url)).status_code == 200
        assert checks == 10  # the connection reused, once a request
        assert server.opened == 20  # all reused: none opened anew
        clock.now += SWEEP_SECONDS  # the sweep: every idle connection, once
        assert (await client.get(server.url)).status_code == 200
        assert checks == 10 + 20 + 1
        assert len(pool_of(client).connections) == 20


async def test_a_connection_the_server_closed_is_not_reused(server: CountingServer) -> None:
    server.close_after = True
    limits = httpx.Limits(max_connections=10, max_keepalive_connections=10)
    async with httpx.AsyncClient(transport=lean_transport(limits, clock=Clock())) as client:
        assert (await client.get(server.url)).status_code == 200
        await wait_until(lambda: server.closed == 1, what="the server closed its side")
        assert (await client.get(server.url)).status_code == 200  # not sent on a dead one
        assert server.opened == 2


async def test_idle_connections_past_their_keepalive_are_closed_at_the_sweep(
    server: CountingServer,
) -> None:
    other = CountingServer()
    await other.start()
    clock = Clock()
    limits = httpx.Limits(max_connections=10, max_keepalive_connections=10, keepalive_expiry=0)
    try:
        async with httpx.AsyncClient(transport=lean_transport(limits, clock=clock)) as client:
            await at_once(client, server, 3)
            assert (await client.get(other.url)).status_code == 200  # no sweep yet
            assert server.closed == 0
            clock.now += SWEEP_SECONDS
            assert (await client.get(other.url)).status_code == 200
            await wait_until(lambda: server.closed == 3, what="the lapsed ones closed")
    finally:
        await other.stop()


async def test_at_most_max_keepalive_connections_stay_idle(server: CountingServer) -> None:
    limits = httpx.Limits(max_connections=10, max_keepalive_connections=2)
    async with httpx.AsyncClient(transport=lean_transport(limits, clock=Clock())) as client:
        await at_once(client, server, 5)
        await wait_until(lambda: server.closed == 3, what="the surplus idle ones closed")
        assert len(pool_of(client).connections) == 2
        for _ in range(3):
            assert (await client.get(server.url)).status_code == 200
        assert server.opened == 5  # the two kept are reused


async def test_requests_over_max_connections_wait_for_one_and_all_are_answered(
    server: CountingServer,
) -> None:
    limits = httpx.Limits(max_connections=3, max_keepalive_connections=3)
    async with httpx.AsyncClient(transport=lean_transport(limits, clock=Clock())) as client:
        responses = await asyncio.gather(*(client.get(server.url) for _ in range(12)))
        assert [response.status_code for response in responses] == [200] * 12
        assert server.opened == 3


async def test_the_bot_talks_to_telegram_and_segmind_through_lean_pools(bot) -> None:
    """Both of the running bot's HTTP clients: PTB's for the Bot API, and the one for
    Segmind and Telegram's files."""
    runtime = bot.bot_data["runtime"]
    assert isinstance(runtime._http, httpx.AsyncClient)
    pool_of(runtime._http)
    request = bot.bot._request[1]  # PTB's request for every call but getUpdates
    assert isinstance(request._client, httpx.AsyncClient)
    assert pool_of(request._client)._max_keepalive_connections == 64
