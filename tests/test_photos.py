"""Odd images end to end: the real bot, PTB and SQLite against the fakes. What the user
reads, and what reached Segmind (size, type, orientation) — or that nothing did."""

from __future__ import annotations

import io
import os
import pathlib
import subprocess
import sys
import threading
from types import SimpleNamespace

import httpx
import pytest
from PIL import Image, ImageCms

from bot.core.errors import PhotoUnavailable
from bot.i18n import texts
from bot.images import container_formats
from bot.telegram import photos as photos_module
from bot.telegram.photos import Photos
from tests.conftest import ledger, running, settled
from tests.fakes.telegram import _padded_picture
from tests.test_images import TRAILER, exif_with_gps, noisy, scans, segments
from tests.test_private_flow import button_data, reply_target, send_photo_get_keyboard

USER = 601
RED = (220, 20, 20)
BLUE = (20, 20, 220)
LANG = texts.FALLBACK_LANGUAGE


def encoded(image: Image.Image, image_format: str, **options: object) -> bytes:
    if image_format == "HEIF":
        container_formats()  # pillow-heif's saver comes with the bot's HEIF reader
    out = io.BytesIO()
    image.save(out, image_format, **options)
    return out.getvalue()


def turned_jpeg() -> bytes:
    """Stored 600 × 300 with red on the left and EXIF orientation 6 (rotate clockwise):
    upright it is 300 × 600, red on top."""
    image = Image.new("RGB", (600, 300), RED)
    image.paste(BLUE, (300, 0, 600, 300))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(image, "JPEG", exif=exif.tobytes())


def turned(jpeg: bytes) -> bytes:
    """``jpeg`` with EXIF orientation 6, as a phone's camera file has it."""
    exif = Image.Exif()
    exif[0x0112] = 6
    app1 = exif.tobytes()
    return jpeg[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + jpeg[2:]


def uploaded_bytes(segmind) -> bytes:
    """The one image the bot re-hosted at the fake Segmind, as Segmind got it."""
    (submit,) = segmind.submits
    asset = segmind.assets[submit["image_url"].rsplit("/", 1)[-1]]
    assert asset.content_type == "image/jpeg"
    return asset.data


def uploaded_image(segmind) -> Image.Image:
    """The one image the bot re-hosted at the fake Segmind, decoded."""
    image = Image.open(io.BytesIO(uploaded_bytes(segmind)))
    image.load()
    return image


def near(pixel: object, colour: tuple[int, int, int]) -> bool:
    """A pixel read back from a JPEG is within a few levels of ``colour``."""
    values = pixel if isinstance(pixel, tuple) else (pixel,) * 3
    return all(abs(a - b) <= 12 for a, b in zip(values, colour, strict=False))


async def keyboard_for(telegram, message: dict) -> dict:
    calls = await telegram.wait_for_call(
        "sendMessage",
        chat_id=USER,
        where=lambda c: (
            "reply_markup" in c.params and reply_target(c.params) == message["message_id"]
        ),
    )
    return calls[-1].response["result"]


async def generate(telegram, keyboard: dict) -> None:
    telegram.press_button(USER, USER, keyboard["message_id"], button_data(keyboard, "Generate"))
    await telegram.wait_for_call("sendVideo", chat_id=USER)


async def refusal_for(telegram, message: dict) -> str:
    (call,) = await telegram.wait_for_call("sendMessage", chat_id=USER)
    assert reply_target(call.params) == message["message_id"]
    assert "reply_markup" not in call.params
    return str(call.params["text"])


async def test_a_rotated_photo_file_reaches_segmind_upright(telegram, segmind, bot):
    telegram.private_chat(USER)
    document = telegram.send_document(
        USER, USER, mime_type="image/jpeg", file_name="turned.jpg", data=turned_jpeg()
    )
    await generate(telegram, await keyboard_for(telegram, document))
    image = uploaded_image(segmind)
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (300, 600))
    assert near(image.getpixel((150, 50)), RED)
    assert near(image.getpixel((150, 550)), BLUE)
    assert image.getexif().get(0x0112) is None


@pytest.mark.parametrize(
    ("mime_type", "file_name", "content"),
    [
        (
            "image/heic",
            "IMG_0001.HEIC",
            lambda: encoded(Image.new("RGB", (800, 600), RED), "HEIF"),
        ),
        (
            "image/gif",
            "moving.gif",
            lambda: encoded(
                Image.new("RGB", (400, 400), RED),
                "GIF",
                save_all=True,
                append_images=[Image.new("RGB", (400, 400), BLUE)],
            ),
        ),
        (
            "image/webp",
            "moving.webp",
            lambda: encoded(
                Image.new("RGB", (400, 400), RED),
                "WEBP",
                save_all=True,
                append_images=[Image.new("RGB", (400, 400), BLUE)],
            ),
        ),
        (
            "image/jpeg",
            "big.jpg",
            lambda: encoded(Image.new("RGB", (6000, 4500), RED), "JPEG"),
        ),
    ],
    ids=["heic", "animated-gif", "animated-webp", "6000x4500-jpeg"],
)
async def test_images_sent_as_files_reach_segmind_as_one_small_rgb_jpeg(
    telegram, segmind, bot, mime_type, file_name, content
):
    telegram.private_chat(USER)
    document = telegram.send_document(
        USER, USER, mime_type=mime_type, file_name=file_name, data=content()
    )
    await generate(telegram, await keyboard_for(telegram, document))
    image = uploaded_image(segmind)
    assert (image.format, image.mode) == ("JPEG", "RGB")
    assert max(image.size) <= 2048
    assert near(image.getpixel((image.width // 2, image.height // 2)), RED)  # first frame


@pytest.mark.parametrize(
    ("send", "reply"),
    [
        (
            lambda t: t.send_photo(USER, USER, width=100, height=80),
            texts.image_too_small(LANG),
        ),
        (
            lambda t: t.send_document(
                USER,
                USER,
                mime_type="image/png",
                file_name="dot.png",
                data=encoded(Image.new("RGB", (1, 1)), "PNG"),
            ),
            texts.image_too_small(LANG),
        ),
        (
            lambda t: t.send_document(
                USER,
                USER,
                mime_type="image/svg+xml",
                file_name="logo.svg",
                data=b'<svg xmlns="http://www.w3.org/2000/svg" width="900" height="900"/>',
            ),
            texts.image_unreadable(LANG),
        ),
        (
            lambda t: t.send_document(
                USER,
                USER,
                mime_type="image/jpeg",
                file_name="scan.jpg",
                data=b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n%%EOF\n",
            ),
            texts.image_unreadable(LANG),
        ),
        (
            lambda t: t.send_document(
                USER,
                USER,
                mime_type="image/jpeg",
                file_name="cut.jpg",
                data=turned_jpeg()[:900],
            ),
            texts.image_unreadable(LANG),
        ),
    ],
    ids=["tiny-photo", "1x1-file", "svg-file", "pdf-renamed-jpg", "truncated-jpeg"],
)
async def test_images_that_cannot_make_a_video_get_a_reply_and_nothing_else(
    telegram, segmind, bot, database, send, reply
):
    telegram.private_chat(USER)
    message = send(telegram)
    assert await refusal_for(telegram, message) == reply
    await settled(bot, telegram)
    assert ledger(database) == []  # no draft, so no keyboard, invoice or job
    assert (segmind.uploads, segmind.submits) == ([], [])


async def test_a_tiny_photo_is_refused_from_its_size_without_a_download(telegram, segmind, bot):
    telegram.private_chat(USER)
    photo = telegram.send_photo(USER, USER, width=120, height=90)
    assert await refusal_for(telegram, photo) == texts.image_too_small(LANG)
    assert telegram.calls_of("getFile") == []


async def test_with_prices_an_unusable_image_gets_no_invoice(
    telegram, segmind, make_settings, database
):
    telegram.private_chat(USER)
    async with running(make_settings(PRICE_STARS="50")) as application:
        svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="900" height="900"/>'
        document = telegram.send_document(
            USER, USER, mime_type="image/svg+xml", file_name="a.svg", data=svg
        )
        assert await refusal_for(telegram, document) == texts.image_unreadable(LANG)
        await settled(application, telegram)
    assert telegram.calls_of("sendInvoice") == []
    assert telegram.payments == []
    assert ledger(database) == []


async def test_a_photo_is_downloaded_and_prepared_once_per_file_whatever_happens_next(
    telegram, segmind, bot, database
):
    """A file is prepared when it arrives; Generate, a refused submit and Try again all
    reuse that JPEG: one download, one decode, the same bytes at Segmind each time."""
    telegram.private_chat(USER)
    segmind.fail_next_submit(429, retry_after=1)
    document = telegram.send_document(
        USER, USER, mime_type="image/jpeg", file_name="turned.jpg", data=turned_jpeg()
    )
    keyboard = await keyboard_for(telegram, document)
    telegram.press_button(USER, USER, keyboard["message_id"], button_data(keyboard, "Generate"))
    (notice,) = await telegram.wait_for_call(
        "sendMessage", chat_id=USER, where=lambda c: "Try again" in str(c.params)
    )
    message = notice.response["result"]
    telegram.press_button(USER, USER, message["message_id"], button_data(message, "Try again"))
    await telegram.wait_for_call("sendVideo", chat_id=USER)
    await settled(bot, telegram)
    assert [job["state"] for job in ledger(database)] == ["rejected", "delivered"]
    assert len(telegram.downloads) == 1
    assert bot.bot_data["runtime"].photos.prepared_count == 1
    assert len(set(segmind.uploads)) == 1  # the same prepared JPEG both times


async def test_a_photo_is_prepared_when_its_job_starts(telegram, segmind, bot):
    """And goes to Segmind as Telegram gave it: the same scans byte for byte (no decode,
    no second JPEG loss), without the comments the fake pads its photos with."""
    telegram.private_chat(USER)
    photo, keyboard = await send_photo_get_keyboard(
        telegram, USER, USER, width=1280, height=1707, size_bytes=120_000
    )
    assert telegram.calls_of("getFile") == []  # a photo's size is known from the update
    await generate(telegram, keyboard)
    image = uploaded_image(segmind)
    assert (image.format, image.size) == ("JPEG", (1280, 1707))
    sent = telegram.file_data(photo["photo"][-1]["file_id"])
    uploaded = uploaded_bytes(segmind)
    assert scans(uploaded) == scans(sent)
    comments = [body for marker, body in segments(sent) if marker == 0xFE]
    assert comments
    assert 0xFE not in [marker for marker, _ in segments(uploaded)]
    assert len(uploaded) == len(sent) - sum(4 + len(body) for body in comments)


async def test_a_photo_file_reaches_segmind_as_sent_without_its_metadata(telegram, segmind, bot):
    """A camera's JPEG sent as a file: its GPS position, XMP, comment and appended video
    never reach Segmind; its pixels and colour profile do, exactly."""
    image = noisy(1200, 900)
    out = io.BytesIO()
    image.save(
        out,
        "JPEG",
        quality=87,
        exif=exif_with_gps(),
        xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>',
        comment="shot at home",
        icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes(),
    )
    sent = out.getvalue() + TRAILER
    telegram.private_chat(USER)
    document = telegram.send_document(
        USER, USER, mime_type="image/jpeg", file_name="PXL_0001.jpg", data=sent
    )
    await generate(telegram, await keyboard_for(telegram, document))
    uploaded = uploaded_bytes(segmind)
    assert scans(uploaded) + TRAILER == scans(sent)
    received = Image.open(io.BytesIO(uploaded))
    assert received.info.get("icc_profile") == Image.open(io.BytesIO(sent)).info["icc_profile"]
    assert not {"exif", "xmp", "comment"} & set(received.info)
    for secret in (b"Exif", b"xmpmeta", b"shot at home", b"ftyp"):
        assert secret not in uploaded
    assert received.tobytes() == Image.open(io.BytesIO(sent)).tobytes()


async def test_the_download_is_deleted_by_the_worker_not_the_event_loop(
    telegram, segmind, bot, monkeypatch
):
    """Deleting a file can be slow: the event loop has buttons to answer meanwhile."""
    deleted_in: list[str] = []
    unlink = pathlib.Path.unlink

    def recorded(path: pathlib.Path, missing_ok: bool = False) -> None:
        if path.name.startswith(".part-"):
            deleted_in.append(threading.current_thread().name)
        unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(pathlib.Path, "unlink", recorded)
    telegram.private_chat(USER)
    _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
    await generate(telegram, keyboard)
    assert uploaded_image(segmind).format == "JPEG"
    assert len(deleted_in) == 1
    assert deleted_in[0].startswith("photo")
    photos = bot.bot_data["runtime"].photos
    assert not list(photos._folder.glob(".part-*"))


class FileBot:
    """Just getFile, answering a file URL (what the Photos store asks the bot for)."""

    async def get_file(self, file_id: str) -> SimpleNamespace:
        return SimpleNamespace(file_path=f"https://files.test/{file_id}")


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "no-length"])
async def test_a_download_past_20_mb_is_cut_off_without_reading_it_all(tmp_path, declared):
    """getFile's size can be missing or wrong: the stream itself is capped."""
    served: list[int] = []

    async def body():
        for _ in range(40):  # 40 MB on offer
            served.append(1)
            yield b"\0" * 2**20

    def answer(request: httpx.Request) -> httpx.Response:
        headers = {"content-length": str(40 * 2**20)} if declared else {}
        return httpx.Response(200, headers=headers, content=body())

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        photos = Photos(FileBot(), http, tmp_path / "photos")  # type: ignore[arg-type]
        photos.open()
        with pytest.raises(PhotoUnavailable) as caught:
            await photos.prepared("file-1", "unique-1")
    assert caught.value.too_big
    assert len(served) <= 21  # not the 40 MB on offer
    assert [p.name for p in (tmp_path / "photos").iterdir()] == []  # no part file left


def red_photo_server() -> tuple[list[str], httpx.AsyncClient]:
    """A client whose every download is a 400 × 300 red JPEG, and the paths asked for."""
    jpeg = encoded(Image.new("RGB", (400, 300), RED), "JPEG")
    downloads: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        downloads.append(request.url.path)
        return httpx.Response(200, content=jpeg)

    return downloads, httpx.AsyncClient(transport=httpx.MockTransport(answer))


async def test_the_folder_keeps_the_newest_prepared_photos_and_remakes_the_rest(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(photos_module, "CACHE_FILES", 2)
    downloads, http = red_photo_server()
    async with http:
        photos = Photos(FileBot(), http, tmp_path / "photos")  # type: ignore[arg-type]
        photos.open()
        try:
            for name in ("a", "b", "a", "c"):
                image = await photos.prepared(f"file-{name}", f"unique-{name}")
                assert (image.width, image.height) == (400, 300)
            assert downloads == ["/file-a", "/file-b", "/file-c"]  # "a" came from the folder
            assert len(list((tmp_path / "photos").glob("*.jpg"))) == 2
            await photos.prepared("file-b", "unique-b")  # the oldest: it went
            assert downloads[-1] == "/file-b"
        finally:
            photos.close()


async def test_a_file_in_the_folder_that_is_no_jpeg_is_made_again(tmp_path):
    """The folder holds only JPEGs the bot made: anything else under a photo's name (a
    stray file, a disk that lost it) is made again, never sent to Segmind as a JPEG."""
    downloads, http = red_photo_server()
    async with http:
        photos = Photos(FileBot(), http, tmp_path / "photos")  # type: ignore[arg-type]
        photos.open()
        try:
            stray = photos._cached_path("unique-a")
            stray.write_bytes(encoded(Image.new("RGB", (400, 300), BLUE), "PNG"))
            image = await photos.prepared("file-a", "unique-a")
            assert downloads == ["/file-a"]
            assert Image.open(io.BytesIO(image.data)).format == "JPEG"
            assert near(Image.open(io.BytesIO(image.data)).getpixel((10, 10)), RED)
            assert stray.read_bytes() == image.data  # the folder holds the JPEG now
        finally:
            photos.close()


async def test_a_restarted_bot_evicts_the_least_recently_used_photo_it_found(
    tmp_path, monkeypatch
):
    """The folder's order (least recently used first) is learnt once at start and kept in
    memory after: no scan of the folder for each photo kept."""
    monkeypatch.setattr(photos_module, "CACHE_FILES", 2)
    downloads, http = red_photo_server()
    async with http:
        for name in ("a", "b"):
            before = Photos(FileBot(), http, tmp_path / "photos")  # type: ignore[arg-type]
            before.open()
            await before.prepared(f"file-{name}", f"unique-{name}")
            before.close()
        folder = tmp_path / "photos"
        (older,) = [p for p in folder.glob("*.jpg") if p != before._cached_path("unique-b")]
        os.utime(older, (1, 1))  # "a" was used long ago
        restarted = Photos(FileBot(), http, folder)  # type: ignore[arg-type]
        restarted.open()
        monkeypatch.setattr(os, "scandir", None)  # from here on the folder is never scanned
        try:
            await restarted.prepared("file-b", "unique-b")  # from the folder: newest now
            await restarted.prepared("file-c", "unique-c")  # made: "a" goes
            await restarted.prepared("file-a", "unique-a")  # made again: "b" goes
        finally:
            restarted.close()
    assert downloads == ["/file-a", "/file-b", "/file-c", "/file-a"]
    monkeypatch.undo()
    assert len(list(folder.glob("*.jpg"))) == 2


def kept_from_user(tmp_path: pathlib.Path, name: str, data: bytes) -> pathlib.Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


#: A fresh process (glibc's thresholds at their start): a Photos' worker prepares the
#: same photo again and again (argv[1]: one that is decoded whole, 9 MB of pixels).
_PHOTOS_IN_A_ROW = """
import sys, tempfile
from pathlib import Path
from bot.telegram.photos import Photos, _prepare_and_give_back

def rss_mb():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024

photos = Photos(None, None, Path(tempfile.mkdtemp()))
data = Path(sys.argv[1]).read_bytes()
after = []
for _ in range(8):
    source = Path(tempfile.mkstemp()[1])
    source.write_bytes(data)
    # Each JPEG is held while the next photo is decoded, as uploads hold theirs.
    prepared = photos._worker.submit(_prepare_and_give_back, source).result()
    after.append(rss_mb())
print(max(after) - after[0])
"""


def test_the_worker_gives_each_photos_pixels_back_to_the_system(tmp_path):
    """glibc would serve a photo's buffer from the worker's arena once it had freed one
    (its mmap threshold rises) and keep it there: 9 MB more for the process after the
    first few photos (docs/benchmarks.md). The photo is the benchmark's, turned by EXIF
    as a camera file is: a Telegram photo goes as sent and has no pixels to give back."""
    photo = turned(_padded_picture("JPEG", 1280, 1707, 200_000, 1))
    result = subprocess.run(
        [sys.executable, "-c", _PHOTOS_IN_A_ROW, str(kept_from_user(tmp_path, "p.jpg", photo))],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=pathlib.Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) < 3.0  # MB: what the first photo left is all there is


#: A fresh process prepares one photo (argv[1]); how far its RSS peaked above where it
#: was (VmHWM reset first), in MB, and the prepared JPEG's size.
_PEAK_OF_ONE_PHOTO = """
import sys
from pathlib import Path
from bot.images import prepare_image

def kb(field):
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith(field)).split()[1])

source = Path(sys.argv[1])
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # VmHWM := VmRSS
before = kb("VmRSS:")
prepared = prepare_image(source)
print((kb("VmHWM:") - before) / 1024, prepared.width, prepared.height)
"""


def test_a_photo_that_goes_as_sent_never_holds_its_pixels(tmp_path):
    """The benchmark's 1280 × 1707 photo: 8.7 MB of pixels when decoded (what the same
    photo turned by EXIF costs, so the measure sees them), not even a quarter as sent."""
    photo = _padded_picture("JPEG", 1280, 1707, 200_000, 1)
    peaks = {}
    for name, data in (("as-sent", photo), ("turned", turned(photo))):
        result = subprocess.run(
            [sys.executable, "-c", _PEAK_OF_ONE_PHOTO, str(kept_from_user(tmp_path, name, data))],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=pathlib.Path(__file__).resolve().parent.parent,
        )
        assert result.returncode == 0, result.stderr
        peak, width, height = result.stdout.split()
        peaks[name] = float(peak)
        assert {int(width), int(height)} == {1280, 1707}
    pixels = 1280 * 1707 * 4 / 2**20  # MB: Pillow keeps RGB in 4 bytes a pixel
    assert peaks["turned"] > pixels
    assert peaks["as-sent"] < pixels / 4
