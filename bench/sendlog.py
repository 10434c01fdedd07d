"""Each request to Segmind as it leaves the bot, by the bot's own clock.

``python -m bench.sendlog OUT.tsv -m bot`` runs ``bot`` as ``__main__`` and appends one
line to OUT.tsv for every request the bot hands to httpx for the fake Segmind's host
(``SEGMIND_API_URL``, ``SEGMIND_UPLOAD_URL`` and ``SEGMIND_HISTORY_URL``):
``time.monotonic()``, method and path, tab-separated. The bot's code is not touched.

Why: FakeSegmind stamps a request when its event loop gets to it, and in the bench that
loop is shared with the fake Telegram and a thousand simulated users. When it stalls,
requests the bot sent over more than a second are stamped together. This log is the
other side: when the bot sent them. The monotonic clock is the machine's, so both
logs are on one time line (``bench/restart.py`` reports the busiest second both ways).
"""

from __future__ import annotations

import os
import runpy
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

_URL_SETTINGS = ("SEGMIND_API_URL", "SEGMIND_UPLOAD_URL", "SEGMIND_HISTORY_URL")


def read(path: str | os.PathLike[str]) -> list[tuple[float, str, str]]:
    """The log's lines as (monotonic time, method, path); none if it was never written."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return []
    sent: list[tuple[float, str, str]] = []
    for line in lines:
        parts = line.split("\t")
        if len(parts) == 3:  # a line cut short by a kill is left out
            sent.append((float(parts[0]), parts[1], parts[2]))
    return sent


def install(out_path: str, hosts: set[str]) -> None:
    """Wrap ``httpx.AsyncClient.send``: each request to ``hosts`` is written as it goes."""
    out = open(out_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    original = httpx.AsyncClient.send

    async def send(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> Any:
        if request.url.netloc.decode("ascii") in hosts:
            out.write(f"{time.monotonic():.6f}\t{request.method}\t{request.url.path}\n")
        return await original(self, request, **kwargs)

    httpx.AsyncClient.send = send  # type: ignore[method-assign]


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        raise SystemExit("usage: python -m bench.sendlog OUT.tsv -m MODULE [ARGS...]")
    out, module = sys.argv[1], sys.argv[3]
    hosts = {urlsplit(os.environ[name]).netloc for name in _URL_SETTINGS if os.environ.get(name)}
    install(out, hosts)
    sys.argv = [module, *sys.argv[4:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
