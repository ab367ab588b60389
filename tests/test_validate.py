"""Stage 1: every validation fault, each with a real file."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from galleryflow.core.settings import Settings
from tasks.validate import check_file, validate_set_dirs
from tests.fixtures.photos import make_set


def _one(report, name):
    return next(f for s in report.sets for f in s.files if f.name == name)


def _png_header_claiming(width: int, height: int) -> bytes:
    """A tiny but well-formed PNG whose header claims a huge canvas (a 'bomb')."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


@pytest.fixture
def messy_set(tmp_path: Path) -> Path:
    folder = make_set(tmp_path / "sets", "messy", 2)
    good = (folder / "messy-01.jpg").read_bytes()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not a photo, it is a note\n" * 4)
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    Image.new("RGB", (400, 300), (10, 200, 30)).save(folder / "really-png.jpg", "PNG")
    Image.new("RGB", (64, 64)).save(folder / "clip.gif", "GIF")  # not a configured extension
    Image.new("RGB", (400, 300)).save(folder / "animation.tiff", "TIFF")
    (folder / "bomb.png").write_bytes(_png_header_claiming(40_000, 40_000))
    Image.new("RGB", (8, 8)).save(folder / "speck.jpg", "JPEG")
    (folder / "notes.txt").write_text("sidecar")
    (folder / ".DS_Store").write_bytes(b"\0\0")
    return folder


def test_every_per_file_fault_is_named(messy_set: Path, gf_home: Settings):
    report = validate_set_dirs([messy_set], gf_home)
    assert report.ok, report.faults_text()
    expect = {
        "empty.jpg": "empty file (0 bytes)",
        "text.jpg": "not an image: the file contains text",
        "truncated.jpg": "damaged or truncated",
        "bomb.png": "decompression-bomb guard",
        "speck.jpg": "too small: 8×8",
    }
    for name, message in expect.items():
        check = _one(report, name)
        assert check.verdict == "excluded", name
        assert any(message in m for m in check.messages), (name, check.messages)
    mislabelled = _one(report, "really-png.jpg")
    assert mislabelled.verdict == "accepted" and mislabelled.format == "PNG"
    assert "really PNG" in mislabelled.messages[0]
    assert _one(report, "animation.tiff").verdict == "accepted"
    assert _one(report, "notes.txt").verdict == "ignored"
    assert {f.name for f in report.sets[0].accepted} == {"messy-01.jpg", "messy-02.jpg", "really-png.jpg", "animation.tiff"}
    names = {f.name for s in report.sets for f in s.files}
    assert ".DS_Store" not in names


def test_strict_turns_per_file_faults_into_blocking(messy_set: Path, gf_home: Settings):
    report = validate_set_dirs([messy_set], gf_home, strict=True)
    assert not report.ok
    text = report.faults_text()
    for name in ("empty.jpg", "text.jpg", "truncated.jpg", "bomb.png"):
        assert f"messy: {name}:" in text


def test_missing_folder_and_no_images_block(tmp_path: Path, gf_home: Settings):
    empty = tmp_path / "empty-set"
    empty.mkdir()
    (empty / "readme.txt").write_text("hi")
    a_file = tmp_path / "file.jpg"
    a_file.write_bytes(b"x")
    report = validate_set_dirs([tmp_path / "nope", empty, a_file], gf_home)
    assert not report.ok
    text = report.faults_text()
    assert f"folder {tmp_path / 'nope'} does not exist" in text
    assert "no images in" in text and "empty-set" in text
    assert "is not a folder" in text


def test_only_bad_files_blocks_the_set(tmp_path: Path, gf_home: Settings):
    folder = tmp_path / "allbad"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"")
    report = validate_set_dirs([folder], gf_home)
    assert not report.ok
    assert "every file was excluded" in report.faults_text()


def test_duplicate_names_across_sets(tmp_path: Path, gf_home: Settings):
    one = make_set(tmp_path / "a", "trip", 2)
    two = tmp_path / "b" / "trip-copy"
    two.mkdir(parents=True)
    shutil.copy(one / "trip-01.jpg", two / "TRIP-01.jpg")
    report = validate_set_dirs([one, two], gf_home)
    dup = _one(report, "TRIP-01.jpg")
    assert dup.verdict == "excluded"
    assert "duplicate file name: also in trip/trip-01.jpg" in dup.messages[0]


def test_unreadable_file(tmp_path: Path, gf_home: Settings):
    """Permission denied, checked as an unprivileged user (root can read anything)."""
    from tests.unprivileged import as_nobody

    folder = make_set(tmp_path, "locked", 2)
    check_file(folder / "locked-02.jpg", "locked", gf_home.validation)  # warm the imports
    path = folder / "locked-01.jpg"
    path.chmod(0)

    def verdict() -> str:
        check = check_file(path, "locked", gf_home.validation)
        return f"{check.verdict}|{check.messages[0]}"

    assert as_nobody(verdict) == "excluded|cannot be read: permission denied"


def test_not_enough_disk_blocks_before_any_write(sample_set: Path, gf_home: Settings):
    rules = gf_home.validation.model_copy(update={"disk_headroom_bytes": 10**18})
    settings = gf_home.model_copy(update={"validation": rules})
    report = validate_set_dirs([sample_set], settings)
    assert not report.ok
    assert "not enough free disk" in report.faults_text()
    assert not any(settings.incoming_dir.iterdir())


def test_pixel_and_size_limits_are_settings(sample_set: Path, gf_home: Settings):
    rules = gf_home.validation.model_copy(update={"max_pixels": 100_000, "max_file_bytes": 10**9})
    check = check_file(sample_set / "lake-shore-01.jpg", "lake-shore", rules)
    assert check.verdict == "excluded"
    assert "exceeds the 0 MP limit" in check.messages[0]
    rules = gf_home.validation.model_copy(update={"max_file_bytes": 1000})
    check = check_file(sample_set / "lake-shore-01.jpg", "lake-shore", rules)
    assert "over the" in check.messages[0]


# --- a JPEG's completeness without a decode --------------------------------------------------

def _jpeg(tmp_path: Path, name: str, **save: object) -> Path:
    from tests.fixtures.photos import gradient

    path = tmp_path / name
    Image.fromarray(gradient((1200, 800)), "RGB").save(path, "JPEG", quality=90, **save)
    return path


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9, -2, -1])
def test_a_jpeg_cut_anywhere_is_excluded_without_decoding(tmp_path: Path, gf_home: Settings,
                                                           progressive: bool, keep: float):
    """Cut after 20/50/90 % of its bytes, or just before/inside its end marker: every
    cut is named as truncated, and validation decodes no pixels for it."""
    from galleryflow.imaging.decode import DECODES

    good = _jpeg(tmp_path, "good.jpg", progressive=progressive, exif=Image.Exif().tobytes())
    data = good.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: int(len(data) * keep)] if keep > 0 else data[: int(keep)])
    DECODES.reset()
    check = check_file(cut, "s", gf_home.validation)
    assert check.verdict == "excluded"
    assert any("damaged or truncated" in m for m in check.messages), check.messages
    assert check_file(good, "s", gf_home.validation).verdict == "accepted"
    assert sum(DECODES.snapshot().values()) == 0


def test_a_complete_jpeg_with_trailer_or_padding_is_accepted(tmp_path: Path, gf_home: Settings):
    """Data after the end marker (a motion photo's video, zero padding) is not damage;
    the embedded thumbnail's own end marker does not make a cut file look whole."""
    from tests.fixtures.photos import gradient

    thumb = Image.fromarray(gradient((160, 120)), "RGB")
    exif = Image.Exif()
    path = _jpeg(tmp_path, "with-thumb.jpg", exif=exif.tobytes())
    data = path.read_bytes()
    # an EXIF-like APP1 segment holding a whole JPEG (its own FF D9) before the scan
    buf = __import__("io").BytesIO()
    thumb.save(buf, "JPEG")
    app1 = b"\xff\xe1" + struct.pack(">H", len(buf.getvalue()) + 2) + buf.getvalue()
    with_thumb = data[:2] + app1 + data[2:]
    (tmp_path / "motion.jpg").write_bytes(with_thumb + b"\0\0\0\x18ftypmp42" + bytes(200_000))
    (tmp_path / "padded.jpg").write_bytes(with_thumb + bytes(4096))
    for name in ("motion.jpg", "padded.jpg"):
        assert check_file(tmp_path / name, "s", gf_home.validation).verdict == "accepted", name
    (tmp_path / "cut-with-thumb.jpg").write_bytes(with_thumb[: len(with_thumb) * 2 // 3])
    check = check_file(tmp_path / "cut-with-thumb.jpg", "s", gf_home.validation)
    assert check.verdict == "excluded" and "damaged or truncated" in check.messages[0]


def test_other_formats_are_still_decoded_to_validate(tmp_path: Path, gf_home: Settings):
    """PNG has no end marker Pillow exposes: a cut PNG is found by decoding it."""
    from tests.fixtures.photos import gradient

    path = tmp_path / "whole.png"
    Image.fromarray(gradient((600, 400)), "RGB").save(path, "PNG")
    data = path.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert check_file(path, "s", gf_home.validation).verdict == "accepted"
    check = check_file(tmp_path / "cut.png", "s", gf_home.validation)
    assert check.verdict == "excluded", check.messages
