"""Preparing one image for the video service: every kind users send, built here with Pillow."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pillow_heif
import pytest
from PIL import Image

from bot import images
from bot.images import (
    DRAFT_LONG_SIDE,
    MAX_DECODED_PIXELS,
    MAX_IMAGE_PIXELS,
    MAX_LONG_SIDE,
    MIN_SHORT_SIDE,
    ImageRefused,
    Refusal,
    draft_box,
    prepare_image,
)

RED = (220, 20, 20)
BLUE = (20, 20, 220)
#: EXIF Orientation 6: the camera was turned; viewers rotate the picture 90° clockwise.
ROTATE_CLOCKWISE = 6
REPO = Path(__file__).resolve().parent.parent


def two_halves(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """Left half red, right half blue: where the colours end up shows the orientation."""
    image = Image.new(mode, (width, height), RED)
    image.paste(BLUE, (width // 2, 0, width, height))
    return image


def write(path: Path, image: Image.Image, image_format: str, **options: object) -> Path:
    if image_format == "HEIF":
        images.container_formats()  # pillow-heif's saver comes with the bot's HEIF reader
    image.save(path, image_format, **options)
    return path


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def near(pixel: object, colour: tuple[int, int, int]) -> bool:
    """A pixel read back from a JPEG is within a few levels of ``colour``."""
    values = pixel if isinstance(pixel, tuple) else (pixel,) * 3
    return all(abs(a - b) <= 12 for a, b in zip(values, colour, strict=False))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` × ``height`` and carries almost no data: what a
    decompression bomb looks like until someone decodes it."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_a_huge_jpeg_is_decoded_at_reduced_scale_and_capped(tmp_path, monkeypatch):
    seen: list[tuple[int, int]] = []
    original = Image.Image.resize

    def spy(self, size, *args, **kwargs):  # the decoded size, before the resize
        seen.append(self.size)
        return original(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    source = write(tmp_path / "big.jpg", two_halves(9000, 6000), "JPEG", quality=85)
    prepared = prepare_image(source)
    assert (prepared.width, prepared.height) == (MAX_LONG_SIDE, 1365)
    out = opened(prepared.data)
    assert (out.format, out.mode, out.size) == ("JPEG", "RGB", (2048, 1365))
    # draft() decoded it at 1/4 scale (2250 × 1500), never at 54 megapixels.
    assert seen == [(2250, 1500)]
    assert near(out.getpixel((10, 10)), RED)
    assert near(out.getpixel((2040, 10)), BLUE)


def test_a_jpeg_whose_eighth_is_long_enough_is_decoded_at_an_eighth(tmp_path, monkeypatch):
    """12000 px: 1/8 gives 1500 px (at least DRAFT_LONG_SIDE), 9 MB of pixels instead of
    the 36 MB of 1/4; it is sent at 1500 px rather than enlarged."""
    resized: list[tuple[int, int]] = []
    original = Image.Image.resize

    def spy(self, size, *args, **kwargs):
        resized.append(size)
        return original(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    source = write(tmp_path / "huge.jpg", Image.new("RGB", (12000, 9000), RED), "JPEG")
    prepared = prepare_image(source)
    assert (prepared.width, prepared.height) == (1500, 1125)
    assert DRAFT_LONG_SIDE <= 1500 < MAX_LONG_SIDE
    assert resized == []  # nothing to scale: the decoder did it


def test_a_panorama_is_drafted_for_its_own_shape_not_a_square():
    assert draft_box(12000, 3000) == (2048, 512)
    assert draft_box(1000, 800) == (1000, 800)  # small ones are left as they are
    assert draft_box(3000, 12000) == (512, 2048)


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP", "HEIF"])
def test_the_exif_orientation_is_applied(tmp_path, image_format):
    exif = Image.Exif()
    exif[0x0112] = ROTATE_CLOCKWISE
    source = write(
        tmp_path / f"turned.{image_format.lower()}",
        two_halves(400, 200),
        image_format,
        exif=exif.tobytes(),
    )
    out = opened(prepare_image(source).data)
    # Stored 400 × 200, left red: shown upright it is 200 × 400, red on top.
    assert out.size == (200, 400)
    assert near(out.getpixel((100, 20)), RED)
    assert near(out.getpixel((100, 380)), BLUE)
    assert out.getexif().get(0x0112) is None  # no orientation left to apply twice


#: A fresh bot process: the codecs' modules loaded after start-up, after a JPEG, after
#: a HEIC (the images written by the test beforehand).
_LOADED_ON_DEMAND = """
import json, sys
from pathlib import Path
import bot.__main__
from bot.images import prepare_image
codecs = ("pillow_heif", "PIL.AvifImagePlugin")
def loaded():
    return [name for name in codecs if name in sys.modules]
seen = {"start": loaded()}
seen["jpeg"] = prepare_image(Path(sys.argv[1])).width, loaded()
seen["heic"] = prepare_image(Path(sys.argv[2])).width, loaded()
print(json.dumps(seen))
"""


def test_heif_and_avif_codecs_are_loaded_by_the_first_image_that_needs_them(tmp_path):
    """libheif and libavif (8 MB of RSS with Pillow's other plugins) are not in a bot
    that has seen only JPEGs; the first HEIC loads them and is decoded."""
    jpeg = write(tmp_path / "photo.jpg", two_halves(640, 480), "JPEG")
    heic = write(tmp_path / "photo.heic", two_halves(800, 600), "HEIF", quality=90)
    result = subprocess.run(
        [sys.executable, "-c", _LOADED_ON_DEMAND, str(jpeg), str(heic)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "start": [],
        "jpeg": [640, []],
        "heic": [800, ["pillow_heif", "PIL.AvifImagePlugin"]],
    }


def test_heic_is_decoded(tmp_path):
    assert pillow_heif.libheif_info()["decoders"]  # the wheel's own decoder
    source = write(tmp_path / "photo.heic", two_halves(640, 480), "HEIF", quality=90)
    prepared = prepare_image(source)
    out = opened(prepared.data)
    assert (out.format, out.size, prepared.mime_type) == ("JPEG", (640, 480), "image/jpeg")
    assert near(out.getpixel((5, 5)), RED)


@pytest.mark.parametrize("image_format", ["GIF", "WEBP", "PNG"])
def test_an_animation_gives_its_first_frame(tmp_path, image_format):
    frames = [Image.new("RGB", (300, 300), colour) for colour in (RED, BLUE, (20, 200, 20))]
    source = tmp_path / f"moving.{image_format.lower()}"
    frames[0].save(source, image_format, save_all=True, append_images=frames[1:], duration=100)
    with Image.open(source) as check:
        assert getattr(check, "n_frames", 1) == 3  # really animated (APNG for PNG)
    out = opened(prepare_image(source).data)
    assert out.size == (300, 300)
    assert near(out.getpixel((150, 150)), RED)


def test_transparency_is_flattened_on_white(tmp_path):
    image = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    image.paste((20, 20, 220, 255), (0, 0, 150, 300))
    out = opened(prepare_image(write(tmp_path / "cut-out.png", image, "PNG")).data)
    assert out.mode == "RGB"
    assert near(out.getpixel((250, 150)), (255, 255, 255))
    assert near(out.getpixel((50, 150)), BLUE)


def test_a_palette_image_with_transparency_is_flattened_too(tmp_path):
    image = two_halves(300, 300).convert("P")
    source = write(tmp_path / "palette.gif", image, "GIF", transparency=0)
    out = opened(prepare_image(source).data)
    assert out.mode == "RGB"


def test_sixteen_bit_greyscale_is_not_clipped_to_white(tmp_path):
    image = Image.new("I;16", (300, 300), 128 * 256)
    out = opened(prepare_image(write(tmp_path / "deep.png", image, "PNG")).data)
    assert near(out.getpixel((5, 5)), (128, 128, 128))


def test_cmyk_becomes_rgb(tmp_path):
    source = write(tmp_path / "print.jpg", Image.new("CMYK", (300, 300), (0, 0, 0, 0)), "JPEG")
    out = opened(prepare_image(source).data)
    assert out.mode == "RGB"
    assert near(out.getpixel((5, 5)), (255, 255, 255))


@pytest.mark.parametrize(
    ("size", "refused"),
    [((1, 1), True), ((127, 500), True), ((128, 128), False), ((20000, 1000), True)],
    ids=["1x1", "narrow", "just-enough", "sliver-of-panorama"],
)
def test_images_too_small_for_a_video_are_refused(tmp_path, size, refused):
    source = write(tmp_path / "small.png", Image.new("RGB", size, RED), "PNG")
    if refused:
        with pytest.raises(ImageRefused) as caught:
            prepare_image(source)
        assert caught.value.refusal is Refusal.TOO_SMALL
    else:
        assert min(opened(prepare_image(source).data).size) >= MIN_SHORT_SIDE


@pytest.mark.parametrize(
    "content",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg" width="800" height="600"><rect/></svg>',
        b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n%%EOF\n",
        b"",
        b"\xff\xd8\xff\xe0 not really a jpeg",
    ],
    ids=["svg", "pdf-renamed-jpg", "empty", "jpeg-magic-only"],
)
def test_what_is_not_a_raster_image_is_refused(tmp_path, content):
    source = tmp_path / "photo.jpg"
    source.write_bytes(content)
    with pytest.raises(ImageRefused) as caught:
        prepare_image(source)
    assert caught.value.refusal is Refusal.UNREADABLE


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_a_truncated_file_is_refused(tmp_path, image_format):
    whole = write(tmp_path / "whole", two_halves(800, 600), image_format)
    cut = tmp_path / "cut"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ImageRefused) as caught:
        prepare_image(cut)
    assert caught.value.refusal is Refusal.UNREADABLE


@pytest.mark.parametrize(
    "pixels",
    [MAX_IMAGE_PIXELS + 10_000, 2 * MAX_IMAGE_PIXELS + 10_000],
    ids=["bomb-warning", "bomb-error"],
)
def test_a_decompression_bomb_is_refused_before_decoding(tmp_path, pixels):
    side = int(pixels**0.5) + 1
    source = tmp_path / "bomb.png"
    source.write_bytes(png_header_only(side, side))
    with pytest.raises(ImageRefused) as caught:
        prepare_image(source)
    assert caught.value.refusal is Refusal.TOO_LARGE


def test_a_huge_image_without_reduced_decoding_is_refused_before_decoding(tmp_path):
    """A PNG has no draft(): 30 megapixels would be decoded whole, so it is refused from
    its header (the bytes here could not even be decoded)."""
    width, height = 6000, MAX_DECODED_PIXELS // 6000 + 100
    source = tmp_path / "huge.png"
    source.write_bytes(png_header_only(width, height))
    with pytest.raises(ImageRefused) as caught:
        prepare_image(source)
    assert caught.value.refusal is Refusal.TOO_LARGE


def test_formats_outside_the_list_are_not_even_tried(tmp_path):
    source = write(tmp_path / "image.ico", Image.new("RGB", (256, 256), RED), "ICO")
    assert "ICO" not in images.FORMATS
    with pytest.raises(ImageRefused) as caught:
        prepare_image(source)
    assert caught.value.refusal is Refusal.UNREADABLE
