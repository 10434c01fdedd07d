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
from PIL import Image, ImageCms, JpegImagePlugin, TiffImagePlugin

from bot import images
from bot.images import (
    DRAFT_LONG_SIDE,
    LOSSLESS_MAX_BYTES,
    LOSSLESS_MAX_FILE_BYTES,
    MAX_DECODED_PIXELS,
    MAX_IMAGE_PIXELS,
    MAX_LONG_SIDE,
    MIN_SHORT_SIDE,
    ImageRefused,
    Refusal,
    draft_box,
    prepare_image,
    without_metadata,
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


def noisy(width: int, height: int) -> Image.Image:
    """Red and blue halves under noise like a camera's: entropy-coded data full of
    stuffed 0xFF bytes, as a photo's is."""
    noise = Image.merge("RGB", [Image.effect_noise((width, height), 40)] * 3)
    return Image.blend(two_halves(width, height), noise, 0.35)


def segments(jpeg: bytes) -> list[tuple[int, bytes]]:
    """Each segment before the first scan as (marker, body): a plain walk by lengths."""
    found: list[tuple[int, bytes]] = []
    position = 2
    while jpeg[position + 1] != 0xDA:
        length = int.from_bytes(jpeg[position + 2 : position + 4], "big")
        found.append((jpeg[position + 1], jpeg[position + 4 : position + 2 + length]))
        position += 2 + length
    return found


def scans(jpeg: bytes) -> bytes:
    """From the first SOS on: the scans with their entropy-coded data (and the tables
    between progressive scans), EOI, and whatever follows it."""
    return jpeg[2 + sum(4 + len(body) for _, body in segments(jpeg)) :]


def with_segments(jpeg: bytes, *added: tuple[int, bytes]) -> bytes:
    """``jpeg`` with these (marker, body) segments right after its SOI."""
    return (
        jpeg[:2]
        + b"".join(
            bytes((0xFF, marker)) + (len(body) + 2).to_bytes(2, "big") + body
            for marker, body in added
        )
        + jpeg[2:]
    )


#: Photoshop's APP14: version 100, no flags, colour transform 1 (YCbCr).
ADOBE = b"Adobe\x00\x64\x00\x00\x00\x00\x01"
#: What a motion photo appends after the picture's EOI: its video.
TRAILER = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8


def mpf_index() -> bytes:
    """An MPF APP2 body (CIPA DC-007) for one picture, as Pillow's MPO writer makes it;
    phones write one beside a photo's previews."""
    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    ifd[0xB000] = b"0100"
    ifd[0xB001] = 1
    ifd[0xB002] = struct.pack("<LLLHH", 0x030000, 0, 0, 0, 0)  # baseline MP primary image
    return b"MPF\x00II*\x00" + (8).to_bytes(4, "little") + ifd.tobytes(8)


def exif_with_gps() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0110] = "Pixel 9"  # Model
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (51.0, 30.0, 15.0)  # where the user lives
    return exif


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


@pytest.mark.parametrize(
    "options",
    [{}, {"progressive": True}, {"restart_marker_rows": 1}, {"subsampling": 0}],
    ids=["baseline", "progressive", "restart-markers", "4:4:4"],
)
def test_a_plain_rgb_jpeg_goes_as_sent_byte_for_byte(tmp_path, options):
    """No decode and encode again: the scans are the user's own bytes, so the pixels are
    exactly the user's and no quality is lost a second time."""
    source = write(tmp_path / "photo.jpg", noisy(800, 600), "JPEG", quality=87, **options)
    sent = source.read_bytes()
    prepared = prepare_image(source)
    assert (prepared.width, prepared.height, prepared.mime_type) == (800, 600, "image/jpeg")
    assert scans(prepared.data) == scans(sent)
    assert opened(prepared.data).tobytes() == opened(sent).tobytes()
    markers = [marker for marker, _ in segments(prepared.data)]
    assert (0xC2 in markers) == ("progressive" in options)  # SOF2
    assert (0xDD in markers) == ("restart_marker_rows" in options)  # DRI
    if "progressive" in options:
        assert scans(sent).count(b"\xff\xda") > 1  # several scans, tables between them
    if "restart_marker_rows" in options:
        assert b"\xff\xd0" in scans(sent)  # RST0 inside the entropy-coded data


def test_metadata_is_cut_out_and_the_colour_information_kept(tmp_path):
    """EXIF (with GPS), XMP, a comment, IPTC, MPF, JFIF's thumbnail and a motion photo's
    video go; the ICC profile and Adobe's colour transform stay, so the colours do."""
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    jpeg = write(
        tmp_path / "made.jpg",
        noisy(640, 480),
        "JPEG",
        quality=87,
        exif=exif_with_gps(),
        xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>',
        comment="shot at home",
        icc_profile=icc,
    ).read_bytes()
    (first, jfif), *_ = segments(jpeg)
    assert first == 0xE0
    jfif_with_thumbnail = jfif[:12] + b"\x02\x02" + bytes(12)  # a 2 × 2 RGB preview
    sent = (
        with_segments(
            jpeg[:2] + jpeg[6 + len(jfif) :],  # Pillow's APP0 replaced by one with a thumbnail
            (0xE0, jfif_with_thumbnail),
            (0xEE, ADOBE),
            (0xE2, mpf_index()),
            (0xED, b"Photoshop 3.0\x008BIM\x04\x04" + bytes(12)),
        )
        + TRAILER
    )
    assert segments(sent)[0] == (0xE0, jfif_with_thumbnail)
    source = tmp_path / "sent.jpg"
    source.write_bytes(sent)

    prepared = prepare_image(source)
    assert scans(prepared.data) + TRAILER == scans(sent)  # the video after EOI is gone
    kept = segments(prepared.data)
    assert sorted(m for m, _ in kept if m >= 0xE0) == [0xE0, 0xE2, 0xEE]  # no APP1, APP13
    assert 0xFE not in [m for m, _ in kept]  # COM
    assert (0xE0, jfif[:12] + b"\x00\x00") in kept  # JFIF without its thumbnail
    assert (0xEE, ADOBE) in kept
    assert [body[:12] for m, body in kept if m == 0xE2] == [b"ICC_PROFILE\x00"]
    for secret in (b"Pixel 9", b"xmpmeta", b"shot at home", b"Photoshop", b"MPF", b"ftyp"):
        assert secret not in prepared.data
    out = opened(prepared.data)
    assert out.info["icc_profile"] == icc
    assert out.info["adobe_transform"] == 1
    assert not {"exif", "xmp", "comment"} & set(out.info)
    assert len(out.getexif()) == 0
    assert out.tobytes() == opened(sent).tobytes()


@pytest.mark.parametrize("image_format", ["JPEG", "GIF"])
def test_an_image_encoded_anew_carries_no_metadata_either(tmp_path, image_format):
    """Pillow's JPEG writer would copy the source's comment; EXIF and XMP it drops."""
    exif = exif_with_gps()
    exif[0x0112] = ROTATE_CLOCKWISE  # so a JPEG takes the full path
    options: dict[str, object] = {"comment": "shot at home"}
    if image_format == "JPEG":
        options.update(
            exif=exif, xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
        )
    source = write(tmp_path / "sent", two_halves(400, 200), image_format, **options)
    with Image.open(source) as sent:
        assert sent.info["comment"] == b"shot at home"
    prepared = prepare_image(source)
    for secret in (b"shot at home", b"Pixel 9", b"Exif", b"xmpmeta"):
        assert secret not in prepared.data
    assert 0xFE not in [marker for marker, _ in segments(prepared.data)]


def turned_by_xmp(path: Path) -> Path:
    """Orientation 6 in XMP only, as some editors write it (Pillow reads it too)."""
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description '
        b'tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
    )
    return write(path, noisy(400, 200), "JPEG", xmp=xmp)


def two_frames(path: Path) -> Path:
    """An MPO (a 3D camera's pair, a phone's depth map): its other frames must not go."""
    frames = [noisy(400, 300), Image.new("RGB", (400, 300), BLUE)]
    frames[0].save(path, "MPO", save_all=True, append_images=frames[1:])
    return path


def over_the_size_cap(path: Path) -> Path:
    """Saved at quality 100: ≤ 2048 px, yet more than LOSSLESS_MAX_BYTES."""
    noise = Image.merge("RGB", [Image.effect_noise((1200, 1200), 80) for _ in range(3)])
    write(path, noise, "JPEG", quality=100)
    assert LOSSLESS_MAX_BYTES < path.stat().st_size < LOSSLESS_MAX_FILE_BYTES
    return path


def with_a_big_video(path: Path) -> Path:
    """A motion photo whose file is past LOSSLESS_MAX_FILE_BYTES: not read whole."""
    write(path, noisy(400, 300), "JPEG")
    path.write_bytes(path.read_bytes() + TRAILER * (LOSSLESS_MAX_FILE_BYTES // len(TRAILER)))
    assert path.stat().st_size > LOSSLESS_MAX_FILE_BYTES
    return path


def with_a_stray_restart_marker(path: Path) -> Path:
    """RST0 between header segments: libjpeg skips it, the lossless walk does not expect it."""
    write(path, noisy(400, 300), "JPEG")
    jpeg = path.read_bytes()
    path.write_bytes(jpeg[:2] + b"\xff\xd0" + jpeg[2:])
    return path


def tables(image: Image.Image) -> dict[int, list[int]]:
    """A JPEG's quantization tables: its quality made them."""
    assert isinstance(image, JpegImagePlugin.JpegImageFile)
    return image.quantization


def _quality_90() -> dict[int, list[int]]:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "JPEG", quality=images.JPEG_QUALITY)
    return tables(opened(out.getvalue()))


#: The quantization tables of a JPEG the full path encoded.
QUALITY_90 = _quality_90()


@pytest.mark.parametrize(
    ("make", "size"),
    [
        (turned_by_xmp, (200, 400)),
        (lambda path: write(path, Image.new("CMYK", (300, 300), (0, 90, 90, 0)), "JPEG"), None),
        (lambda path: write(path, noisy(300, 300).convert("L"), "JPEG"), None),
        (lambda path: write(path, noisy(2400, 1200), "JPEG", quality=87), (2048, 1024)),
        (two_frames, None),
        (over_the_size_cap, None),
        (with_a_big_video, None),
        (with_a_stray_restart_marker, None),
    ],
    ids=[
        "xmp-orientation-6",
        "cmyk",
        "greyscale",
        "longer-than-2048",
        "mpo",
        "over-the-size-cap",
        "file-over-the-read-cap",
        "unexpected-marker",
    ],
)
def test_what_is_not_already_what_segmind_wants_is_re_encoded(tmp_path, make, size):
    source = make(tmp_path / "sent.jpg")
    with Image.open(source) as original:
        expected = size or original.size
        assert tables(original) != QUALITY_90  # so the tables tell an encode apart
    prepared = prepare_image(source)
    out = opened(prepared.data)
    assert (out.format, out.mode, out.size) == ("JPEG", "RGB", expected)
    assert (prepared.width, prepared.height) == expected
    assert tables(out) == QUALITY_90  # encoded anew at JPEG_QUALITY
    assert len(prepared.data) < LOSSLESS_MAX_BYTES
    assert b"ftyp" not in prepared.data


def test_a_cut_or_broken_jpeg_is_refused_whichever_path_it_takes(tmp_path):
    """Cut in its scan, it has no EOI: the walk gives up and the full decode refuses it.
    A scan naming a component its frame lacks passes the walk (which reads no scan
    header): the check decode of the lossless path refuses it."""
    jpeg = write(tmp_path / "whole.jpg", noisy(800, 600), "JPEG").read_bytes()
    scan = len(jpeg) - len(scans(jpeg))
    cut = jpeg[: len(jpeg) // 2]
    unknown_component = jpeg[: scan + 5] + b"\x09" + jpeg[scan + 6 :]
    assert without_metadata(cut) is None
    assert without_metadata(unknown_component) is not None
    for broken in (cut, unknown_component):
        source = tmp_path / "broken.jpg"
        source.write_bytes(broken)
        with pytest.raises(ImageRefused) as caught:
            prepare_image(source)
        assert caught.value.refusal is Refusal.UNREADABLE


def prepared_or_refusal(source: Path) -> images.PreparedImage | Refusal:
    try:
        return prepare_image(source)
    except ImageRefused as exc:
        return exc.refusal


def test_segment_lengths_that_lie_fall_back_or_are_refused_never_crash(tmp_path):
    """Each segment's length made 0, 1, 2, one short, one or three too long, or 65535:
    the walk returns bytes or None, never raises; the user gets a JPEG or a refusal."""
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    jpeg = write(
        tmp_path / "photo.jpg",
        noisy(256, 256),
        "JPEG",
        exif=exif_with_gps(),
        comment="hi",
        icc_profile=icc,
    ).read_bytes()
    outcomes: set[str] = set()
    position = 2
    for marker in [*(marker for marker, _ in segments(jpeg)), 0xDA]:
        true_length = int.from_bytes(jpeg[position + 2 : position + 4], "big")
        for length in (0, 1, 2, true_length - 1, true_length + 1, true_length + 3, 0xFFFF):
            lying = jpeg[: position + 2] + length.to_bytes(2, "big") + jpeg[position + 4 :]
            walked = without_metadata(lying)
            source = tmp_path / "lying.jpg"
            source.write_bytes(lying)
            case = f"{marker:#x} says {length}, is {true_length}"
            prepared = prepared_or_refusal(source)
            if isinstance(prepared, Refusal):
                assert prepared is Refusal.UNREADABLE, case
                outcomes.add("refused")
            else:
                out = opened(prepared.data)
                assert (out.format, out.mode, out.size) == ("JPEG", "RGB", (256, 256)), case
                outcomes.add("as sent" if prepared.data == walked else "re-encoded")
        position += 2 + true_length
    assert outcomes == {"refused", "re-encoded"}  # a lie is never sent on as it is


def test_fill_bytes_before_a_marker_are_no_marker(tmp_path):
    """Any marker may follow 0xFF fill bytes (T.81 B.1.1.2), in the header or after a
    scan's data: the walk skips them and keeps the same picture."""
    jpeg = write(tmp_path / "photo.jpg", noisy(300, 300), "JPEG").read_bytes()
    header = len(jpeg) - len(scans(jpeg))
    filled = jpeg[:2] + b"\xff\xff" + jpeg[2:header] + b"\xff" + jpeg[header:-2] + b"\xff\xff\xd9"
    (tmp_path / "filled.jpg").write_bytes(filled)
    stripped = without_metadata(filled)
    assert stripped is not None
    assert opened(stripped).tobytes() == opened(jpeg).tobytes()
    assert prepare_image(tmp_path / "filled.jpg").data == stripped


def test_a_jpeg_the_stripping_gets_wrong_still_makes_a_video(tmp_path, monkeypatch):
    """Should the walk ever return bytes that do not decode (a segment it wrongly thought
    it could drop), the picture is not refused: the full path decodes the file itself.
    (Stood in for by a walk that drops the quantization tables: no real JPEG is known to
    make it go wrong, which is why the walk must be replaced to show it.)"""
    source = write(tmp_path / "photo.jpg", noisy(400, 300), "JPEG", quality=87)
    strip = images.without_metadata

    def without_quantization_tables(data: bytes) -> bytes | None:
        stripped = strip(data)
        assert stripped is not None
        kept = b"".join(
            b"\xff" + bytes([marker]) + (len(body) + 2).to_bytes(2, "big") + body
            for marker, body in segments(stripped)
            if marker != 0xDB  # DQT
        )
        return stripped[:2] + kept + scans(stripped)

    monkeypatch.setattr(images, "without_metadata", without_quantization_tables)
    prepared = prepare_image(source)
    assert (prepared.width, prepared.height) == (400, 300)
    assert scans(prepared.data) != scans(source.read_bytes())  # encoded anew
    original = opened(source.read_bytes()).getpixel((20, 150))
    assert isinstance(original, tuple)
    assert near(opened(prepared.data).getpixel((20, 150)), (original[0], original[1], original[2]))
