"""Width, height, duration and "has sound" of an MP4, read from its ``moov`` box.

Telegram lays a video out before it downloads only when ``sendVideo`` says how big and
how long it is, and it cannot learn that from an upload it has not processed yet. The
figures are in the MP4's header (ISO/IEC 14496-12):

    moov ─ mvhd                      timescale, duration (the movie's length)
         └ trak ─ tkhd               the track's width × height (16.16 fixed point)
                └ mdia ─ mdhd
                       └ hdlr        handler "vide" (a picture) or "soun" (a sound)

A small reader instead of a library: it needs four boxes, reads only their bytes (the
``moov`` may follow a large ``mdat``: it is found by seeking past it), and a damaged
file must never stop a delivery. Anything it cannot make sense of gives None, and the
video goes out without the figures.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = ["VideoInfo", "read_video_info"]

log = logging.getLogger(__name__)

#: A ``moov`` larger than this is not a short clip's header: not read into memory.
MAX_MOOV_BYTES = 16 * 1024 * 1024
#: Top-level boxes looked at before giving up (a real file has a handful).
_MAX_TOP_LEVEL_BOXES = 64
_HEADER = struct.Struct(">I4s")
_LARGE_SIZE = struct.Struct(">Q")


@dataclass(frozen=True)
class VideoInfo:
    """What ``sendVideo`` is told about a clip; sizes as displayed (rotation applied)."""

    width: int
    height: int
    #: Whole seconds, as Telegram wants them (at least 1 for any non-empty clip).
    duration: int
    has_audio: bool


class _Damaged(Exception):
    """The bytes are not the MP4 structure they claim to be."""


def read_video_info(path: Path) -> VideoInfo | None:
    """The clip's size and length from its header; None for a file that is not a
    readable MP4 with a video track (never raises for bad content)."""
    try:
        with path.open("rb") as handle:
            moov = _find_moov(handle)
        return None if moov is None else _parse_moov(moov)
    except (_Damaged, struct.error, OSError, ValueError) as exc:
        log.info(
            "video header unreadable (%s: %s): sent without its size", type(exc).__name__, exc
        )
        return None


def _find_moov(handle: BinaryIO) -> bytes | None:
    """The ``moov`` box's contents, seeking past every other top-level box."""
    handle.seek(0, 2)
    end = handle.tell()
    offset = 0
    for _ in range(_MAX_TOP_LEVEL_BOXES):
        if offset + _HEADER.size > end:
            return None
        handle.seek(offset)
        size, kind = _HEADER.unpack(_read(handle, _HEADER.size))
        header = _HEADER.size
        if size == 1:
            (size,) = _LARGE_SIZE.unpack(_read(handle, _LARGE_SIZE.size))
            header += _LARGE_SIZE.size
        elif size == 0:
            size = end - offset  # the box runs to the end of the file
        if size < header or offset + size > end:
            raise _Damaged(f"box {kind!r} of {size} bytes at {offset} overruns the file")
        if offset == 0 and kind != b"ftyp":
            return None  # not an ISO media file at all
        if kind == b"moov":
            if size - header > MAX_MOOV_BYTES:
                raise _Damaged(f"moov of {size} bytes")
            return _read(handle, size - header)
        offset += size
    return None


def _read(handle: BinaryIO, count: int) -> bytes:
    data = handle.read(count)
    if len(data) != count:
        raise _Damaged("file ends inside a box")
    return data


def _boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (type, contents) of the boxes packed in ``data``."""
    found: list[tuple[bytes, bytes]] = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        size, kind = _HEADER.unpack_from(data, offset)
        header = _HEADER.size
        if size == 1:
            (size,) = _LARGE_SIZE.unpack_from(data, offset + header)
            header += _LARGE_SIZE.size
        elif size == 0:
            size = len(data) - offset
        if size < header or offset + size > len(data):
            raise _Damaged(f"box {kind!r} of {size} bytes overruns its parent")
        found.append((kind, data[offset + header : offset + size]))
        offset += size
    return found


def _child(data: bytes, kind: bytes) -> bytes | None:
    return next((body for found, body in _boxes(data) if found == kind), None)


def _parse_moov(moov: bytes) -> VideoInfo | None:
    mvhd = _child(moov, b"mvhd")
    if mvhd is None:
        raise _Damaged("moov without mvhd")
    timescale, length = _timescale_and_duration(mvhd)
    if timescale == 0:
        raise _Damaged("mvhd timescale 0")
    size: tuple[int, int] | None = None
    has_audio = False
    for kind, trak in _boxes(moov):
        if kind != b"trak":
            continue
        handler = _handler(trak)
        if handler == b"soun":
            has_audio = True
        elif handler == b"vide" and size is None:
            tkhd = _child(trak, b"tkhd")
            if tkhd is not None:
                size = _display_size(tkhd)
    if size is None or size[0] <= 0 or size[1] <= 0:
        return None
    seconds = length / timescale
    duration = max(1, round(seconds)) if seconds > 0 else 0
    return VideoInfo(width=size[0], height=size[1], duration=duration, has_audio=has_audio)


def _timescale_and_duration(mvhd: bytes) -> tuple[int, int]:
    """From ``mvhd``: version 1 has 64-bit times, version 0 32-bit ones."""
    version = mvhd[0]
    if version == 1:
        timescale, length = struct.unpack_from(">IQ", mvhd, 4 + 16)
    else:
        timescale, length = struct.unpack_from(">II", mvhd, 4 + 8)
    if length in (0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF):
        length = 0  # "unknown" (a fragmented file)
    return int(timescale), int(length)


def _handler(trak: bytes) -> bytes | None:
    mdia = _child(trak, b"mdia")
    hdlr = None if mdia is None else _child(mdia, b"hdlr")
    if hdlr is None or len(hdlr) < 12:
        return None
    return hdlr[8:12]  # version+flags (4), pre_defined (4), then the handler type


def _display_size(tkhd: bytes) -> tuple[int, int]:
    """Width × height from ``tkhd`` (16.16 fixed point), swapped when its matrix turns
    the picture a quarter (a phone video shot upright)."""
    version = tkhd[0]
    # version+flags, then times and ids: 20 bytes (v0) or 32 (v1) up to reserved words.
    matrix_at = 4 + (32 if version == 1 else 20) + 8 + 2 + 2 + 2 + 2
    a, b, _u, c, d = struct.unpack_from(">iiiii", tkhd, matrix_at)
    width, height = struct.unpack_from(">II", tkhd, matrix_at + 36)
    width, height = width >> 16, height >> 16
    quarter_turn = a == 0 and d == 0 and b != 0 and c != 0
    return (height, width) if quarter_turn else (width, height)
