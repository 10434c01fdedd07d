"""Test doubles for driving the core's Tracker one step at a time, with no network.

- :class:`FakeClock`: a callable whose ``now`` the test advances; the tracker, the
  ledger and the alerts all read it, so "an hour later" costs nothing.
- :class:`FakeSegmindAPI`: a scripted fake of Segmind's HTTP API, served to the REAL
  :class:`bot.segmind.SegmindClient` through ``httpx.MockTransport``. Every request is
  recorded; each route can be scripted to answer an error code (with the real API's
  JSON error body), a raw reply, or a transport error. Its request history lists every
  accepted request (``history_lag`` seconds after it was accepted, by the clock), and
  :meth:`FakeSegmindAPI.accept_then` accepts submits (paid) whose answer then goes wrong.
- :class:`RecordingMessenger`: implements :class:`bot.core.ports.Messenger`, records
  every call and raises whatever a test scripted for a method.
- :class:`AlertLog`: the operator-alert sender handed to the real ``Alerts``.
- :class:`RecordingLedger`: the real :class:`SqliteLedger`, noting each transition it
  actually made (so a test can tell which ones a step made).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx

from bot.core.alerts import AlertKind
from bot.core.errors import MessengerError
from bot.core.jobs import Job, JobState
from bot.core.payments import Payment
from bot.core.ports import BeforeSend, Messenger, PhotoFile, Progress, StarCharge, Status
from bot.storage.sqlite import SqliteLedger

API_URL = "https://api.segmind.test"
UPLOAD_URL = "https://upload.segmind.test/upload-asset"
CDN_URL = "https://cdn.segmind.test"
HISTORY_URL = "https://history.segmind.test/inference-request/request-history"
API_KEY = "sg_test_key"
START = 1_700_000_000.0

#: The ``error`` texts the real API sends with each code (see shared/segmind-api.md).
ERROR_BODIES: dict[int, dict[str, Any]] = {
    400: {"error": "Invalid parameters: duration must be 5 or 8"},
    401: {"error": "Invalid API key"},
    403: {"error": "Forbidden: insufficient permissions"},
    404: {"error": "Request not found"},
    406: {"error": "Insufficient credits"},
    422: {"status": "FAILED", "error": "Content blocked by safety filter (RAI)"},
    429: {"error": "Rate limit exceeded"},
    500: {"error": "Internal server error"},
    502: {"error": "Bad gateway"},
    503: {"error": "Service temporarily unavailable"},
    504: {"error": "Gateway timeout"},
}


class FakeClock:
    """``time.time`` for tests: returns ``now``, which only the test moves."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, seconds
        self.now += seconds


# -- Segmind's HTTP API ------------------------------------------------------------------


class ChunkedBody(httpx.AsyncByteStream):
    """A body that arrives in chunks, as over a network: nothing is read until asked."""

    def __init__(self, data: bytes, chunk: int = 4096) -> None:
        self._chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _ChunkIterator(list(self._chunks))


class GatedBody(httpx.AsyncByteStream):
    """A slow download: half the body, then nothing until the test opens ``gate``."""

    def __init__(self, data: bytes, gate: asyncio.Event) -> None:
        self._data = data
        self._gate = gate
        #: Set once the first half has been read (the download is under way).
        self.started = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        half = len(self._data) // 2
        yield self._data[:half]
        self.started.set()
        await self._gate.wait()
        yield self._data[half:]


class _ChunkIterator:
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def __aiter__(self) -> _ChunkIterator:
        return self

    async def __anext__(self) -> bytes:
        if not self._chunks:
            raise StopAsyncIteration
        return self._chunks.pop(0)


@dataclass(frozen=True)
class Reply:
    """A scripted answer: a status code, a JSON body or raw bytes, extra headers."""

    status: int
    body: Any = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def error(code: int, *, retry_after: float | None = None) -> Reply:
    """The real API's answer for ``code``: ``{"error": ...}`` (and Retry-After if given)."""
    headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
    return Reply(code, body=ERROR_BODIES.get(code, {"error": f"HTTP {code}"}), headers=headers)


#: What a route may be scripted to do: a code (its real error body), a Reply, or a
#: transport error class (raised as the request goes out).
Outcome = int | Reply | type[httpx.TransportError]


@dataclass
class FakeRequest:
    """One job Segmind accepted."""

    request_id: str
    image_url: str
    payload: dict[str, Any]
    status: str = "QUEUED"  #: QUEUED | PROCESSING | COMPLETED | FAILED
    error: str = "Content blocked by safety filter (RAI)"
    #: The COMPLETED body's ``output`` (None: a COMPLETED answer without a video URL).
    output: Any = None
    video: bytes = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8
    #: Serve the video without a Content-Length (so only streaming finds its size).
    chunked_video: bool = False
    #: Set: the video downloads slowly (see :class:`GatedBody`).
    video_body: GatedBody | None = None
    status_polls: int = 0
    #: Statuses the next status polls move through, one per poll (then it stays put).
    timeline: list[str] = field(default_factory=list)
    #: When Segmind accepted it (the fake's clock): its history row's timestamp.
    created_at: float = 0.0

    @property
    def video_url(self) -> str:
        return f"{CDN_URL}/videos/{self.request_id}.mp4"


@dataclass(frozen=True)
class Seen:
    """One request the fake received."""

    route: str  #: upload | submit | status | result | video | history | unknown
    method: str
    url: str
    headers: dict[str, str]
    json: Any
    at: float = 0.0  #: when it arrived, by the fake's clock
    request_id: str | None = None  #: the request a status poll, result or video is for


#: The routes of Segmind's API proper (what its per-second limit counts).
API_ROUTES = frozenset({"status", "result", "history"})

_STATUS = re.compile(r"^/v2/requests/(?P<id>[^/]+)/status$")
_RESULT = re.compile(r"^/v2/requests/(?P<id>[^/]+)$")
_VIDEO = re.compile(r"^/videos/(?P<id>[^/]+)\.mp4$")


class FakeSegmindAPI:
    """Segmind's upload, submit, status, result, video and request-history routes,
    scripted per route."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        #: A fresh request shows in the request history only this many seconds after it
        #: was accepted (Segmind's record may land late).
        self.history_lag = 0.0
        #: What the next accepted submits answer instead of their request_id.
        self.after_accept: deque[Outcome] = deque()
        self.requests: list[Seen] = []
        #: The request ids of the submits Segmind accepted (each one paid for).
        self.accepted: list[str] = []
        #: The timeline the next accepted submit's request goes through.
        self.next_timeline: list[str] = []
        self.jobs: dict[str, FakeRequest] = {}
        self.script: dict[str, deque[Outcome]] = defaultdict(deque)
        #: Bodies arrive as a stream (as over a network). False: preloaded bytes, as
        #: ``httpx.Response(json=...)`` builds them, which a real transport never does.
        self.streamed_bodies = True
        #: Whether a submit's 2xx carries ``status_url``/``response_url`` too.
        self.full_submit_answer = True
        #: Awaited with each submit before it is answered (e.g. to look at the ledger).
        self.on_submit: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        self._next_id = 0
        #: URLs of the images uploaded; those in ``expired_assets`` answer 404 (an upload
        #: that Segmind no longer serves).
        self.uploaded: list[str] = []
        self.expired_assets: set[str] = set()
        self.transport = httpx.MockTransport(self.handle)
        #: Set: requests to the API (status, result, history) wait for it before they
        #: are answered (a slow Segmind, or answers a stalled loop gets to late).
        self.api_gate: asyncio.Event | None = None
        #: API requests received and not yet answered, now and at most.
        self.api_in_flight = 0
        self.api_most_in_flight = 0

    # -- scripting -----------------------------------------------------------------------

    def fail(self, route: str, *outcomes: Outcome) -> None:
        """The next requests to ``route`` get ``outcomes``, in order; then normal answers."""
        self.script[route].extend(outcomes)

    def accept_then(self, *outcomes: Outcome) -> None:
        """The next submits are accepted (a job made and paid for), and then their answer
        is ``outcomes`` (a lost connection, a 504, an unreadable 2xx …) in order."""
        self.after_accept.extend(outcomes)

    def add_job(self, request_id: str, status: str = "QUEUED", **fields: Any) -> FakeRequest:
        """A request Segmind already knows (for jobs set up past their submit)."""
        job = FakeRequest(
            request_id=request_id,
            image_url="https://img.test/x.jpg",
            payload={},
            created_at=self.clock(),
        )
        job.status = status
        for key, value in fields.items():
            setattr(job, key, value)
        if "output" not in fields:
            job.output = [job.video_url]
        self.jobs[request_id] = job
        return job

    def count(self, route: str) -> int:
        return sum(1 for seen in self.requests if seen.route == route)

    def seen(self, route: str) -> list[Seen]:
        return [seen for seen in self.requests if seen.route == route]

    # -- serving -------------------------------------------------------------------------

    @staticmethod
    def _route(request: httpx.Request) -> tuple[str, str | None]:
        url = str(request.url)
        path = request.url.path
        if request.method == "POST" and url == UPLOAD_URL:
            return "upload", None
        if url.startswith(API_URL):
            if request.method == "POST" and path == "/v2/warmth-of-jesus":
                return "submit", None
            if request.method == "GET" and (match := _STATUS.match(path)):
                return "status", match["id"]
            if request.method == "GET" and (match := _RESULT.match(path)):
                return "result", match["id"]
        if url.startswith(CDN_URL) and request.method == "GET" and (match := _VIDEO.match(path)):
            return "video", match["id"]
        if url.startswith(f"{CDN_URL}/assets/") and request.method == "HEAD":
            return "asset", url

        if request.method == "GET" and url.split("?")[0] == HISTORY_URL:
            return "history", None
        return "unknown", None

    def _respond(
        self, status: int, *, body: Any = None, raw: bytes | None = None, headers=None
    ) -> httpx.Response:
        all_headers = dict(headers or {})
        if raw is None:
            raw = json.dumps(body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        if not self.streamed_bodies:
            return httpx.Response(status, content=raw, headers=all_headers)
        all_headers.setdefault("Content-Length", str(len(raw)))
        return httpx.Response(status, stream=ChunkedBody(raw), headers=all_headers)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        route, request_id = self._route(request)
        body: Any = None
        if request.content:
            try:
                body = json.loads(request.content)
            except ValueError:
                body = request.content
        self.requests.append(
            Seen(
                route,
                request.method,
                str(request.url),
                dict(request.headers),
                body,
                self.clock(),
                request_id if route in {"status", "result", "video"} else None,
            )
        )
        if route in API_ROUTES:
            self.api_in_flight += 1
            self.api_most_in_flight = max(self.api_most_in_flight, self.api_in_flight)
            try:
                if self.api_gate is not None:
                    await self.api_gate.wait()
                return await self._answer(request, route, request_id, body)
            finally:
                self.api_in_flight -= 1
        return await self._answer(request, route, request_id, body)

    async def _answer(
        self, request: httpx.Request, route: str, request_id: str | None, body: Any
    ) -> httpx.Response:
        if self.script[route]:
            outcome = self.script[route].popleft()
            if isinstance(outcome, int):
                outcome = error(outcome)
            if isinstance(outcome, Reply):
                return self._respond(
                    outcome.status, body=outcome.body, raw=outcome.raw, headers=outcome.headers
                )
            raise outcome(f"scripted {outcome.__name__}", request=request)
        if route == "upload":
            self.uploaded.append(f"{CDN_URL}/assets/upload-{len(self.uploaded) + 1}.jpg")
            return self._respond(
                200,
                body={
                    "file_urls": [self.uploaded[-1]],
                    "message": "Files uploaded successfully",
                },
            )
        if route == "submit":
            if self.on_submit is not None:
                await self.on_submit(body)
            self._next_id += 1
            job = self.add_job(f"req-{self._next_id}")
            job.image_url, job.payload = body["image_url"], body
            job.timeline, self.next_timeline = self.next_timeline, []
            self.accepted.append(job.request_id)
            if self.after_accept:  # accepted and paid for; the answer goes wrong
                lost = self.after_accept.popleft()
                if isinstance(lost, int):
                    lost = error(lost)
                if isinstance(lost, Reply):
                    return self._respond(
                        lost.status, body=lost.body, raw=lost.raw, headers=lost.headers
                    )
                raise lost(f"answer lost: {lost.__name__}", request=request)
            answer: dict[str, Any] = {"request_id": job.request_id}
            if self.full_submit_answer:
                answer["status_url"] = f"{API_URL}/v2/requests/{job.request_id}/status"
                answer["response_url"] = f"{API_URL}/v2/requests/{job.request_id}"
            return self._respond(200, body=answer)
        if route == "history":
            return self._history(request)
        if route == "asset":
            served = request_id in self.uploaded and request_id not in self.expired_assets
            return httpx.Response(200 if served else 404)
        job_or_none = self.jobs.get(request_id or "")
        if job_or_none is None:
            return self._respond(404, body=ERROR_BODIES[404])
        job = job_or_none
        if route in ("status", "result"):
            if route == "status":
                job.status_polls += 1
                if job.timeline:
                    job.status = job.timeline.pop(0)
            if job.status == "FAILED":
                return self._respond(
                    422,
                    body={"status": "FAILED", "request_id": job.request_id, "error": job.error},
                )
            answer = {"status": job.status, "request_id": job.request_id}
            if route == "result" and job.status == "COMPLETED":
                answer["output"] = job.output
                answer["metrics"] = {"inference_time": 50.1}
            return self._respond(200, body=answer)
        if route == "video":
            headers = {"Content-Type": "video/mp4"}
            if job.video_body is not None:
                return httpx.Response(200, stream=job.video_body, headers=headers)
            if job.chunked_video:
                # No Content-Length: the size shows only while streaming.
                return httpx.Response(200, stream=ChunkedBody(job.video), headers=headers)
            return self._respond(200, raw=job.video, headers=headers)
        return self._respond(404, body={"error": "Not found"})

    # -- the request history ---------------------------------------------------------------

    def history_rows(self) -> list[dict[str, Any]]:
        """Every request whose record has landed, newest first, as the history shows it."""
        now = self.clock()
        listed = [job for job in self.jobs.values() if job.created_at + self.history_lag <= now]
        order = {request_id: i for i, request_id in enumerate(self.jobs)}
        listed.sort(key=lambda job: (job.created_at, order[job.request_id]), reverse=True)
        return [self._history_row(job) for job in listed]

    def _history_row(self, job: FakeRequest) -> dict[str, Any]:
        created = datetime.fromtimestamp(job.created_at, UTC).isoformat().replace("+00:00", "Z")
        status = {"COMPLETED": "COMPLETED", "FAILED": "FAILED"}.get(job.status, "PENDING")
        return {
            "request_id": job.request_id,
            "model_name": "warmth-of-jesus",
            "model_status": status,
            "credits_deduction": 0.3,
            "request_body": job.payload,
            "generation_url": job.video_url if status == "COMPLETED" else None,
            "latency_ms": 50100 if status == "COMPLETED" else None,
            "created_at": created,
            "updated_at": created,
            "error": job.error if status == "FAILED" else None,
        }

    def _history(self, request: httpx.Request) -> httpx.Response:
        """``GET …/request-history``: paginated, newest first, filtered like Segmind's."""
        query = request.url.params
        try:
            page = int(query.get("page", "1"))
            per_page = int(query.get("per_page", "20"))
            today = datetime.fromtimestamp(self.clock(), UTC).date()
            first = date.fromisoformat(query.get("from_date", today.isoformat()))
            last = date.fromisoformat(query.get("to_date", today.isoformat()))
        except ValueError:
            return self._respond(400, body={"error": "Invalid query parameters"})
        if page < 1 or not 1 <= per_page <= 100 or first > last or (last - first).days > 31:
            return self._respond(400, body={"error": "Invalid page, per_page or date window"})
        model = query.get("model_name", "")
        rows = [
            row
            for row in self.history_rows()
            if model in row["model_name"]
            and first <= date.fromisoformat(row["created_at"][:10]) <= last
        ]
        if query.get("sort_order", "desc") == "asc":
            rows.reverse()
        start = (page - 1) * per_page
        return self._respond(
            200,
            body={
                "data": rows[start : start + per_page],
                "page": page,
                "per_page": per_page,
                "total": len(rows),
            },
        )


# -- the chat --------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One call the tracker made on the messenger."""

    method: str
    job_id: int
    state: JobState  #: the job's state as the tracker passed it
    args: tuple[Any, ...] = ()


class RecordingMessenger:
    """A :class:`~bot.core.ports.Messenger` that records calls and raises on request."""

    PHOTO = b"\xff\xd8\xff\xe0 a tiny jpeg"

    def __init__(self, max_upload_bytes: int = 50_000) -> None:
        self.max_upload_bytes = max_upload_bytes
        self.calls: list[Call] = []
        self.script: dict[str, deque[MessengerError]] = defaultdict(deque)
        #: The bytes of every video accepted by send_video, in order.
        self.videos: list[bytes] = []
        #: (user id, charge id) of every refund asked for; (charge id, job id) told.
        self.refunded: list[tuple[int, str]] = []
        self.told: list[tuple[str, int | None]] = []
        #: What the platform lists as incoming Stars payments (for reconciliation).
        self.star_charges: list[StarCharge] = []
        #: The next this many show_progress calls are skipped for the chat's pace.
        self.paced_out = 0
        self._entered = asyncio.Event()

    def fail(self, method: str, *errors: MessengerError) -> None:
        """The next calls of ``method`` raise ``errors``, in order; then they work."""
        self.script[method].extend(errors)

    def calls_to(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    def methods(self) -> list[str]:
        return [call.method for call in self.calls]

    async def called(self, method: str) -> Call:
        """The first call of ``method``, once it has been made (for a step in a task)."""
        while not self.calls_to(method):
            self._entered.clear()
            await self._entered.wait()
        return self.calls_to(method)[0]

    def _enter(self, method: str, job: Job, *args: Any) -> None:
        self.calls.append(Call(method, job.id, job.state, args))
        self._entered.set()
        if self.script[method]:
            raise self.script[method].popleft()

    async def fetch_photo(self, job: Job) -> PhotoFile:
        self._enter("fetch_photo", job)
        return PhotoFile(self.PHOTO, "image/jpeg")

    async def photo_link(self, job: Job) -> str:
        self._enter("photo_link", job)
        return f"https://telegram.test/file/botTOKEN/photos/{job.file_id}.jpg"

    async def show_progress(self, job: Job, status: Status) -> bool:
        self._enter("show_progress", job, status)
        if self.paced_out:
            self.paced_out -= 1
            return False  # the chat's slot was taken: not shown
        return True

    def statuses(self, job_id: int | None = None) -> list[Status]:
        """The statuses passed to show_progress (of one job), in order."""
        return [
            call.args[0]
            for call in self.calls_to("show_progress")
            if job_id is None or call.job_id == job_id
        ]

    def stages(self, job_id: int | None = None) -> list[Progress]:
        return [status.progress for status in self.statuses(job_id)]

    async def send_video(self, job: Job, path: Path, *, before_send: BeforeSend = None) -> str:
        if before_send is not None:  # as the rate limiter does, once the chat's turn came
            await before_send()
        self._enter("send_video", job, path.stat().st_size)
        self.videos.append(path.read_bytes())
        return f"video-file-{job.id}"

    async def send_video_link(
        self, job: Job, url: str, expires_at: float, *, before_send: BeforeSend = None
    ) -> None:
        if before_send is not None:
            await before_send()
        self._enter("send_video_link", job, url, expires_at)

    async def send_outcome(self, job: Job) -> None:
        self._enter("send_outcome", job, job.reason)

    async def refund_stars(self, user_id: int, charge_id: str) -> None:
        self.refunded.append((user_id, charge_id))
        if self.script["refund_stars"]:
            raise self.script["refund_stars"].popleft()

    async def star_payments(self, since: float) -> list[StarCharge]:
        return [charge for charge in self.star_charges if charge.date >= since]

    async def tell_refund(self, payment: Payment, job: Job | None) -> None:
        self.told.append((payment.charge_id, job.id if job else None))
        if self.script["tell_refund"]:
            raise self.script["tell_refund"].popleft()


def _is_a_messenger(messenger: RecordingMessenger) -> Messenger:
    return messenger  # mypy checks the double against the Protocol here


# -- operator alerts and the ledger --------------------------------------------------------


class AlertLog:
    """The ``send(kind, resolved)`` handed to the real Alerts; keeps what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[AlertKind, bool]] = []

    async def __call__(self, kind: AlertKind, resolved: bool) -> None:
        self.sent.append((kind, resolved))

    def of(self, kind: AlertKind) -> list[bool]:
        """The ``resolved`` flags sent for ``kind``, in order."""
        return [resolved for sent_kind, resolved in self.sent if sent_kind is kind]


class RecordingLedger(SqliteLedger):
    """The real SQLite ledger; also notes every transition it made (job, source, target)."""

    def __init__(self, path: Path, *, clock: Callable[[], float]) -> None:
        super().__init__(path, clock=clock)
        self.moves: list[tuple[int, JobState, JobState]] = []

    async def transition(
        self, job_id: int, source: JobState, target: JobState, **fields: Any
    ) -> Job | None:
        job = await super().transition(job_id, source, target, **fields)
        if job is not None:
            self.moves.append((job_id, source, target))
        return job
