"""An async client for Segmind's v2 (submit + poll) API and its asset upload.

It knows HTTP and Segmind, nothing about Telegram, and implements the core's
:class:`~bot.core.ports.VideoService`. Every answer that is not the one asked for
becomes one of the errors drawn in :mod:`bot.core.errors` (``SegmindError`` and its
branches), so callers catch the branch they can act on.

The API key is sent per request to Segmind's hosts only, never to the CDN that serves
the finished video.

Every submit carries the job's ``seed``: with its ``image_url`` it names the request, so
:meth:`SegmindClient.find_request` can find a submit whose answer was lost in the
account's request history (``shared/segmind-api.md``, last section). The history's rows
are read defensively — the row list is looked for in the body and every field is
optional — because only the SDK's description of them is known.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from ..core.errors import (
    BadResponse,
    InputRejected,
    JobFailed,
    KeyRejected,
    NotFound,
    OutOfCredits,
    TemporaryError,
    TooLarge,
)
from ..core.options import VideoOptions, is_allowed
from ..core.ports import StatusReport, Submission

__all__ = [
    "DEFAULT_HISTORY_URL",
    "MODEL_SLUG",
    "SegmindClient",
    "find_output_url",
    "history_rows",
]

MODEL_SLUG = "warmth-of-jesus"
USER_AGENT = "warmth-telegram-bot/0.1 (+httpx)"
DEFAULT_HISTORY_URL = "https://api.spotprod.segmind.com/inference-request/request-history"
_CHUNK = 64 * 1024
#: A media type that can go into JSON as it is (no quote, backslash or control character).
_MEDIA_TYPE = re.compile(r"[\w.+-]+/[\w.+-]+")
#: Request history: rows per page (the most it serves) and pages read per lookup.
HISTORY_PER_PAGE = 100
HISTORY_MAX_PAGES = 5
#: Our clock and Segmind's may disagree: rows this much older than ``since`` still count,
#: and the date window reaches this far on both sides.
HISTORY_CLOCK_SLACK = 600.0
#: The history serves a window of at most 31 days.
_HISTORY_MAX_DAYS = 30
_TIME_KEYS = ("model_created", "created_at", "createdAt", "created", "timestamp", "updated_at")

log = logging.getLogger(__name__)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, Mapping):
        for key in ("error", "detail", "message"):
            if body.get(key):
                return str(body[key])[:500]
    return str(body)[:200]


def _raise_for(response: httpx.Response, *, submitting: bool = False) -> None:
    """Turn a non-2xx answer into the error the caller can act on."""
    code = response.status_code
    text = _error_text(response)
    if code == 400:
        raise InputRejected(text, status=code)
    if code in (401, 403):
        raise KeyRejected(text, status=code)
    if code == 406:
        raise OutOfCredits(text, status=code)
    if code == 404:
        raise NotFound(text, status=code)
    if code == 422:
        raise JobFailed(text)
    if code == 429:
        raise TemporaryError(
            text, status=code, retry_after=_retry_after(response), maybe_sent=False
        )
    if code >= 500:
        # A gateway's 502/504 may hide a backend that accepted the job.
        maybe_sent = submitting and code in (502, 504)
        raise TemporaryError(
            text, status=code, retry_after=_retry_after(response), maybe_sent=maybe_sent
        )
    raise TemporaryError(text, status=code, maybe_sent=submitting)


def find_output_url(output: Any) -> str | None:
    """The video URL in a COMPLETED body's ``output``: a string, a list, or an object."""
    if isinstance(output, str):
        return output if output.startswith(("http://", "https://")) else None
    if isinstance(output, list):
        for item in output:
            found = find_output_url(item)
            if found:
                return found
    if isinstance(output, Mapping):
        for key in ("video", "url", "video_url", "output", "file_url"):
            if key in output:
                found = find_output_url(output[key])
                if found:
                    return found
        for value in output.values():
            found = find_output_url(value)
            if found:
                return found
    return None


def _rows_in(body: Any, depth: int = 0) -> list[Mapping[str, Any]] | None:
    """The first list of objects in a history answer (``data``, ``items``, … or nested)."""
    if isinstance(body, list):
        rows = [row for row in body if isinstance(row, Mapping)]
        return rows if rows or not body else None
    if isinstance(body, Mapping) and depth < 3:
        for key in ("data", "items", "results", "rows", "requests", "records", "history"):
            found = _rows_in(body.get(key), depth + 1)
            if found is not None:
                return found
        for value in body.values():
            if isinstance(value, list | Mapping):
                found = _rows_in(value, depth + 1)
                if found is not None:
                    return found
    return None


def history_rows(body: Any) -> list[Mapping[str, Any]]:
    """The rows of one request-history page; none when the body holds no list."""
    return _rows_in(body) or []


def _request_body(row: Mapping[str, Any]) -> Mapping[str, Any]:
    """A row's inputs as sent: an object, or the same as JSON text."""
    for key in ("request_body", "parameters", "request", "input", "inputs"):
        value = row.get(key)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                continue
        if isinstance(value, Mapping):
            return value
    return {}


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _timestamp(value: Any) -> float | None:
    """Unix seconds from epoch seconds or milliseconds, or an ISO 8601 text (UTC if bare)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) / 1000.0 if value > 1e11 else float(value)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if text.replace(".", "", 1).isdigit():
            return _timestamp(float(text))
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    return None


def _row_time(row: Mapping[str, Any]) -> float | None:
    for key in _TIME_KEYS:
        stamp = _timestamp(row.get(key))
        if stamp is not None:
            return stamp
    return None


def _matches(row: Mapping[str, Any], image_url: str, seed: int, model: str) -> str | None:
    """The row's request_id when it is the request sent with this image URL and seed."""
    body = _request_body(row)
    if body.get("image_url") != image_url or _as_int(body.get("seed")) != seed:
        return None
    name = row.get("model_name")
    if isinstance(name, str) and name and model not in name:
        return None
    request_id = row.get("request_id")
    if isinstance(request_id, bool) or not isinstance(request_id, str | int):
        return None
    return str(request_id).strip() or None


def _day(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d")


class SegmindClient:
    """Segmind's v2 API over one shared :class:`httpx.AsyncClient` (its pool is reused)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_key: str,
        api_url: str = "https://api.segmind.com",
        upload_url: str = "https://workflows-api.segmind.com/upload-asset",
        history_url: str | None = DEFAULT_HISTORY_URL,
        model: str = MODEL_SLUG,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = http
        self._headers = {"x-api-key": api_key, "user-agent": USER_AGENT}
        self._api_url = api_url.rstrip("/")
        self._upload_url = upload_url
        self._history_url = history_url
        self._model = model
        self._clock = clock

    async def _request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        body: bytes | None = None,
        params: Mapping[str, str | int] | None = None,
        submitting: bool = False,
    ) -> httpx.Response:
        headers = self._headers
        if body is not None:
            headers = {**headers, "content-type": "application/json"}
        try:
            return await self._http.request(
                method, url, json=json, content=body, params=params, headers=headers
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise TemporaryError(
                f"could not connect: {type(exc).__name__}", maybe_sent=False
            ) from exc
        except httpx.TransportError as exc:
            # The request may have left: a submit must be treated as possibly accepted.
            raise TemporaryError(
                f"transport error: {type(exc).__name__}", maybe_sent=True
            ) from exc

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError as exc:
            raise BadResponse("answer is not JSON", status=response.status_code) from exc
        if not isinstance(body, dict):
            raise BadResponse("answer is not an object", status=response.status_code)
        return body

    async def upload(self, data: bytes, mime_type: str = "image/jpeg") -> str:
        """Re-host an image; returns a URL Segmind can fetch, without any Telegram token.

        The JSON body is built as bytes around the base64 (whose alphabet needs no JSON
        escaping): one copy of the encoded image, not a string and its JSON besides.
        """
        if not _MEDIA_TYPE.fullmatch(mime_type):
            raise InputRejected(f"not a media type: {mime_type[:40]!r}")
        payload = b"".join(
            [
                b'{"data_urls":["data:',
                mime_type.encode("ascii"),
                b";base64,",
                base64.b64encode(data),
                b'"]}',
            ]
        )
        response = await self._request("POST", self._upload_url, body=payload)
        if not response.is_success:
            _raise_for(response)
        body = self._json(response)
        urls = body.get("file_urls")
        if not isinstance(urls, list) or not urls or not isinstance(urls[0], str):
            raise BadResponse("upload answer has no file_urls")
        return urls[0]

    async def submit(self, image_url: str, options: VideoOptions) -> Submission:
        """Start one paid job. Segmind has no idempotency key: never call twice for one job.

        The seed is required and always sent: without it the request could not be told
        apart in the history if its answer were lost.
        """
        if not is_allowed(options) or options.seed is None:
            raise InputRejected(f"options not allowed (a seed is required): {options}")
        payload: dict[str, Any] = {
            "image_url": image_url,
            "quality": options.quality,
            "duration": options.duration,
            "seed": options.seed,
        }
        if options.style is not None:
            payload["style"] = options.style
        response = await self._request(
            "POST", f"{self._api_url}/v2/{self._model}", json=payload, submitting=True
        )
        if not response.is_success:
            _raise_for(response, submitting=True)
        body = self._json(response)
        request_id = body.get("request_id")
        if not isinstance(request_id, str | int) or str(request_id).strip() == "":
            # Accepted (2xx) but unreadable: it may well be running and charged.
            raise BadResponse("submit answer lacks request_id")
        # status_url and response_url are derived from the request_id; only it is needed.
        return Submission(request_id=str(request_id))

    async def find_request(self, image_url: str, seed: int, since: float) -> str | None:
        """The request sent with ``image_url`` and ``seed`` at or after ``since``, from the
        account's request history (newest first, a few pages at most); None if not listed.

        Errors are the client's usual ones (``TemporaryError`` for 5xx and transport
        trouble, ``KeyRejected``, ``BadResponse`` for an answer that is not JSON, …).
        Without a history URL (lookups off) it raises ``TemporaryError`` at once.
        """
        if self._history_url is None:
            raise TemporaryError("no request history URL", maybe_sent=False)
        now = self._clock()
        oldest = since - HISTORY_CLOCK_SLACK
        newest = now + HISTORY_CLOCK_SLACK
        oldest = max(oldest, newest - _HISTORY_MAX_DAYS * 86400.0)
        for page in range(1, HISTORY_MAX_PAGES + 1):
            rows = await self._history_page(page, _day(oldest), _day(newest))
            for row in rows:
                found = _matches(row, image_url, seed, self._model)
                if found is not None:
                    return found
            if len(rows) < HISTORY_PER_PAGE:
                return None  # the last page
            last = _row_time(rows[-1])
            if last is not None and last < oldest:
                return None  # newest first: every later row is older still
        log.warning("request history: no match in the newest %d pages", HISTORY_MAX_PAGES)
        return None

    async def _history_page(self, page: int, from_date: str, to_date: str) -> list[Any]:
        params: dict[str, str | int] = {
            "model_name": self._model,
            "from_date": from_date,
            "to_date": to_date,
            "page": page,
            "per_page": HISTORY_PER_PAGE,
            "sort_order": "desc",
        }
        assert self._history_url is not None
        response = await self._request("GET", self._history_url, params=params)
        if not response.is_success:
            _raise_for(response)
        try:
            body = response.json()
        except ValueError as exc:
            raise BadResponse("history answer is not JSON", status=response.status_code) from exc
        rows = _rows_in(body)
        if rows is None:
            raise BadResponse("history answer holds no list of rows")
        return rows

    async def status(self, request_id: str) -> StatusReport:
        """One status poll. FAILED is an answer (HTTP 422 with a body), not an error."""
        response = await self._request("GET", f"{self._api_url}/v2/requests/{request_id}/status")
        return self._report(response)

    async def result(self, request_id: str) -> StatusReport:
        """The final body; for COMPLETED it carries the video URL."""
        response = await self._request("GET", f"{self._api_url}/v2/requests/{request_id}")
        report = self._report(response)
        if report.status == "COMPLETED" and report.output_url is None:
            raise BadResponse("COMPLETED without an output URL")
        return report

    def _report(self, response: httpx.Response) -> StatusReport:
        if response.status_code == 422:
            body = self._json_or_empty(response)
            if str(body.get("status", "")).upper() == "FAILED" or "error" in body:
                return StatusReport(status="FAILED", error=str(body.get("error") or "failed"))
        if not response.is_success:
            _raise_for(response)
        body = self._json(response)
        status = str(body.get("status", "")).upper()
        if status not in ("QUEUED", "PROCESSING", "COMPLETED", "FAILED"):
            raise BadResponse(f"unknown status {status[:40]!r}")
        error = str(body["error"]) if status == "FAILED" and body.get("error") else None
        output = find_output_url(body.get("output")) if status == "COMPLETED" else None
        return StatusReport(status=status, error=error, output_url=output)

    @staticmethod
    def _json_or_empty(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    async def still_serves(self, url: str) -> bool:
        """Whether an uploaded image is still served at ``url``: one HEAD, no API key
        (the asset host is not the API). Anything but a 2xx — an expired upload's 404, a
        host that refuses HEAD, a network error — is False: re-hosting is always safe."""
        try:
            response = await self._http.head(
                url, headers={"user-agent": USER_AGENT}, follow_redirects=True, timeout=10.0
            )
        except httpx.HTTPError as exc:
            log.info("re-hosted image not checked (%s): uploading again", type(exc).__name__)
            return False
        return response.is_success

    async def download(self, url: str, destination: Path, *, max_bytes: int) -> int:
        """Stream the video to ``destination`` (never whole in memory); returns its size.

        Raises :class:`TooLarge` past ``max_bytes`` (the file is then removed) and
        :class:`NotFound` once the result has expired. No API key goes to this URL.
        """
        try:
            async with self._http.stream(
                "GET", url, headers={"user-agent": USER_AGENT}, follow_redirects=True
            ) as response:
                if not response.is_success:
                    # A streamed answer's body is not read yet; its error text needs it
                    # (an error page is small, unlike the video).
                    await response.aread()
                    _raise_for(response)
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise TooLarge(int(declared))
                size = 0
                with destination.open("wb") as out:
                    async for chunk in response.aiter_bytes(_CHUNK):
                        size += len(chunk)
                        if size > max_bytes:
                            raise TooLarge(None)
                        out.write(chunk)
                return size
        except TooLarge:
            destination.unlink(missing_ok=True)
            raise
        except httpx.TransportError as exc:
            destination.unlink(missing_ok=True)
            raise TemporaryError(f"download failed: {type(exc).__name__}") from exc
