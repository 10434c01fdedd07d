"""A tiny round-robin HTTP load balancer in front of several bot instances (webhook mode).

What a real one does, and no more: each POST goes to the next instance in turn, with its
path, headers and body unchanged; an instance that refuses the connection, drops it or
does not answer within ``timeout`` seconds is skipped and the same request is tried on
the next one (so a dead or stopped instance costs one retry, not a lost update). The
instance's status and body go back to the caller (the fake Telegram's webhook pusher,
through its ``webhook_proxy``); 502 when no instance answered.

``duplicate_next(n)`` sends the next POST to ``n`` instances at once, as a balancer does
that retries a slow request elsewhere while the first instance is still handling it: the
same update then reaches two bots at the same moment.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from dataclasses import dataclass

import aiohttp
from aiohttp import web

__all__ = ["Forwarded", "RoundRobinBalancer"]

#: Headers a proxy does not pass on (hop-by-hop, or recomputed for the new request).
_HOP_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding"})


@dataclass(frozen=True)
class Forwarded:
    """One attempt to hand a request to an instance: which one, and what came back
    (``status`` 0: the connection failed or timed out)."""

    instance: int
    path: str
    status: int


class RoundRobinBalancer:
    """Listens on a free port of 127.0.0.1 (``url`` once started); ``upstreams`` are the
    instances' base URLs, in the order ``Forwarded.instance`` counts them."""

    def __init__(self, upstreams: list[str], *, timeout: float = 5.0) -> None:
        self.upstreams = upstreams
        self.timeout = timeout
        #: Every attempt, in order (retries included).
        self.forwarded: list[Forwarded] = []
        self._turn = itertools.count()
        self._duplicates = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> RoundRobinBalancer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(force_close=True),  # no reuse across instances
        )
        return self

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def duplicate_next(self, copies: int = 2) -> None:
        """The next request goes to ``copies`` instances at the same moment."""
        self._duplicates = copies

    def instances_posted(self, path: str | None = None) -> list[int]:
        """The instances that answered 2xx, one per attempt, in order."""
        return [
            f.instance
            for f in self.forwarded
            if 200 <= f.status < 300 and (path is None or f.path == path)
        ]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        copies, self._duplicates = self._duplicates, 0
        if copies > 1:
            first = next(self._turn)
            targets = [(first + n) % len(self.upstreams) for n in range(copies)]
            answers = await asyncio.gather(
                *(self._forward(i, request, headers, body) for i in targets)
            )
            for answer in answers:
                if answer is not None:
                    return answer
            return web.Response(status=502, text="no instance answered")
        for _ in range(len(self.upstreams)):
            instance = next(self._turn) % len(self.upstreams)
            answer = await self._forward(instance, request, headers, body)
            if answer is not None:
                return answer
        return web.Response(status=502, text="no instance answered")

    async def _forward(
        self, instance: int, request: web.Request, headers: dict[str, str], body: bytes
    ) -> web.Response | None:
        """The instance's answer, or None when it could not be had (try another)."""
        assert self._session is not None
        url = self.upstreams[instance].rstrip("/") + request.path_qs
        try:
            async with self._session.request(
                request.method, url, headers=headers, data=body
            ) as response:
                payload = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            self.forwarded.append(Forwarded(instance, request.path, 0))
            return None
        self.forwarded.append(Forwarded(instance, request.path, status))
        content_type = response.headers.get("Content-Type", "text/plain").split(";", 1)[0]
        return web.Response(status=status, body=payload, content_type=content_type)
