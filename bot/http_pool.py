"""HTTP connection pools whose upkeep does not grow with the pool.

httpcore's ``AsyncConnectionPool`` re-examines every connection each time a request
starts or a response is closed: it asks each idle one whether the server closed it (a
``getpeername`` and a ``select`` on its socket, two system calls), and for each idle one
it counts the whole pool again. With the bot's 100 connections to Segmind and Telegram's
files, and PTB's up to 256 to the Bot API, that upkeep was a quarter of the event loop's
time at N = 1000 (docs/benchmarks.md): the loop that also answers button presses.

:class:`LeanConnectionPool` keeps what the checks are for and drops their cost:

* A connection is checked (server gone? keep-alive lapsed?) when it is about to be
  reused, so a request is never sent on a connection the server closed.
* Every idle connection is checked at most once every ``SWEEP_SECONDS``, so the ones the
  server closed or that outlived their keep-alive are closed soon, as before.
* Idle connections beyond ``max_keepalive_connections`` are closed, counted once. (The
  stock pool's count is of every connection, idle or not, so once a burst opened more
  than that many it closed each one as soon as it went idle.)

Only HTTP/1.1 (each connection carries one request at a time): the bot asks for nothing
else. It overrides one private method of httpcore 1.0, so :func:`lean_transport` uses it
only on httpcore 1.0.x and falls back to the stock pool on any other version.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpcore
import httpx

__all__ = ["SWEEP_SECONDS", "LeanConnectionPool", "lean_transport"]

#: Idle connections are checked (closed by the server? keep-alive over?) this often.
SWEEP_SECONDS = 1.0


class LeanConnectionPool(httpcore.AsyncConnectionPool):
    """httpcore's pool, with the upkeep above; HTTP/1.1 only."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, **kwargs: Any) -> None:
        if kwargs.get("http2"):
            raise ValueError("LeanConnectionPool is for HTTP/1.1 only")
        super().__init__(**kwargs)
        self._clock = clock
        self._next_sweep = float("-inf")

    def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
        """What httpcore's does (drop closed connections, close lapsed and surplus idle
        ones, give queued requests a connection), checking a connection's socket only
        when it is reused or at the sweep."""
        closing: list[httpcore.AsyncConnectionInterface] = []
        now = self._clock()
        sweep = now >= self._next_sweep
        if sweep:
            self._next_sweep = now + SWEEP_SECONDS
        idle = sum(1 for connection in self._connections if connection.is_idle())
        kept: list[httpcore.AsyncConnectionInterface] = []
        for connection in self._connections:
            if connection.is_closed():
                if connection.is_idle():
                    idle -= 1
                continue
            if connection.is_idle() and (
                idle > self._max_keepalive_connections or (sweep and connection.has_expired())
            ):
                idle -= 1
                closing.append(connection)
                continue
            kept.append(connection)
        self._connections = kept

        queued = [request for request in self._requests if request.is_queued()]
        if not queued:
            return closing
        available = [connection for connection in kept if connection.is_available()]
        for pool_request in queued:
            origin = pool_request.request.url.origin
            chosen = None
            for connection in available:
                if not connection.can_handle_request(origin):
                    continue
                available.remove(connection)  # HTTP/1.1: one request at a time
                if connection.has_expired():  # the server closed it, or keep-alive over
                    self._connections.remove(connection)
                    closing.append(connection)
                    continue
                chosen = connection
                break
            if chosen is None:
                if len(self._connections) >= self._max_connections:
                    spare = next((c for c in available if c.is_idle()), None)
                    if spare is None:
                        continue  # stays queued until a connection frees
                    available.remove(spare)
                    self._connections.remove(spare)
                    closing.append(spare)
                chosen = self.create_connection(origin)
                self._connections.append(chosen)
            pool_request.assign_to_connection(chosen)
        return closing


def lean_transport(
    limits: httpx.Limits, *, clock: Callable[[], float] = time.monotonic
) -> httpx.AsyncHTTPTransport:
    """An httpx transport (HTTP/1.1, ``limits``) on a :class:`LeanConnectionPool`; on an
    httpcore this module was not written for, the stock pool."""
    transport = httpx.AsyncHTTPTransport(limits=limits)
    if not httpcore.__version__.startswith("1.0."):
        return transport
    stock = transport._pool
    transport._pool = LeanConnectionPool(
        clock=clock,
        ssl_context=stock._ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        http1=True,
        http2=False,
    )
    return transport
