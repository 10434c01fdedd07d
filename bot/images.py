"""A user's image made into what the video service wants: one upright RGB JPEG, small.

Pillow decodes it (HEIC/HEIF through pillow-heif); the EXIF orientation is applied; an
animation gives its first frame; transparency is flattened on white; the long side is
capped at ``MAX_LONG_SIDE`` (a 1080p video cannot use more). Anything that is not a
raster image Pillow can decode — SVG, a PDF renamed ``.jpg``, broken or truncated
bytes, a decompression bomb — and anything too small to make a video from is refused
with :class:`ImageRefused`, whose :class:`Refusal` says which reply the user gets.

Memory: a JPEG is decoded at a reduced scale (``draft``: 1/2, 1/4 or 1/8 straight out
of the DCT) so a 12000×12000 photo costs a 3000×3000 buffer, not a 144-megapixel one;
other formats have no such shortcut, so they are refused above ``MAX_DECODED_PIXELS``
before any pixel is decoded. Everything is resized before it is rotated or converted,
so no second full-size copy is made.

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
import threading
import warnings
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from PIL import Image, ImageOps

__all__ = [
    "DRAFT_LONG_SIDE",
    "MAX_DECODED_PIXELS",
    "MAX_IMAGE_PIXELS",
    "MAX_LONG_SIDE",
    "MIN_SHORT_SIDE",
    "ImageRefused",
    "PreparedImage",
    "Refusal",
    "draft_box",
    "prepare_image",
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
    """Decode ``source`` and return it as the video service's JPEG; ImageRefused if not."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(source, formats=_formats_for(source)) as image:
                return _prepare(image)
        except ImageRefused:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRefused(Refusal.TOO_LARGE, str(exc)) from exc
        except Exception as exc:  # Pillow's decoders raise many kinds on bad bytes
            raise ImageRefused(Refusal.UNREADABLE, type(exc).__name__) from exc


def _prepare(image: Image.Image) -> PreparedImage:
    width, height = image.size
    if min(draft_box(width, height)) < MIN_SHORT_SIDE:
        raise ImageRefused(Refusal.TOO_SMALL, f"{width}x{height}")
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
    rgb.save(out, "JPEG", quality=JPEG_QUALITY, **options)
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
