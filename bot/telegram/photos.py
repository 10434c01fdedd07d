"""Users' photos from Telegram, prepared once for the video service.

A photo is fetched with ``getFile`` and streamed to a file on disk (refused past 20 MB
without reading the rest), prepared from that file in a worker thread by
:func:`bot.images.prepare_image` (a Telegram photo goes as sent, its metadata stripped;
other images are decoded and encoded), and the small JPEG that comes out is kept in a
folder beside the ledger, named after the photo's ``file_unique_id``. So an image sent as a
file is prepared when it arrives (the only way to know it is usable before a keyboard,
and so before an invoice), and the job's submit, its retries and "Try again" read the
same JPEG instead of downloading and decoding again. The folder keeps the newest
``CACHE_FILES`` photos; a photo no longer there is simply prepared again.

Memory: the download never is in memory whole, and images are decoded one at a time in
one worker thread: decoding is CPU-bound, the bot's machine may have two cores and the
event loop needs one, and a burst of big images then costs one image's pixels, not ten.
After each image the worker hands freed memory back to the system (glibc's
``malloc_trim``): image buffers are large and short-lived, and glibc would otherwise
keep them for the process (docs/benchmarks.md, "Ten 20 MB photos at once"). And glibc's
mmap threshold is kept at its start value (:func:`_keep_large_buffers_mapped`): left to
itself glibc raises it to the size of the first image buffer freed, and from then on a
photo's buffer (9 MB for a 1280 × 1707 photo decoded whole) comes from the worker
thread's arena, whose free top ``malloc_trim`` does not return: about 9 MB held for the
process after the first few photos.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image
from telegram import Bot
from telegram.error import BadRequest, InvalidToken, NetworkError, RetryAfter

from ..core.errors import PhotoUnavailable, SendFailed
from ..images import ImageRefused, PreparedImage, prepare_image
from .pacing import retry_after_seconds

__all__ = ["CACHE_FILES", "MAX_DOWNLOAD_BYTES", "Photos"]

log = logging.getLogger(__name__)

#: Telegram hands bots files up to 20 MB.
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024
#: Downloads at once: each may put 20 MB on disk until it is decoded.
DOWNLOAD_CONCURRENCY = 4
#: Prepared photos kept; about 0.2–2 MB each.
CACHE_FILES = 500
_CHUNK = 64 * 1024
_PART_PREFIX = ".part-"


def _glibc() -> ctypes.CDLL | None:
    """glibc, or None elsewhere (musl, macOS): then memory is left to the allocator."""
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_LIBC = _glibc()
#: glibc's ``malloc_trim``, or None: then nothing is trimmed.
_TRIM: Callable[[int], int] | None = getattr(_LIBC, "malloc_trim", None)
#: glibc's ``mallopt`` parameter, and its start value: buffers this big or bigger are
#: mapped on their own and unmapped when freed.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 128 * 1024


def _keep_large_buffers_mapped() -> bool:
    """Fix glibc's mmap threshold at its start value (a fixed value turns off its
    dynamic raising, process-wide): every large buffer, an image's pixels above all, is
    returned to the system when freed instead of staying in a thread's arena. False
    where there is no glibc."""
    mallopt = getattr(_LIBC, "mallopt", None)
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES))


def _prepare_and_give_back(source: Path) -> PreparedImage:
    """Runs in the worker: prepare, delete the download, then return the image's freed
    buffers to the system. Deleting a file is slow on some disks (4.5 % of the event
    loop's time at N = 1000 when the loop did it, docs/benchmarks.md)."""
    try:
        return prepare_image(source)
    finally:
        source.unlink(missing_ok=True)
        if _TRIM is not None:
            _TRIM(0)


class Photos:
    """Fetches and prepares photos by ``file_id``, each ``file_unique_id`` once."""

    def __init__(
        self,
        bot: Bot,
        http: httpx.AsyncClient,
        folder: Path,
        *,
        on_unauthorized: Callable[[], None] | None = None,
    ) -> None:
        self._bot = bot
        self._http = http
        self._folder = folder
        self._on_unauthorized = on_unauthorized
        _keep_large_buffers_mapped()
        #: The one thread images are decoded in (see the module docstring).
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="photo")
        self._downloading = asyncio.Semaphore(DOWNLOAD_CONCURRENCY)
        #: One preparation per photo at a time (a second caller then finds it cached):
        #: each photo's lock and how many callers hold or wait for it.
        self._busy: dict[str, tuple[asyncio.Lock, int]] = {}
        #: Photos prepared since start (a count for tests and the benchmark).
        self.prepared_count = 0
        #: The prepared photos in the folder, least recently used first: the folder is
        #: not scanned (and every file's time read) for each photo kept.
        self._kept: dict[Path, None] = {}

    def open(self) -> None:
        """Create the folder, drop downloads a stopped bot left half-done, and learn the
        prepared photos it holds, least recently used first."""
        self._folder.mkdir(parents=True, exist_ok=True)
        for leftover in self._folder.glob(f"{_PART_PREFIX}*"):
            leftover.unlink(missing_ok=True)
        entries = [entry for entry in os.scandir(self._folder) if entry.name.endswith(".jpg")]
        entries.sort(key=lambda entry: entry.stat().st_mtime)
        self._kept = dict.fromkeys(Path(entry.path) for entry in entries)
        self._evict()

    def close(self) -> None:
        """Stop the worker once the image it is on (if any) is done."""
        self._worker.shutdown(wait=False, cancel_futures=True)

    def _cached_path(self, file_unique_id: str) -> Path:
        digest = hashlib.sha256(file_unique_id.encode()).hexdigest()[:40]
        return self._folder / f"{digest}.jpg"

    async def prepared(self, file_id: str, file_unique_id: str) -> PreparedImage:
        """The photo as the video service's JPEG: from the folder, or made now.

        Raises ``ImageRefused`` (not a usable image), ``PhotoUnavailable`` (Telegram will
        not hand it out; ``too_big`` past 20 MB) or ``SendFailed`` (network, flood).
        """
        lock, users = self._busy.get(file_unique_id, (asyncio.Lock(), 0))
        self._busy[file_unique_id] = (lock, users + 1)
        try:
            async with lock:
                cached = self._read_cached(file_unique_id)
                if cached is not None:
                    return cached
                image = await self._download_and_prepare(file_id)
                self._store(file_unique_id, image)
                return image
        finally:
            lock, users = self._busy[file_unique_id]
            if users > 1:
                self._busy[file_unique_id] = (lock, users - 1)
            else:
                del self._busy[file_unique_id]

    def _read_cached(self, file_unique_id: str) -> PreparedImage | None:
        path = self._cached_path(file_unique_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            # Only a JPEG is ours: anything else there (a stray PNG) would go to Segmind
            # labelled a JPEG, and would make Pillow try every plugin it has.
            with Image.open(io.BytesIO(data), formats=("JPEG",)) as header:  # header only
                width, height = header.size
            os.utime(path)  # recently used: evicted last (after a restart too)
            self._kept.pop(path, None)
            self._kept[path] = None
        except OSError:  # not ours after all (a disk error, a stray file): made again
            path.unlink(missing_ok=True)
            self._kept.pop(path, None)
            return None
        return PreparedImage(data, width, height)

    def _store(self, file_unique_id: str, image: PreparedImage) -> None:
        """Keep it for the job and its retries; a full disk only costs a later re-make."""
        path = self._cached_path(file_unique_id)
        try:
            with tempfile.NamedTemporaryFile(
                dir=self._folder, prefix=_PART_PREFIX, delete=False
            ) as handle:
                handle.write(image.data)
            os.replace(handle.name, path)
        except OSError as exc:
            log.warning("could not keep a prepared photo in %s: %s", self._folder, exc)
            return
        self._kept.pop(path, None)
        self._kept[path] = None
        self._evict()

    def _evict(self) -> None:
        while len(self._kept) > CACHE_FILES:
            oldest = next(iter(self._kept))
            del self._kept[oldest]
            with contextlib.suppress(OSError):
                os.unlink(oldest)

    async def _download_and_prepare(self, file_id: str) -> PreparedImage:
        try:
            handle, name = tempfile.mkstemp(dir=self._folder, prefix=_PART_PREFIX)
        except OSError as exc:  # a full or read-only disk: worth a retry later
            raise SendFailed(f"no room for the download: {exc.strerror}") from exc
        os.close(handle)
        part = Path(name)
        size = 0
        try:
            async with self._downloading:
                try:
                    size = await self._download(file_id, part)
                except OSError as exc:
                    raise SendFailed(f"could not write the download: {exc.strerror}") from exc
            loop = asyncio.get_running_loop()
            # The worker deletes the download once it is prepared (or refused).
            image = await loop.run_in_executor(self._worker, _prepare_and_give_back, part)
        except ImageRefused as exc:
            log.info("photo refused (%d bytes): %s", size, exc)
            raise
        except BaseException:
            part.unlink(missing_ok=True)  # it may never have reached the worker
            raise
        self.prepared_count += 1
        log.debug("photo prepared: %d bytes → %dx%d JPEG", size, image.width, image.height)
        return image

    async def _file_url(self, file_id: str) -> str:
        try:
            telegram_file = await self._bot.get_file(file_id)
        except RetryAfter as exc:
            raise SendFailed("flood control", retry_after=retry_after_seconds(exc)) from exc
        except BadRequest as exc:
            raise PhotoUnavailable(exc.message, too_big="too big" in exc.message.lower()) from exc
        except InvalidToken as exc:
            if self._on_unauthorized is not None:
                self._on_unauthorized()
            raise SendFailed("unauthorized") from exc
        except NetworkError as exc:
            raise SendFailed(f"network: {type(exc).__name__}") from exc
        if not telegram_file.file_path:
            raise PhotoUnavailable("no file path")
        return telegram_file.file_path

    async def _download(self, file_id: str, destination: Path) -> int:
        """Stream the file to ``destination``; its size. Never logs the URL (it holds the
        bot token)."""
        url = await self._file_url(file_id)
        try:
            async with self._http.stream("GET", url) as response:
                if response.status_code in (400, 404):
                    raise PhotoUnavailable(f"download answered {response.status_code}")
                if not response.is_success:
                    raise SendFailed(f"download answered {response.status_code}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > MAX_DOWNLOAD_BYTES:
                    raise PhotoUnavailable("over 20 MB", too_big=True)
                size = 0
                with destination.open("wb") as out:
                    async for chunk in response.aiter_bytes(_CHUNK):
                        size += len(chunk)
                        if size > MAX_DOWNLOAD_BYTES:
                            raise PhotoUnavailable("over 20 MB", too_big=True)
                        out.write(chunk)
                return size
        except httpx.TransportError as exc:
            raise SendFailed(f"download failed: {type(exc).__name__}") from exc
