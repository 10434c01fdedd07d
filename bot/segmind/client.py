"""An async client for Segmind's v2 (submit + poll) API and its asset upload.

It knows HTTP and Segmind, nothing about Telegram, and implements the core's
:class:`~bot.core.ports.VideoService`. Every answer that is not the one asked for
becomes one of the errors drawn in :mod:`bot.core.errors` (``SegmindError`` and its
branches), so callers catch the branch they can act on.

The API key is sent per request to Segmind's hosts only, never to the CDN that serves
the finished video.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
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

__all__ = ["MODEL_SLUG", "SegmindClient", "find_output_url"]

MODEL_SLUG = "warmth-of-jesus"
USER_AGENT = "warmth-telegram-bot/0.1 (+httpx)"
_CHUNK = 64 * 1024

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


class SegmindClient:
    """Segmind's v2 API over one shared :class:`httpx.AsyncClient` (its pool is reused)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_key: str,
        api_url: str = "https://api.segmind.com",
        upload_url: str = "https://workflows-api.segmind.com/upload-asset",
        model: str = MODEL_SLUG,
    ) -> None:
        self._http = http
        self._headers = {"x-api-key": api_key, "user-agent": USER_AGENT}
        self._api_url = api_url.rstrip("/")
        self._upload_url = upload_url
        self._model = model

    async def _request(
        self, method: str, url: str, *, json: Any = None, submitting: bool = False
    ) -> httpx.Response:
        try:
            return await self._http.request(method, url, json=json, headers=self._headers)
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
        """Re-host an image; returns a URL Segmind can fetch, without any Telegram token."""
        data_url = f"data:{mime_type};base64,{base64.b64encode(data).decode('ascii')}"
        response = await self._request("POST", self._upload_url, json={"data_urls": [data_url]})
        if not response.is_success:
            _raise_for(response)
        body = self._json(response)
        urls = body.get("file_urls")
        if not isinstance(urls, list) or not urls or not isinstance(urls[0], str):
            raise BadResponse("upload answer has no file_urls")
        return urls[0]

    async def submit(self, image_url: str, options: VideoOptions) -> Submission:
        """Start one paid job. Segmind has no idempotency key: never call twice for one job."""
        if not is_allowed(options):
            raise InputRejected(f"options not allowed: {options}")
        payload: dict[str, Any] = {
            "image_url": image_url,
            "quality": options.quality,
            "duration": options.duration,
        }
        if options.seed is not None:
            payload["seed"] = options.seed
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
