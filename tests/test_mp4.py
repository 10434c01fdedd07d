"""The MP4 header reader: real box structure in, the figures sendVideo needs out; any
damage gives None, never an exception."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from bot.mp4 import VideoInfo, read_video_info
from tests.fakes import mp4


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "video.mp4"
    path.write_bytes(data)
    return path


def test_fast_start_file(tmp_path: Path) -> None:
    data = mp4.mp4_header(960, 540, 5.04, 4096) + bytes(4096)
    assert read_video_info(write(tmp_path, data)) == VideoInfo(960, 540, 5, has_audio=False)


def test_moov_after_a_large_mdat_is_found_by_seeking(tmp_path: Path) -> None:
    """Encoders write the header last unless told otherwise."""
    payload = bytes(3_000_000)
    data = mp4.FTYP + mp4.mdat_header(len(payload)) + payload + mp4.moov(1280, 720, 8.0)
    assert read_video_info(write(tmp_path, data)) == VideoInfo(1280, 720, 8, has_audio=False)


def test_version_1_boxes_and_a_64_bit_mdat(tmp_path: Path) -> None:
    payload = bytes(1000)
    mdat = struct.pack(">I4sQ", 1, b"mdat", 16 + len(payload)) + payload
    data = mp4.FTYP + mdat + mp4.moov(1920, 1080, 4.6, version=1)
    assert read_video_info(write(tmp_path, data)) == VideoInfo(1920, 1080, 5, has_audio=False)


def test_an_audio_track_is_noticed(tmp_path: Path) -> None:
    data = mp4.FTYP + mp4.moov(640, 360, 5.0, audio=True)
    assert read_video_info(write(tmp_path, data)) == VideoInfo(640, 360, 5, has_audio=True)


def test_a_quarter_turn_swaps_width_and_height(tmp_path: Path) -> None:
    data = mp4.FTYP + mp4.moov(1280, 720, 5.0, matrix=mp4.QUARTER_TURN)
    assert read_video_info(write(tmp_path, data)) == VideoInfo(720, 1280, 5, has_audio=False)


def test_a_clip_shorter_than_half_a_second_lasts_one_second(tmp_path: Path) -> None:
    data = mp4.FTYP + mp4.moov(640, 360, 0.3)
    assert read_video_info(write(tmp_path, data)) == VideoInfo(640, 360, 1, has_audio=False)


def test_unknown_length_is_zero(tmp_path: Path) -> None:
    """A fragmented file's mvhd says 0: the size still helps, the length is not sent."""
    data = mp4.FTYP + mp4.moov(640, 360, 0.0)
    assert read_video_info(write(tmp_path, data)) == VideoInfo(640, 360, 0, has_audio=False)


def test_audio_only_file_is_none(tmp_path: Path) -> None:
    moov = mp4.box(b"moov", mp4.mvhd(1000, 5000) + mp4.trak(1, b"soun", 44100, 220500))
    assert read_video_info(write(tmp_path, mp4.FTYP + moov)) is None


def test_every_truncation_gives_none_or_the_full_answer(tmp_path: Path) -> None:
    """Cut anywhere: never an exception; the figures only once the whole moov is there."""
    data = mp4.FTYP + mp4.moov(960, 540, 5.0, audio=True) + mp4.mdat_header(100) + bytes(100)
    whole = read_video_info(write(tmp_path, data))
    assert whole == VideoInfo(960, 540, 5, has_audio=True)
    moov_end = len(mp4.FTYP) + len(mp4.moov(960, 540, 5.0, audio=True))
    for cut in range(len(data)):
        info = read_video_info(write(tmp_path, data[:cut]))
        assert info is None if cut < moov_end else info == whole, cut


def test_box_sizes_that_lie_give_none(tmp_path: Path) -> None:
    moov = mp4.moov(960, 540, 5.0)
    inner_lie = moov[:8] + struct.pack(">I", 10_000) + moov[12:]  # mvhd claims too much
    for data in (
        mp4.FTYP + struct.pack(">I4s", 2**31, b"moov") + moov[8:],  # past the end
        mp4.FTYP + struct.pack(">I4s", 4, b"moov") + moov[8:],  # smaller than a header
        mp4.FTYP + inner_lie,
        mp4.FTYP + mp4.box(b"moov", b""),  # no mvhd
    ):
        assert read_video_info(write(tmp_path, data)) is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(500),  # a JPEG
        b"<html><body>Not found</body></html>",
        b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(range(256)) * 4,
    ],
    ids=["empty", "jpeg", "html", "ftyp-then-filler"],
)
def test_not_an_mp4_gives_none(tmp_path: Path, data: bytes) -> None:
    assert read_video_info(write(tmp_path, data)) is None


def test_random_bytes_after_ftyp_never_raise(tmp_path: Path) -> None:
    rng = random.Random(7)
    for _ in range(300):
        data = mp4.FTYP + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        assert read_video_info(write(tmp_path, data)) is None


def test_a_missing_file_gives_none(tmp_path: Path) -> None:
    assert read_video_info(tmp_path / "gone.mp4") is None
