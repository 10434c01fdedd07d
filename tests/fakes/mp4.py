"""Minimal but well-formed MP4 headers (ISO/IEC 14496-12), for the fakes and the reader's
tests: ``ftyp``, then ``moov`` with ``mvhd`` and one ``trak`` per track (``tkhd``,
``mdia`` with ``mdhd`` and ``hdlr``), as an encoder writes them, field by field. There
are no samples: the ``mdat`` that follows holds filler bytes."""

from __future__ import annotations

import struct

__all__ = ["FTYP", "box", "mdat_header", "moov", "mp4_header"]

FTYP = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isommp42"
#: The identity matrix of ``mvhd`` and ``tkhd`` (16.16 and 2.30 fixed point).
IDENTITY = (0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
#: A quarter turn (how phones mark a video shot upright).
QUARTER_TURN = (0, 0x00010000, 0, -0x00010000, 0, 0, 0, 0, 0x40000000)


def box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full_box(kind: bytes, version: int, body: bytes, flags: int = 0) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags) + body)


def mvhd(timescale: int, duration: int, *, version: int = 0) -> bytes:
    if version == 1:
        times = struct.pack(">QQIQ", 0, 0, timescale, duration)
    else:
        times = struct.pack(">IIII", 0, 0, timescale, duration)
    rest = (
        struct.pack(">iH", 0x00010000, 0x0100)  # rate 1.0, volume 1.0
        + bytes(10)  # reserved
        + struct.pack(">9i", *IDENTITY)
        + bytes(24)  # pre_defined
        + struct.pack(">I", 3)  # next_track_ID
    )
    return full_box(b"mvhd", version, times + rest)


def tkhd(
    track_id: int,
    duration: int,
    width: int,
    height: int,
    *,
    version: int = 0,
    audio: bool = False,
    matrix: tuple[int, ...] = IDENTITY,
) -> bytes:
    if version == 1:
        times = struct.pack(">QQIIQ", 0, 0, track_id, 0, duration)
    else:
        times = struct.pack(">IIIII", 0, 0, track_id, 0, duration)
    rest = (
        bytes(8)  # reserved
        + struct.pack(">hhhH", 0, 0, 0x0100 if audio else 0, 0)  # layer, group, volume
        + struct.pack(">9i", *matrix)
        + struct.pack(">II", width << 16, height << 16)
    )
    return full_box(b"tkhd", version, times + rest, flags=3)  # enabled, in movie


def trak(
    track_id: int,
    handler: bytes,
    timescale: int,
    duration: int,
    width: int = 0,
    height: int = 0,
    *,
    version: int = 0,
    matrix: tuple[int, ...] = IDENTITY,
) -> bytes:
    audio = handler == b"soun"
    mdhd = full_box(b"mdhd", 0, struct.pack(">IIIIHH", 0, 0, timescale, duration, 0x55C4, 0))
    name = b"SoundHandler\x00" if audio else b"VideoHandler\x00"
    hdlr = full_box(b"hdlr", 0, struct.pack(">I4s12x", 0, handler) + name)
    return box(
        b"trak",
        tkhd(track_id, duration, width, height, version=version, audio=audio, matrix=matrix)
        + box(b"mdia", mdhd + hdlr),
    )


def moov(
    width: int,
    height: int,
    seconds: float,
    *,
    audio: bool = False,
    version: int = 0,
    matrix: tuple[int, ...] = IDENTITY,
) -> bytes:
    timescale = 1000
    duration = int(seconds * timescale)
    tracks = trak(1, b"vide", timescale, duration, width, height, version=version, matrix=matrix)
    if audio:
        tracks += trak(2, b"soun", 44100, int(seconds * 44100), version=version)
    return box(b"moov", mvhd(timescale, duration, version=version) + tracks)


def mdat_header(payload_size: int) -> bytes:
    return struct.pack(">I4s", 8 + payload_size, b"mdat")


def mp4_header(
    width: int, height: int, seconds: float, total_size: int, *, audio: bool = False
) -> bytes:
    """``ftyp`` + ``moov`` + the ``mdat`` header of a "fast start" file of ``total_size``
    bytes (the rest of the file is the ``mdat``'s payload)."""
    head = FTYP + moov(width, height, seconds, audio=audio)
    return head + mdat_header(max(0, total_size - len(head) - 8))
