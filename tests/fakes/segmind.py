"""A local stand-in for Segmind's async (v2) API and its upload endpoint.

It runs an aiohttp server on 127.0.0.1 (a free port) inside the current event loop, so
unit tests, end-to-end tests (the bot as a child process pointed at ``url``) and the
benchmark can all drive the real HTTP path without touching Segmind.

Routes (``x-api-key`` required on the first four):

    POST /v2/warmth-of-jesus          submit  -> {request_id, status_url, response_url}
    GET  /v2/requests/{id}/status     poll    -> {status, request_id}; FAILED is HTTP 422
    GET  /v2/requests/{id}            result  -> {status, request_id, output, metrics}
    POST /upload-asset                upload  -> {file_urls, message}
    GET  /outputs/{id}.mp4            the "video": a real MP4 header (the job's size and
                                      length, no audio) then filler, in 64 KiB chunks
    GET  /assets/{name}               an uploaded image (HEAD too), 404 once it expired
    GET  /inference-request/request-history        the account's requests, newest first
    GET  /inference-request/request-history/{id}   one of them

The request history lists every accepted submit with its ``request_body`` exactly as
sent, ``model_status`` (PENDING, COMPLETED, FAILED) and timestamps, paginated and
filtered like Segmind's (``page``, ``per_page`` ≤ 100, ``from_date``/``to_date`` over
at most 31 days, ``model_name``, ``status``, ``sort_order``). A fresh request shows there
only ``history_lag_seconds`` after it was accepted (Segmind's record may land late).

A job's state follows the clock: QUEUED for ``queued_seconds``, PROCESSING for
``processing_seconds``, then COMPLETED (or FAILED when ``fail_error`` is set). After
``retention_seconds`` more it is gone (404), like Segmind's one-hour retention.
``advance()`` moves every job forward in time so tests need not sleep.

Failures are injected through small queues (``fail_next_submit``, ``fail_next_status``,
``fail_next_upload``), ``fail_next_job``, ``accept_then_drop_next_submit`` (the submit is
accepted and charged, then the connection closes without an answer),
``hold_submit_answers`` (accepted submits wait for ``release_submit_answers``),
``hold_next_upload`` (an upload read in full, then answered only when released),
``fail_next_history``, ``history_lag_seconds``, ``submit_delay``, ``video_kind`` (a real MP4
header, a damaged one, or none), ``video_chunk_delay`` (a slow CDN), ``credits`` and
``expire()``.

Uploads expire too: after ``asset_retention_seconds`` (None: never) or ``expire_asset(url)``
an uploaded image answers 404, and a submit naming it is refused with 400 (the image cannot
be fetched; the wording is the fake's own). ``asset_checks`` counts HEAD requests on assets.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import re
import struct
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from aiohttp import web

from . import mp4

__all__ = [
    "ALLOWED_DURATIONS",
    "ALLOWED_QUALITIES",
    "ALLOWED_STYLES",
    "CHUNK_SIZE",
    "MODEL_SLUG",
    "TEST_API_KEY",
    "FakeJob",
    "FakeSegmind",
    "video_bytes",
    "video_chunks",
]

TEST_API_KEY = "sg_test_key_0123456789abcdef"
MODEL_SLUG = "warmth-of-jesus"

ALLOWED_QUALITIES = ("360p", "540p", "720p", "1080p")
ALLOWED_DURATIONS = (5, 8)
ALLOWED_STYLES = ("anime", "3d_animation", "clay", "comic", "cyberpunk")
SEED_RANGE = (1, 999_999)
HISTORY_PATH = "/inference-request/request-history"
#: How the request history words a status: a job in flight is PENDING.
_HISTORY_STATUS = {"QUEUED": "PENDING", "PROCESSING": "PENDING"}

CHUNK_SIZE = 64 * 1024
INFERENCE_TIME = 50.1

OutputShape = Literal["str", "list", "dict"]

#: Default ``error`` text for an injected status code.
ERROR_TEXTS: dict[int, str] = {
    400: "Bad request",
    401: "Invalid API key",
    403: "Forbidden: insufficient permissions",
    404: "Not found",
    406: "Insufficient credits",
    422: "Unprocessable request",
    429: "Rate limit exceeded",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service temporarily unavailable",
    504: "Gateway timeout",
}

_DATA_URL = re.compile(r"^data:(image/[a-z0-9.+-]+);base64,(.*)$", re.IGNORECASE | re.DOTALL)
_EXTENSIONS = {"image/jpeg": "jpg", "image/jpg": "jpg", "image/png": "png", "image/webp": "webp"}

# A minimal ISO-BMFF "ftyp" box: the default start of the fake's files.
_MP4_HEADER = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
_PATTERN = bytes(range(256)) * (CHUNK_SIZE // 256)
#: The picture size of each quality, as PixVerse renders a landscape photo.
VIDEO_SIZES = {"360p": (640, 360), "540p": (960, 540), "720p": (1280, 720), "1080p": (1920, 1080)}
#: What the fake's videos look like: "mp4" a real header (``ftyp``, ``moov`` with the
#: job's size and length, then the ``mdat``); "damaged" a ``moov`` that claims more bytes
#: than the file has; "raw" only ``ftyp`` and filler.
VideoKind = Literal["mp4", "damaged", "raw"]


def video_header(quality: str, duration: float, size: int, *, kind: VideoKind = "mp4") -> bytes:
    """The first bytes of the fake video of a job with these options."""
    if kind == "raw":
        return _MP4_HEADER
    width, height = VIDEO_SIZES.get(quality, VIDEO_SIZES["540p"])
    if kind == "damaged":
        return mp4.FTYP + struct.pack(">I4s", 2**31, b"moov") + mp4.mvhd(1000, 5000)
    return mp4.mp4_header(width, height, duration, size)


def video_chunks(
    size: int, chunk_size: int = CHUNK_SIZE, header: bytes = _MP4_HEADER
) -> Iterator[bytes]:
    """Yield the fake video's ``size`` bytes in chunks, without building the whole file.

    The bytes are deterministic: ``header``, then byte ``i`` is ``i % 256``.
    """
    offset = 0
    while offset < size:
        end = min(offset + chunk_size, size)
        parts: list[bytes] = []
        pos = offset
        if pos < len(header):
            head = header[pos:end]
            parts.append(head)
            pos += len(head)
        while pos < end:
            start = pos % len(_PATTERN)
            piece = _PATTERN[start : start + (end - pos)]
            parts.append(piece)
            pos += len(piece)
        yield b"".join(parts)
        offset = end


def video_bytes(size: int, header: bytes = _MP4_HEADER) -> bytes:
    """The whole fake video as bytes; for assertions on small sizes only."""
    return b"".join(video_chunks(size, header=header))


@dataclass
class FakeJob:
    """One accepted submit."""

    request_id: str
    body: dict[str, Any]
    submitted_at: float
    queued_seconds: float
    processing_seconds: float
    fail_error: str | None
    status_polls: int = 0
    result_fetches: int = 0
    expired: bool = False
    video_downloads: int = 0
    #: Wall-clock time Segmind accepted it: its request-history timestamp.
    created_at: float = field(default_factory=time.time)

    @property
    def finished_at(self) -> float:
        """The monotonic time at which the job leaves PROCESSING."""
        return self.submitted_at + self.queued_seconds + self.processing_seconds

    def status(self, now: float) -> str:
        """QUEUED, PROCESSING, COMPLETED or FAILED, by the time elapsed since submit."""
        elapsed = now - self.submitted_at
        if elapsed < self.queued_seconds:
            return "QUEUED"
        if elapsed < self.queued_seconds + self.processing_seconds:
            return "PROCESSING"
        return "FAILED" if self.fail_error is not None else "COMPLETED"


@dataclass
class _Injected:
    status: int
    error: str
    retry_after: int | None


@dataclass
class _Asset:
    data: bytes
    content_type: str
    uploaded_at: float = field(default_factory=time.monotonic)
    expired: bool = False


@dataclass
class _Queue:
    items: collections.deque[_Injected] = field(default_factory=collections.deque)

    def push(self, status: int, error: str | None, retry_after: int | None, times: int) -> None:
        text = error if error is not None else ERROR_TEXTS.get(status, f"HTTP {status}")
        for _ in range(times):
            self.items.append(_Injected(status, text, retry_after))

    def pop(self) -> _Injected | None:
        return self.items.popleft() if self.items else None


def _error(status: int, message: str, *, retry_after: int | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.json_response({"error": message}, status=status, headers=headers)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate(body: dict[str, Any]) -> str | None:
    """The first problem with a submit body, as Segmind would word it; None if valid."""
    image_url = body.get("image_url")
    if image_url is None:
        return "image_url is required"
    if not isinstance(image_url, str):
        return "image_url must be a string"
    parts = urlsplit(image_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "image_url must be a valid http(s) URL"

    quality = body.get("quality")
    if quality is None:
        return "quality is required"
    if quality not in ALLOWED_QUALITIES:
        return f"quality must be one of {', '.join(ALLOWED_QUALITIES)}"

    duration = body.get("duration")
    if duration is None:
        return "duration is required"
    if not _is_int(duration) or duration not in ALLOWED_DURATIONS:
        return "duration must be one of 5, 8"
    if quality == "1080p" and duration != 5:
        return "duration 8 is not available with 1080p quality; use 5"

    seed = body.get("seed")
    if seed is not None and (not _is_int(seed) or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]):
        return f"seed must be an integer between {SEED_RANGE[0]} and {SEED_RANGE[1]}"

    style = body.get("style")
    if style is not None and style not in ALLOWED_STYLES:
        return f"style must be one of {', '.join(ALLOWED_STYLES)}"
    return None


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeSegmind:
    """Segmind's v2 API for one model plus ``upload-asset``, served on 127.0.0.1."""

    credits: int | None = None
    submit_delay: float = 0.0

    def __init__(
        self,
        api_key: str = TEST_API_KEY,
        *,
        queued_seconds: float = 0.05,
        processing_seconds: float = 0.2,
        retention_seconds: float = 3600.0,
        video_size: int = 200_000,
        output_shape: OutputShape = "str",
    ) -> None:
        self.api_key = api_key
        self.queued_seconds = queued_seconds
        self.processing_seconds = processing_seconds
        self.retention_seconds = retention_seconds
        self.video_size = video_size
        #: What the videos look like (see :data:`VideoKind`).
        self.video_kind: VideoKind = "mp4"
        #: A slow CDN: seconds of silence before each chunk of a video after the first.
        self.video_chunk_delay = 0.0
        self.output_shape: OutputShape = output_shape
        self.credits = None
        self.submit_delay = 0.0
        #: A fresh request shows in the request history only this long after its submit.
        self.history_lag_seconds = 0.0
        #: Request-history GETs received (list and single-request ones).
        self.history_lookups = 0
        #: Uploaded images are served this long (None: for ever), then answer 404.
        self.asset_retention_seconds: float | None = None
        #: HEAD requests on uploaded images (a client checking one is still served).
        self.asset_checks = 0

        #: Gates for the next video downloads (hold_next_video), first come first held.
        self._video_holds: list[asyncio.Event] = []
        #: Gates for the next uploads (hold_next_upload), first come first held.
        self._upload_holds: list[asyncio.Event] = []
        #: Uploads read in full and waiting at their gate right now (hold_next_upload).
        self.uploads_held = 0

        self.jobs: dict[str, FakeJob] = {}
        self.submits: list[dict[str, Any]] = []
        self.uploads: list[int] = []
        self.requests_log: list[tuple[float, str, str, int]] = []
        self.assets: dict[str, _Asset] = {}

        self._submit_failures = _Queue()
        self._status_failures = _Queue()
        self._upload_failures = _Queue()
        self._history_failures = _Queue()
        #: Set while submit answers are held: accepted jobs wait for it before answering.
        self._held: asyncio.Event | None = None
        self._failing_jobs: collections.deque[str] = collections.deque()
        self._drop_submits = 0
        self._dropped: set[int] = set()  # id() of requests whose socket was closed

        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Bind a free port on 127.0.0.1 and start serving."""
        if self._runner is not None:
            raise RuntimeError("FakeSegmind is already running")
        app = web.Application(middlewares=[self._log_middleware], client_max_size=64 * 2**20)
        app.router.add_post(f"/v2/{MODEL_SLUG}", self._submit)
        app.router.add_get("/v2/requests/{request_id}/status", self._status)
        app.router.add_get("/v2/requests/{request_id}", self._result)
        app.router.add_get("/outputs/{request_id}.mp4", self._video)
        app.router.add_post("/upload-asset", self._upload)
        app.router.add_get("/assets/{name}", self._asset)
        app.router.add_get(HISTORY_PATH, self._history)
        app.router.add_get(f"{HISTORY_PATH}/{{request_id}}", self._history_one)
        # handler_cancellation: a request whose client is gone (a killed bot) ends at once
        # instead of holding up stop() for shutdown_timeout, e.g. during a submit_delay.
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        self._runner = runner
        self._url = f"http://{host}:{port}"

    async def stop(self) -> None:
        """Stop serving; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakeSegmind:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """The API root, e.g. ``http://127.0.0.1:PORT``."""
        if self._url is None:
            raise RuntimeError("FakeSegmind is not started")
        return self._url

    @property
    def submit_url(self) -> str:
        return f"{self.url}/v2/{MODEL_SLUG}"

    @property
    def upload_url(self) -> str:
        return f"{self.url}/upload-asset"

    @property
    def history_url(self) -> str:
        """What ``SEGMIND_HISTORY_URL`` should be to use this fake's request history."""
        return f"{self.url}{HISTORY_PATH}"

    def status_url(self, request_id: str) -> str:
        return f"{self.url}/v2/requests/{request_id}/status"

    def response_url(self, request_id: str) -> str:
        return f"{self.url}/v2/requests/{request_id}"

    def video_url(self, request_id: str) -> str:
        return f"{self.url}/outputs/{request_id}.mp4"

    # -- knobs -----------------------------------------------------------------------

    def fail_next_submit(
        self,
        status: int,
        *,
        error: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` authenticated submits with ``status``; no job, no credit."""
        self._submit_failures.push(status, error, retry_after, times)

    def fail_next_status(
        self,
        status: int,
        *,
        error: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` authenticated status or result GETs with ``status``."""
        self._status_failures.push(status, error, retry_after, times)

    def fail_next_upload(
        self,
        status: int,
        *,
        error: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` authenticated uploads with ``status``."""
        self._upload_failures.push(status, error, retry_after, times)

    def fail_next_job(self, error: str = "Content blocked by safety filter (RAI)") -> None:
        """Make the next accepted job end FAILED with ``error``."""
        self._failing_jobs.append(error)

    def accept_then_drop_next_submit(self, times: int = 1) -> None:
        """Accept the next ``times`` valid submits (job made, credit spent), then close
        each one's socket without an answer: the client never learns the request_id."""
        self._drop_submits += times

    def hold_submit_answers(self) -> None:
        """From now on accepted submits (job made, credit spent) wait to be answered
        until :meth:`release_submit_answers`: their answers stay "on the wire"."""
        if self._held is None:
            self._held = asyncio.Event()

    def release_submit_answers(self) -> None:
        """Answer every held submit (to whoever is still listening) and hold no more."""
        held, self._held = self._held, None
        if held is not None:
            held.set()

    def fail_next_history(
        self,
        status: int,
        *,
        error: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` authenticated request-history GETs with ``status``."""
        self._history_failures.push(status, error, retry_after, times)

    def history_rows(self) -> list[dict[str, Any]]:
        """The request history as it stands, newest first (records that have landed)."""
        now = time.monotonic()
        landed = [
            job for job in self.jobs.values() if now - job.submitted_at >= self.history_lag_seconds
        ]
        order = {request_id: i for i, request_id in enumerate(self.jobs)}
        landed.sort(key=lambda job: (job.created_at, order[job.request_id]), reverse=True)
        return [self._history_row(job, now) for job in landed]

    def expire(self, request_id: str) -> None:
        """Make a job's status, result and video answer 404 from now on."""
        self.jobs[request_id].expired = True

    def expire_asset(self, url: str) -> None:
        """Make an uploaded image (by the URL upload answered) answer 404 from now on."""
        self.assets[url.rsplit("/", 1)[-1]].expired = True

    def _asset_gone(self, asset: _Asset) -> bool:
        retention = self.asset_retention_seconds
        return asset.expired or (
            retention is not None and time.monotonic() - asset.uploaded_at > retention
        )

    def _gone_asset_url(self, image_url: str) -> bool:
        """True when ``image_url`` is one of this fake's uploads and no longer served."""
        prefix = f"{self._url}/assets/"
        if self._url is None or not image_url.startswith(prefix):
            return False
        asset = self.assets.get(image_url[len(prefix) :])
        return asset is None or self._asset_gone(asset)

    def advance(self, seconds: float) -> None:
        """Move every job and upload ``seconds`` forward in time (as if that much had passed)."""
        for job in self.jobs.values():
            job.submitted_at -= seconds
        for asset in self.assets.values():
            asset.uploaded_at -= seconds

    def hold_next_video(self) -> asyncio.Event:
        """The next video download is counted, then answered only once the returned
        event is set (a download stalled on the way); the ones after it are not held."""
        gate = asyncio.Event()
        self._video_holds.append(gate)
        return gate

    def hold_next_upload(self) -> asyncio.Event:
        """The next upload is read in full, then answered only once the returned event
        is set: the client waits for the file's URL (an upload stalled on the way). While
        it waits it counts in ``uploads_held``; a client that goes away (a killed bot)
        ends it unanswered and nothing is stored. The uploads after it are not held."""
        gate = asyncio.Event()
        self._upload_holds.append(gate)
        return gate

    def status_polls(self) -> list[int]:
        """Status polls per job, in submit order."""
        return [job.status_polls for job in self.jobs.values()]

    # -- helpers ---------------------------------------------------------------------

    def _is_gone(self, job: FakeJob, now: float) -> bool:
        return job.expired or now > job.finished_at + self.retention_seconds

    def video_header(self, request_id: str) -> bytes:
        """The first bytes of this job's video: its quality and length, in an MP4 header."""
        body = self.jobs[request_id].body
        quality = str(body.get("quality", "540p"))
        duration = float(body.get("duration", 5))
        return video_header(quality, duration, self.video_size, kind=self.video_kind)

    def _live_job(self, request: web.Request) -> FakeJob | None:
        job = self.jobs.get(request.match_info["request_id"])
        if job is None or self._is_gone(job, time.monotonic()):
            return None
        return job

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("x-api-key") == self.api_key

    def _output(self, request_id: str) -> object:
        video = self.video_url(request_id)
        if self.output_shape == "list":
            return [video]
        if self.output_shape == "dict":
            return {"video": video}
        return video

    @web.middleware
    async def _log_middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        status = 500
        try:
            response = await handler(request)
            status = 0 if id(request) in self._dropped else response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self._dropped.discard(id(request))
            self.requests_log.append((time.monotonic(), request.method, request.path, status))

    # -- handlers --------------------------------------------------------------------

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        try:
            body: object = await request.json()
        except ValueError:
            body = None
        self.submits.append(body if isinstance(body, dict) else {})

        if not self._authorised(request):
            return _error(401, ERROR_TEXTS[401])
        injected = self._submit_failures.pop()
        if injected is not None:
            return _error(injected.status, injected.error, retry_after=injected.retry_after)
        if not isinstance(body, dict):
            return _error(400, "Request body must be a JSON object")
        problem = _validate(body)
        if problem is not None:
            return _error(400, problem)
        if self._gone_asset_url(body["image_url"]):
            return _error(400, "Could not fetch the image at image_url")
        if self.credits is not None:
            if self.credits <= 0:
                return _error(406, "Insufficient credits")
            self.credits -= 1

        request_id = str(uuid.uuid4())
        fail_error = self._failing_jobs.popleft() if self._failing_jobs else None
        self.jobs[request_id] = FakeJob(
            request_id=request_id,
            body=body,
            submitted_at=time.monotonic(),
            queued_seconds=self.queued_seconds,
            processing_seconds=self.processing_seconds,
            fail_error=fail_error,
        )
        if self.submit_delay > 0:
            await asyncio.sleep(self.submit_delay)  # the fake's own latency: answered late
        if self._held is not None:
            await self._held.wait()
        if self._drop_submits > 0:
            self._drop_submits -= 1
            self._dropped.add(id(request))
            if request.transport is not None:
                request.transport.close()
            # aiohttp finds the socket closed when it writes this and moves on quietly.
            return web.Response(status=200)
        return web.json_response(
            {
                "request_id": request_id,
                "status_url": self.status_url(request_id),
                "response_url": self.response_url(request_id),
            }
        )

    async def _status(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return _error(401, ERROR_TEXTS[401])
        known = self.jobs.get(request.match_info["request_id"])
        if known is not None:
            known.status_polls += 1
        injected = self._status_failures.pop()
        if injected is not None:
            return _error(injected.status, injected.error, retry_after=injected.retry_after)
        job = self._live_job(request)
        if job is None:
            return _error(404, "Request not found")
        status = job.status(time.monotonic())
        if status == "FAILED":
            return web.json_response(
                {"status": status, "request_id": job.request_id, "error": job.fail_error},
                status=422,
            )
        return web.json_response({"status": status, "request_id": job.request_id})

    async def _result(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return _error(401, ERROR_TEXTS[401])
        known = self.jobs.get(request.match_info["request_id"])
        if known is not None:
            known.result_fetches += 1
        injected = self._status_failures.pop()
        if injected is not None:
            return _error(injected.status, injected.error, retry_after=injected.retry_after)
        job = self._live_job(request)
        if job is None:
            return _error(404, "Request not found")
        status = job.status(time.monotonic())
        if status == "FAILED":
            return web.json_response(
                {"status": status, "request_id": job.request_id, "error": job.fail_error},
                status=422,
            )
        if status != "COMPLETED":
            return web.json_response({"status": status, "request_id": job.request_id})
        return web.json_response(
            {
                "status": status,
                "request_id": job.request_id,
                "output": self._output(job.request_id),
                "metrics": {"inference_time": INFERENCE_TIME},
            }
        )

    async def _video(self, request: web.Request) -> web.StreamResponse:
        job = self._live_job(request)
        if job is None or job.status(time.monotonic()) != "COMPLETED":
            return _error(404, "Not found")
        job.video_downloads += 1
        if request.method != "HEAD" and self._video_holds:
            await self._video_holds.pop(0).wait()
        size = self.video_size
        response = web.StreamResponse()
        response.content_type = "video/mp4"
        response.content_length = size
        await response.prepare(request)
        if request.method != "HEAD":
            header = self.video_header(job.request_id)
            for index, chunk in enumerate(video_chunks(size, header=header)):
                if index and self.video_chunk_delay:
                    await asyncio.sleep(self.video_chunk_delay)  # a slow link, on purpose
                await response.write(chunk)
        await response.write_eof()
        return response

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return _error(401, ERROR_TEXTS[401])
        injected = self._upload_failures.pop()
        if injected is not None:
            return _error(injected.status, injected.error, retry_after=injected.retry_after)
        try:
            body: object = await request.json()
        except ValueError:
            return _error(400, "Request body must be a JSON object")
        if self._upload_holds:
            gate = self._upload_holds.pop(0)
            self.uploads_held += 1
            try:
                await gate.wait()
            finally:
                self.uploads_held -= 1
        data_urls = body.get("data_urls") if isinstance(body, dict) else None
        if not isinstance(data_urls, list) or not data_urls:
            return _error(400, "data_urls must be a non-empty list of data URLs")

        decoded: list[_Asset] = []
        for data_url in data_urls:
            match = _DATA_URL.match(data_url) if isinstance(data_url, str) else None
            if match is None:
                return _error(400, "Invalid data URL: expected data:image/<type>;base64,<data>")
            try:
                data = base64.b64decode(match.group(2), validate=True)
            except (binascii.Error, ValueError):
                return _error(400, "Invalid data URL: bad base64 payload")
            if not data:
                return _error(400, "Invalid data URL: empty payload")
            decoded.append(_Asset(data, match.group(1).lower()))

        file_urls: list[str] = []
        for asset in decoded:
            name = f"{uuid.uuid4()}.{_EXTENSIONS.get(asset.content_type, 'bin')}"
            self.assets[name] = asset
            self.uploads.append(len(asset.data))
            file_urls.append(f"{self.url}/assets/{name}")
        return web.json_response(
            {"file_urls": file_urls, "message": "Files uploaded successfully"}
        )

    def _history_row(self, job: FakeJob, now: float) -> dict[str, Any]:
        status = job.status(now)
        created = datetime.fromtimestamp(job.created_at, UTC)
        finished = created + timedelta(seconds=job.queued_seconds + job.processing_seconds)
        done = status in ("COMPLETED", "FAILED")
        return {
            "request_id": job.request_id,
            "model_name": MODEL_SLUG,
            "model_status": _HISTORY_STATUS.get(status, status),
            "credits_deduction": 0.3,
            "request_body": job.body,
            "generation_url": self.video_url(job.request_id) if status == "COMPLETED" else None,
            "latency_ms": round((finished - created).total_seconds() * 1000) if done else None,
            "model_created": created.isoformat().replace("+00:00", "Z"),
            "updated_at": (finished if done else created).isoformat().replace("+00:00", "Z"),
            "error": job.fail_error if status == "FAILED" else None,
        }

    def _history_refusal(self, request: web.Request) -> web.Response | None:
        self.history_lookups += 1
        if not self._authorised(request):
            return _error(401, ERROR_TEXTS[401])
        injected = self._history_failures.pop()
        if injected is not None:
            return _error(injected.status, injected.error, retry_after=injected.retry_after)
        return None

    async def _history(self, request: web.Request) -> web.StreamResponse:
        refused = self._history_refusal(request)
        if refused is not None:
            return refused
        query = request.query
        today = datetime.now(UTC).date()
        try:
            page = int(query.get("page", "1"))
            per_page = int(query.get("per_page", "20"))
            first = date.fromisoformat(query.get("from_date", str(today - timedelta(days=7))))
            last = date.fromisoformat(query.get("to_date", str(today)))
        except ValueError:
            return _error(400, "page and per_page must be numbers; dates YYYY-MM-DD")
        if page < 1 or not 1 <= per_page <= 100:
            return _error(400, "page must be at least 1 and per_page between 1 and 100")
        if first > last or (last - first).days > 31:
            return _error(400, "the date window must run forward over at most 31 days")
        model, status = query.get("model_name", ""), query.get("status")
        rows = [
            row
            for row in self.history_rows()
            if model in row["model_name"]
            and (status is None or row["model_status"] == status)
            and first <= date.fromisoformat(row["model_created"][:10]) <= last
        ]
        if query.get("sort_order", "desc") == "asc":
            rows.reverse()
        start = (page - 1) * per_page
        return web.json_response(
            {
                "data": rows[start : start + per_page],
                "pagination": {
                    "page": page,
                    "per_page": per_page,
                    "total": len(rows),
                    "total_pages": -(-len(rows) // per_page),
                },
            }
        )

    async def _history_one(self, request: web.Request) -> web.StreamResponse:
        refused = self._history_refusal(request)
        if refused is not None:
            return refused
        job = self.jobs.get(request.match_info["request_id"])
        if job is None or time.monotonic() - job.submitted_at < self.history_lag_seconds:
            return _error(404, "Request not found")
        return web.json_response(self._history_row(job, time.monotonic()))

    async def _asset(self, request: web.Request) -> web.StreamResponse:
        if request.method == "HEAD":
            self.asset_checks += 1
        asset = self.assets.get(request.match_info["name"])
        if asset is None or self._asset_gone(asset):
            return _error(404, "Not found")
        return web.Response(body=asset.data, content_type=asset.content_type)
