"""A user's image made into what the video service wants: one upright RGB JPEG, small.

A JPEG that already is that — as a Telegram photo is: RGB, upright (Telegram applies the
orientation and strips EXIF), 1280 px long (2560 for an HD photo, which is shrunk) —
goes as it was sent, only its metadata cut out (:func:`without_metadata`; losslessly,
the entropy-coded data untouched). Whether it can is decided from its header alone; then
its bytes are checked to decode whole at 1/8 scale (libjpeg reads every coefficient but
skips the inverse DCT). Decoding it and encoding it again cost 23 ms of CPU per photo in
the photo worker at N = 100 (231 of 1062 samples of the bot's profile in ``make
bench``), a 9 MB pixel buffer for a 1280 × 1707 photo (the bot's peak RSS), and a second
generation of JPEG loss; as sent, such a photo costs 1.5–6.5 ms and about 1 MB.
Everything else takes the full path:

Pillow decodes it (HEIC/HEIF through pillow-heif); the EXIF orientation is applied; an
animation gives its first frame; transparency is flattened on white; the long side is
capped at ``MAX_LONG_SIDE`` (a 1080p video cannot use more). Anything that is not a
raster image Pillow can decode — SVG, a PDF renamed ``.jpg``, broken or truncated
bytes, a decompression bomb — and anything too small to make a video from is refused
with :class:`ImageRefused`, whose :class:`Refusal` says which reply the user gets.

Memory: a JPEG is decoded at a reduced scale (``draft``: 1/2, 1/4 or 1/8 straight out
of the DCT) so a 12000×12000 photo costs a 3000×3000 buffer, not a 144-megapixel one;
other formats have no such shortcut, so they are refused above ``MAX_DECODED_PIXELS``
before any pixel is decoded. On the full path everything is resized before it is rotated
or converted, so no second full-size copy is made. The lossless path holds the file's
bytes (at most ``LOSSLESS_MAX_FILE_BYTES``), the stripped copy and a 1/8-scale buffer
(137 KB for 1280 × 1707) — and for a progressive JPEG the coefficients of the whole
picture, which libjpeg keeps at any scale (about 6.5 MB for 1280 × 1707).

Memory of the process: only the wanted formats' plugins are loaded at import, not
Pillow's ~45 (``Image.init()``), and HEIF (pillow-heif, with libheif and its codecs) and
AVIF (libavif) only once an image in their container (ISO BMFF, an ``ftyp`` box first)
arrives: together about 8 MB of RSS that a bot whose users send JPEGs never needs
(docs/benchmarks.md).

This module is synchronous and CPU-bound: callers run it in a worker thread. It knows
nothing of Telegram or of the video service.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import threading
import warnings
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from PIL import Image, ImageOps

__all__ = [
    "DRAFT_LONG_SIDE",
    "LOSSLESS_MAX_BYTES",
    "LOSSLESS_MAX_FILE_BYTES",
    "MAX_DECODED_PIXELS",
    "MAX_IMAGE_PIXELS",
    "MAX_LONG_SIDE",
    "MIN_SHORT_SIDE",
    "ImageRefused",
    "PreparedImage",
    "Refusal",
    "draft_box",
    "prepare_image",
    "without_metadata",
]

#: The longest side sent to the video service: a 1080p video is 1920 px long; the
#: model gains nothing from more, and the upload stays well under a megabyte or two.
MAX_LONG_SIDE = 2048
#: A JPEG is decoded at the smallest scale (1/2, 1/4, 1/8) that keeps at least this long
#: a long side (1080p's 1080 × 4/3), and never enlarged after: a 12000 px photo decodes
#: at 1/8 (1500 px, 9 MB of pixels) instead of 1/4 (3000 px, 36 MB).
DRAFT_LONG_SIDE = 1440
#: Shorter than this on its short side (after the cap) makes no video worth the money:
#: even 360p would upscale it almost three times and faces vanish. Telegram's smallest
#: real photo size is 320 px, so no photo a camera took is refused; icons, 1×1 pixels,
#: stickers' thumbnails and slivers of panoramas are.
MIN_SHORT_SIDE = 128
#: Pillow's decompression-bomb limit: it warns above this many pixels and refuses twice
#: as many; the bot refuses both. 200 megapixels is the largest phone camera; a JPEG this
#: big is still decoded at 1/4 or 1/8 scale (``draft``), so its memory stays small.
MAX_IMAGE_PIXELS = 200_000_000
#: Formats without a reduced-scale decode (PNG, WEBP, HEIC, GIF, TIFF…) are decoded
#: whole: above this many pixels (a 24-megapixel camera's HEIC fits; 4 bytes a pixel
#: makes it 100 MB) the user is asked to send it as a photo instead.
MAX_DECODED_PIXELS = 25_000_000
JPEG_QUALITY = 90
#: A JPEG goes as it was sent when what is left after stripping its metadata is at most
#: this big. A photo of at most ``MAX_LONG_SIDE`` px this heavy was saved at quality 97 to
#: 100 (a noisy 2048 × 1536 picture: 0.4–0.6 MB at 90, 1–1.5 MB at 97, 2–2.5 MB at 100):
#: re-encoded at ``JPEG_QUALITY`` it is a third or less of that to upload, and the video
#: shows no difference.
LOSSLESS_MAX_BYTES = 2 * 1024 * 1024
#: A bigger file is not read whole for the lossless path: its JPEG and up to as much
#: again of metadata (EXIF with its thumbnail, XMP, an MPF preview). Motion photos, a
#: video appended after the picture, are bigger; the full path decodes them from the
#: file as it reads it, never holding it in memory.
LOSSLESS_MAX_FILE_BYTES = 4 * 1024 * 1024
#: The raster formats accepted; nothing else is even tried (EPS would run Ghostscript).
_WANTED = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF", "HEIF", "AVIF")
#: The Pillow plugins of the wanted formats but HEIF and AVIF, loaded at import.
_PLUGINS = (
    "JpegImagePlugin",
    "MpoImagePlugin",
    "PngImagePlugin",
    "GifImagePlugin",
    "WebPImagePlugin",
    "BmpImagePlugin",
    "TiffImagePlugin",
)

Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
for _plugin in _PLUGINS:
    importlib.import_module(f"PIL.{_plugin}")
#: The wanted formats this Pillow build can open without pillow-heif or libavif.
FORMATS = tuple(name for name in _WANTED if name in Image.OPEN)

_container_lock = threading.Lock()
_container_formats: tuple[str, ...] | None = None


def container_formats() -> tuple[str, ...]:
    """HEIF and AVIF as this build can open them, their plugins loaded at the first
    call (any thread): each brings its codec libraries into the process."""
    global _container_formats
    with _container_lock:
        if _container_formats is None:
            import pillow_heif

            # Only the primary image of a HEIC is wanted: no thumbnails, depth maps or
            # aux images.
            pillow_heif.options.THUMBNAILS = False
            pillow_heif.options.DEPTH_IMAGES = False
            pillow_heif.options.AUX_IMAGES = False
            pillow_heif.register_heif_opener()
            with contextlib.suppress(ImportError):  # Pillow 11.2 and later
                importlib.import_module("PIL.AvifImagePlugin")
            _container_formats = tuple(name for name in ("HEIF", "AVIF") if name in Image.OPEN)
        return _container_formats


def _formats_for(source: Path) -> tuple[str, ...]:
    """The formats to try on ``source``: HEIF and AVIF too when it starts as their
    container does (both plugins accept nothing else)."""
    with source.open("rb") as file:
        head = file.read(12)
    if head[4:8] == b"ftyp":
        return FORMATS + container_formats()
    return FORMATS


class Refusal(StrEnum):
    """Why an image cannot make a video; each has its own reply."""

    UNREADABLE = "unreadable"  #: not a raster image we can decode (SVG, PDF, broken)
    TOO_SMALL = "too_small"  #: short side under MIN_SHORT_SIDE
    TOO_LARGE = "too_large"  #: too many pixels to decode (a bomb, or a huge non-JPEG)


class ImageRefused(Exception):
    def __init__(self, refusal: Refusal, detail: str = "") -> None:
        super().__init__(f"{refusal.value}: {detail}" if detail else refusal.value)
        self.refusal = refusal


@dataclass(frozen=True)
class PreparedImage:
    """The JPEG to send, and its size (upright, so width and height are as shown)."""

    data: bytes
    width: int
    height: int
    mime_type: str = "image/jpeg"


def draft_box(width: int, height: int, long_side: int = MAX_LONG_SIDE) -> tuple[int, int]:
    """``width`` × ``height`` scaled down to fit ``long_side``, aspect kept.

    Pillow's JPEG ``draft`` picks the largest reduction that stays at least as big as the
    box it is given on both sides, so it must be given the image's own shape, not a
    square (a panorama asked for 2048×2048 would be decoded at full size).
    """
    if max(width, height) <= long_side:
        return width, height
    scale = long_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def prepare_image(source: Path) -> PreparedImage:
    """``source`` as the video service's JPEG — as sent, its metadata stripped, when it
    already is one (see the module docstring), else decoded and encoded; ImageRefused if
    it cannot make a video."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(source, formats=_formats_for(source)) as image:
                width, height = image.size
                if min(draft_box(width, height)) < MIN_SHORT_SIDE:
                    raise ImageRefused(Refusal.TOO_SMALL, f"{width}x{height}")
                as_sent = _as_sent(image, source)
                return as_sent if as_sent is not None else _prepare(image)
        except ImageRefused:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRefused(Refusal.TOO_LARGE, str(exc)) from exc
        except Exception as exc:  # Pillow's decoders raise many kinds on bad bytes
            raise ImageRefused(Refusal.UNREADABLE, type(exc).__name__) from exc


def _as_sent(image: Image.Image, source: Path) -> PreparedImage | None:
    """``source``'s own JPEG without its metadata when its header shows it is what the
    video service wants, checked to decode whole; None when it must be re-encoded."""
    width, height = image.size
    if not (
        image.format == "JPEG"  # not MPO: its other frames would go along
        and image.mode == "RGB"  # not CMYK, greyscale…
        and max(width, height) <= MAX_LONG_SIDE
        and _upright(image)
        and source.stat().st_size <= LOSSLESS_MAX_FILE_BYTES
    ):
        return None
    stripped = without_metadata(source.read_bytes())
    if stripped is None or len(stripped) > LOSSLESS_MAX_BYTES:
        return None
    # Truncated or corrupt bytes fail here. The full path then decides: it refuses them as
    # it always did, and a picture this stripping did not understand still makes a video.
    try:
        with Image.open(io.BytesIO(stripped), formats=("JPEG",)) as check:
            if (check.format, check.mode, check.size) != ("JPEG", "RGB", (width, height)):
                return None
            # 1/8 scale: every coefficient is still read, but only the DC ones are used.
            check.draft("RGB", (width // 8, height // 8))
            check.load()
    except Exception:  # Pillow's decoders raise many kinds on bad bytes
        return None
    return PreparedImage(stripped, width, height)


def _upright(image: Image.Image) -> bool:
    """No orientation to apply (EXIF's, or XMP's as Pillow folds it in)."""
    try:
        return bool(image.getexif().get(0x0112, 1) == 1)
    except Exception:  # broken EXIF: the full path decides, as it always did
        return False


#: Marker codes (ITU T.81, table B.1) that without_metadata tells apart from the rest.
_EOI, _SOS, _APP0, _APP2, _APP14 = 0xD9, 0xDA, 0xE0, 0xE2, 0xEE
#: Frame headers kept as they are: baseline, extended and progressive Huffman-coded. Any
#: other (lossless, hierarchical, arithmetic-coded: many decoders cannot read those) is
#: re-encoded on the full path.
_FRAMES = frozenset({0xC0, 0xC1, 0xC2})
#: Tables and parameters decoding needs: DHT, DAC, DQT, DNL, DRI.
_TABLES = frozenset({0xC4, 0xCC, 0xDB, 0xDC, 0xDD})
#: Segments that are no part of the picture, dropped: APP0–15 (EXIF with GPS, XMP, IPTC,
#: MPF…) and COM. The APP0, APP2 and APP14 worth keeping are picked from them.
_METADATA = frozenset({*range(0xE0, 0xF0), 0xFE})
#: In entropy-coded data, the end of a scan: 0xFF then anything but a stuffed zero, a
#: restart marker (RST0–7, part of the data) or another 0xFF (fill before a marker).
_END_OF_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def without_metadata(data: bytes) -> bytes | None:
    """``data``'s JPEG with only what decoding needs, its entropy-coded data untouched:
    SOI, the JFIF APP0 (without a thumbnail), an ICC profile (APP2), Adobe's APP14 (its
    colour transform), the frame, tables and scans, and EOI. Gone: EXIF (GPS, the
    camera's serial), XMP, IPTC, comments, MPF and its previews, and whatever follows EOI
    (a motion photo's video). None when the structure is not the one expected (the full
    path then decodes or refuses the file as it would anyway)."""
    if not data.startswith(b"\xff\xd8"):
        return None
    view = memoryview(data)
    kept: list[bytes | memoryview] = [b"\xff\xd8"]
    frames = scans = 0
    position = 2
    while True:
        if data[position : position + 1] != b"\xff":
            return None
        while data[position : position + 1] == b"\xff":  # fill bytes before a marker
            position += 1
        if position + 1 > len(data):
            return None
        marker = data[position]
        position += 1
        if marker == _EOI:
            if not scans:
                return None
            kept.append(b"\xff\xd9")
            return b"".join(kept)
        if position + 2 > len(data):
            return None
        end = position + int.from_bytes(data[position : position + 2], "big")
        if end < position + 2 or end > len(data):
            return None
        start = position + 2  # of the segment's body
        segment: list[bytes | memoryview] = [bytes((0xFF, marker)), view[position:end]]
        position = end
        if marker in _METADATA:
            if marker == _APP0 and data.startswith(b"JFIF\0", start) and end - start >= 14:
                # JFIF's header without its thumbnail (a preview of the picture as it
                # was, maybe before a crop).
                kept += [b"\xff\xe0\x00\x10", view[start : start + 12], b"\x00\x00"]
            elif (marker == _APP2 and data.startswith(b"ICC_PROFILE\0", start)) or (
                marker == _APP14 and data.startswith(b"Adobe", start)
            ):
                kept += segment
        elif marker in _FRAMES:
            frames += 1
            if frames > 1 or end - start < 6 or data[start] != 8:  # one frame, 8-bit
                return None
            kept += segment
        elif marker in _TABLES:
            kept += segment
        elif marker == _SOS and frames:
            scans += 1
            found = _END_OF_SCAN.search(data, position)
            if found is None:  # no EOI: truncated
                return None
            kept += [*segment, view[position : found.start()]]
            position = found.start()
        else:  # a second SOI, a stray RSTn, a scan before its frame, an unknown marker
            return None


def _prepare(image: Image.Image) -> PreparedImage:
    """The full path: decode (at reduced scale when a JPEG allows), resize, rotate,
    flatten, encode."""
    width, height = image.size
    if image.format in ("JPEG", "MPO"):
        # Decoded at 1/2, 1/4 or 1/8 scale straight out of the DCT when that suffices;
        # the short side is kept at MIN_SHORT_SIDE or more.
        box = draft_box(width, height, DRAFT_LONG_SIDE)
        image.draft("RGB", (max(box[0], MIN_SHORT_SIDE), max(box[1], MIN_SHORT_SIDE)))
    target = draft_box(*image.size)
    decoded = image.size[0] * image.size[1]
    if decoded > MAX_DECODED_PIXELS:
        raise ImageRefused(Refusal.TOO_LARGE, f"{image.size[0]}x{image.size[1]} {image.format}")
    icc_profile = image.info.get("icc_profile") if image.mode in ("RGB", "RGBA", "P") else None
    source = image
    image.load()  # the first frame of an animation; truncated bytes raise here
    image = _resizable(image)
    if image.size != target:
        # reducing_gap: a fast box reduction first, then Lanczos over the last ×3.
        image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if image is not source:
        source.close()  # the decoded full-size pixels go now, not when the caller is done
    ImageOps.exif_transpose(image, in_place=True)
    rgb = _flattened(image)
    out = io.BytesIO()
    options = {"icc_profile": icc_profile} if icc_profile else {}
    # No comment: Pillow's JPEG writer would copy the one of the JPEG it decoded.
    rgb.save(out, "JPEG", quality=JPEG_QUALITY, comment=b"", **options)
    return PreparedImage(out.getvalue(), rgb.width, rgb.height)


def _resizable(image: Image.Image) -> Image.Image:
    """A mode that resizes smoothly (palettes resize by nearest neighbour only)."""
    if image.mode in ("P", "PA"):
        return image.convert("RGBA")
    if image.mode == "1":
        return image.convert("L")
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        # 16-bit greyscale: Pillow's plain conversion clips it to white.
        return image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    return image


def _flattened(image: Image.Image) -> Image.Image:
    """RGB, with any transparency laid on white (what a viewer shows)."""
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, "white")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")
