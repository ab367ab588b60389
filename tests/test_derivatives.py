"""Web derivatives: orientation, sRGB, IPTC/XMP embedded and read back, GPS policy."""

from __future__ import annotations

import io
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms, IptcImagePlugin, JpegImagePlugin

from galleryflow.intake.samples import SampleSpec, write_sample
from galleryflow.publishing.derivatives import (
    DerivativeError,
    DerivativeInput,
    DerivativeSpec,
    iptc_iim,
    make_derivatives,
    photoshop_app13,
)
from galleryflow.core.fsutil import sha256_file
from tests.fixtures.photos import swapped_rgb_profile

SPEC = DerivativeSpec(full_long_edge=800, thumb_long_edge=200, quality=85, keep_gps=False)


def _item(src: Path, **extra) -> DerivativeInput:
    fields = dict(
        row_id=7,
        source_path=src,
        # What the person approved: the file's own content (publish refuses anything else).
        sha256=sha256_file(src) if src.is_file() else "0" * 64,
        object_name="lake-dawn-01",
        headline="Lake shore at dawn",
        caption="Mist rises over Lake Thun at dawn — the first ferry leaves Spiez.",
        alt_text="A misty lake below green hills in early light",
        keywords=["lake", "dawn", "Thun", "Zürich-see"],
    )
    fields.update(extra)
    return DerivativeInput(**fields)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    return write_sample(
        tmp_path / "in" / "photo.jpg",
        SampleSpec(name="photo.jpg", width=1200, height=800, gps=(46.68, 7.71, 560.0), seed=3),
    )


def test_iptc_and_xmp_read_back(photo, tmp_path):
    result = make_derivatives(_item(photo), SPEC, tmp_path / "work")
    with Image.open(result.image.path) as img:
        iptc = IptcImagePlugin.getiptcinfo(img)
        xmp = img.getxmp()
    assert iptc[(1, 90)] == b"\x1b%G"  # declared UTF-8
    assert (
        iptc[(2, 120)].decode()
        == "Mist rises over Lake Thun at dawn — the first ferry leaves Spiez."
    )
    assert [k.decode() for k in iptc[(2, 25)]] == ["lake", "dawn", "Thun", "Zürich-see"]
    assert iptc[(2, 105)] == b"Lake shore at dawn"
    assert iptc[(2, 5)] == b"lake-dawn-01"
    desc = xmp["xmpmeta"]["RDF"]["Description"]
    assert desc["description"]["Alt"]["li"]["text"].startswith("Mist rises over Lake Thun")
    assert desc["subject"]["Bag"]["li"] == ["lake", "dawn", "Thun", "Zürich-see"]
    assert desc["AltTextAccessibility"]["Alt"]["li"]["text"] == (
        "A misty lake below green hills in early light"
    )
    assert desc["Headline"] == "Lake shore at dawn"
    # the thumbnail carries the same words
    with Image.open(result.thumbnail.path) as thumb:
        assert IptcImagePlugin.getiptcinfo(thumb)[(2, 120)] == iptc[(2, 120)]


def test_xmp_namespaces_are_the_standard_ones(photo, tmp_path):
    result = make_derivatives(_item(photo), SPEC, tmp_path / "work")
    with Image.open(result.image.path) as img:
        xmp = img.getxmp(strip_namespaces=False)
    rdf = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
    desc = xmp["{adobe:ns:meta/}xmpmeta"][f"{rdf}RDF"][f"{rdf}Description"]
    assert "{http://purl.org/dc/elements/1.1/}description" in desc
    assert "{http://purl.org/dc/elements/1.1/}subject" in desc
    assert "{http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/}AltTextAccessibility" in desc


def test_long_and_odd_text_is_bounded_and_escaped(photo, tmp_path):
    caption = "Ünïcödé <b>&</b> \x07bell " + "é" * 1500  # > 2000 UTF-8 bytes
    result = make_derivatives(
        _item(photo, caption=caption, keywords=["k" * 80]), SPEC, tmp_path / "work"
    )
    with Image.open(result.image.path) as img:
        iptc = IptcImagePlugin.getiptcinfo(img)
        xmp_caption = img.getxmp()["xmpmeta"]["RDF"]["Description"]["description"]["Alt"]["li"][
            "text"
        ]
    assert len(iptc[(2, 120)]) <= 2000
    iptc[(2, 120)].decode("utf-8")  # cut on a character boundary
    assert len(iptc[(2, 25)]) == 64
    assert xmp_caption == caption.replace("\x07", "")  # XMP has no limit; control chars dropped


def _upright_scene() -> Image.Image:
    """1200x800: blue sky on top, green ground below, a red mark in the top-left corner."""
    scene = Image.new("RGB", (1200, 800), (40, 160, 40))
    scene.paste((40, 80, 220), (0, 0, 1200, 400))
    scene.paste((230, 20, 20), (0, 0, 150, 100))
    return scene


def test_sizes_orientation_and_exif(tmp_path):
    # Stored turned a quarter to the left with orientation 6 ("rotate 90° CW to display").
    src = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "Canon"
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = "2026:06:14 09:30:00"
    _upright_scene().transpose(Image.Transpose.ROTATE_90).save(src, "JPEG", quality=92, exif=exif)
    with Image.open(src) as raw:
        assert raw.size == (800, 1200)
    result = make_derivatives(_item(src), SPEC, tmp_path / "work")
    assert (result.image.width, result.image.height) == (800, 533)
    assert (result.thumbnail.width, result.thumbnail.height) == (200, 133)
    with Image.open(result.image.path) as img:
        out_exif = img.getexif()
        assert out_exif[ExifTags.Base.Orientation] == 1  # pixels are upright now
        assert out_exif[ExifTags.Base.Make] == "Canon"
        assert (
            out_exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal]
            == "2026:06:14 09:30:00"
        )
        px = np.asarray(img.convert("RGB"), dtype=np.float64)
    corner, sky, ground = (
        px[10:50, 10:70].mean((0, 1)),
        px[150:250, 400:700].mean((0, 1)),
        px[-100:].mean((0, 1)),
    )
    assert (
        corner[0] > 180 and corner[2] < 80
    )  # red mark top-left: not rotated the wrong way, not mirrored
    assert sky[2] > 180 and sky[1] < 120  # blue above
    assert ground[1] > 130 and ground[2] < 80  # green below


def test_small_sources_are_not_upscaled(tmp_path):
    src = write_sample(tmp_path / "small.jpg", SampleSpec(name="small.jpg", width=640, height=480))
    result = make_derivatives(_item(src), SPEC, tmp_path / "work")
    assert (result.image.width, result.image.height) == (640, 480)


def test_one_reduced_decode_in_draft_mode(photo, tmp_path, monkeypatch):
    scales = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = original(self, mode, size)
        if result is not None:  # a draft that took effect (after the decode it is a no-op)
            scales.append(self.decoderconfig[0] if self.decoderconfig else 1)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    make_derivatives(
        _item(photo),
        DerivativeSpec(full_long_edge=500, thumb_long_edge=120, quality=80),
        tmp_path / "work",
    )
    assert scales == [2]  # 1200x800 decoded at 600x400 once, for both outputs


def test_gps_stripped_by_default_and_kept_when_asked(photo, tmp_path):
    with Image.open(photo) as original:
        assert original.getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the source has GPS
    stripped = make_derivatives(_item(photo), SPEC, tmp_path / "w1")
    kept = make_derivatives(
        _item(photo), SPEC.model_copy(update={"keep_gps": True}), tmp_path / "w2"
    )
    for path in (stripped.image.path, stripped.thumbnail.path):
        with Image.open(path) as img:
            assert not img.getexif().get_ifd(ExifTags.IFD.GPSInfo)
            assert ExifTags.Base.GPSInfo not in img.getexif()
        assert b"GPS" not in path.read_bytes()  # nowhere else either (XMP, IPTC)
    with Image.open(kept.image.path) as img:
        gps = img.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    assert gps[ExifTags.GPS.GPSLatitudeRef] == "N"
    assert float(gps[ExifTags.GPS.GPSLatitude][0]) == 46.0


def test_colour_is_converted_to_srgb(tmp_path):
    src = tmp_path / "bgr.jpg"
    Image.new("RGB", (320, 200), (230, 20, 20)).save(
        src, "JPEG", quality=95, icc_profile=swapped_rgb_profile(renamed=False)
    )
    result = make_derivatives(_item(src), SPEC, tmp_path / "work")
    with Image.open(result.image.path) as img:
        r, g, b = np.asarray(img.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)
        profile = ImageCms.ImageCmsProfile(io.BytesIO(img.info["icc_profile"]))
    assert b > 150 and r < 80, (r, g, b)  # "red" in that space is blue in sRGB
    assert "sRGB" in ImageCms.getProfileDescription(profile)


def test_identical_inputs_give_identical_files_and_are_reused(photo, tmp_path):
    a = make_derivatives(_item(photo), SPEC, tmp_path / "a")
    b = make_derivatives(_item(photo), SPEC, tmp_path / "b")
    assert (a.image.sha256, a.thumbnail.sha256) == (b.image.sha256, b.thumbnail.sha256)
    mtime = a.image.path.stat().st_mtime_ns
    again = make_derivatives(_item(photo), SPEC, tmp_path / "a")
    assert again.reused and again.image == a.image
    assert a.image.path.stat().st_mtime_ns == mtime
    # an edited caption is new content: new files, not the cached ones
    edited = make_derivatives(_item(photo, caption="Edited."), SPEC, tmp_path / "a")
    assert not edited.reused and edited.image.sha256 != a.image.sha256


def test_damaged_or_missing_incoming_copy_is_a_clear_error(photo, tmp_path):
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(photo.read_bytes()[: photo.stat().st_size // 3])
    with pytest.raises(DerivativeError, match="truncated.jpg: cannot decode"):
        make_derivatives(_item(truncated), SPEC, tmp_path / "work")
    with pytest.raises(DerivativeError, match="gone.jpg: the incoming copy is missing"):
        make_derivatives(_item(tmp_path / "gone.jpg"), SPEC, tmp_path / "work")
    assert not list((tmp_path / "work").rglob("*.jpg"))  # nothing half-written left


def test_app13_segment_layout():
    segment = photoshop_app13(iptc_iim("n", None, "c", ["k"]))
    assert segment[:2] == b"\xff\xed"
    assert struct.unpack(">H", segment[2:4])[0] == len(segment) - 2
    assert segment[4:18] == b"Photoshop 3.0\x00"
    assert segment[18:24] == b"8BIM\x04\x04"


def test_bytes_other_than_the_approved_ones_are_refused(photo: Path, tmp_path: Path) -> None:
    approved = _item(photo)
    photo.write_bytes(photo.read_bytes() + b"\0")  # still a JPEG that decodes
    with pytest.raises(DerivativeError, match="not the photo that was approved"):
        make_derivatives(approved, SPEC, tmp_path / "work")
    assert not list((tmp_path / "work").rglob("*.jpg"))  # nothing made from those bytes


def test_web_images_made_ahead_are_waited_for_and_reused_byte_for_byte(photo, tmp_path):
    """make_ahead builds in the background what make_derivatives would; the publish's
    call waits for it and reuses the very files, identical to a build of its own."""
    from galleryflow.publishing import derivatives

    assert derivatives.make_ahead([_item(photo)], SPEC, tmp_path / "ahead") == 1
    assert derivatives.make_ahead([_item(photo)], SPEC, tmp_path / "ahead") == 0  # once
    # Until the worker has taken it: one it has not started yet the publish makes itself
    # (by design), which under a loaded machine's scheduling this test once met.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with derivatives._ahead_lock:
            if not derivatives._ahead_queue:
                break
        time.sleep(0.005)
    reused = make_derivatives(_item(photo), SPEC, tmp_path / "ahead")
    assert reused.reused
    fresh = make_derivatives(_item(photo), SPEC, tmp_path / "fresh")
    assert not fresh.reused
    assert reused.image.path.read_bytes() == fresh.image.path.read_bytes()
    assert reused.thumbnail.path.read_bytes() == fresh.thumbnail.path.read_bytes()


def test_web_images_made_ahead_are_not_used_for_other_words_or_other_bytes(photo, tmp_path):
    from galleryflow.publishing import derivatives

    work = tmp_path / "work"
    derivatives.make_ahead([_item(photo)], SPEC, work)
    edited = make_derivatives(_item(photo, caption="A person's own caption."), SPEC, work)
    assert not edited.reused  # the reviewed words differ: made again, with them
    with Image.open(edited.image.path) as img:
        assert IptcImagePlugin.getiptcinfo(img)[(2, 120)].decode() == "A person's own caption."
    # Made ahead from a copy that is not the approved photo: refused there, and again
    # (with its reason) by the publish's own call.
    derivatives.make_ahead([_item(photo, sha256="1" * 64)], SPEC, tmp_path / "other")
    with pytest.raises(DerivativeError, match="not the photo that was approved"):
        make_derivatives(_item(photo, sha256="1" * 64), SPEC, tmp_path / "other")


def test_the_publish_makes_what_was_queued_ahead_but_not_started(photo, tmp_path, monkeypatch):
    """A row still waiting in the made-ahead queue is made by the publish's own call (in
    its threads), not waited for; the background thread then skips it."""
    import threading

    from galleryflow.publishing import derivatives

    gate = threading.Event()
    real = derivatives._make
    made: list[str] = []

    def slow_first(item, spec, work_dir):  # the background thread's first item blocks
        if item.object_name == "first" and threading.current_thread().name == "web-images-ahead":
            gate.wait(60)
        made.append(f"{threading.current_thread().name}:{item.object_name}")
        return real(item, spec, work_dir)

    monkeypatch.setattr(derivatives, "_make", slow_first)
    work = tmp_path / "work"
    first, second = _item(photo, object_name="first"), _item(photo, object_name="second")
    assert derivatives.make_ahead([first, second], SPEC, work) == 2
    result = make_derivatives(second, SPEC, work)  # queued behind "first": made here
    assert not result.reused and made == ["MainThread:second"]
    gate.set()
    assert make_derivatives(first, SPEC, work).reused  # being made ahead: waited for
    assert made == ["MainThread:second", "web-images-ahead:first", "MainThread:first"]


def test_a_runs_unstarted_web_images_are_dropped_when_its_publish_is_over(photo, tmp_path,
                                                                        monkeypatch):
    """drop_ahead(run) forgets what that run queued and no worker has started (the rows
    its publish did not take); the one being made is finished, another run's queue is
    kept, and a later publish of a dropped row makes it itself."""
    import threading

    from galleryflow.publishing import derivatives

    started, gate = threading.Event(), threading.Event()
    real = derivatives._make
    made: list[str] = []

    def blocking_first(item, spec, work_dir):
        if threading.current_thread().name == "web-images-ahead" and item.object_name == "a1":
            started.set()
            gate.wait(60)
        made.append(f"{threading.current_thread().name}:{item.object_name}")
        return real(item, spec, work_dir)

    monkeypatch.setattr(derivatives, "_make", blocking_first)
    work = tmp_path / "work"
    items = {name: _item(photo, object_name=name) for name in ("a1", "a2", "a3", "b1")}
    assert derivatives.make_ahead([items["a1"], items["a2"], items["a3"]], SPEC, work,
                                  owner="run-a") == 3
    assert derivatives.make_ahead([items["b1"]], SPEC, work, owner="run-b") == 1
    assert started.wait(30)  # a1 is being made: it stays
    assert derivatives.drop_ahead("run-a") == 2  # a2, a3
    gate.set()
    deadline = time.monotonic() + 30
    while any(t.name == "web-images-ahead" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "a made-ahead worker outlived its queue"
        time.sleep(0.01)
    assert made == ["web-images-ahead:a1", "web-images-ahead:b1"]
    assert make_derivatives(items["a1"], SPEC, work).reused
    assert make_derivatives(items["b1"], SPEC, work).reused
    again = make_derivatives(items["a2"], SPEC, work)  # dropped: made by the publish itself
    assert not again.reused and made[-1] == "MainThread:a2"
    assert derivatives.drop_ahead("run-a") == 0


def test_rows_handed_over_in_turns_share_one_background_worker(photo, tmp_path, monkeypatch):
    """Stage 7 hands over its rows every few drafts: each hand-over joins one queue that
    one thread per process works through in order, rather than a thread per hand-over
    (which would take the core stage 7 and the gate run on)."""
    import threading

    from galleryflow.publishing import derivatives

    gate = threading.Event()
    real = derivatives._make
    made: list[str] = []
    most = 0

    def counted(item, spec, work_dir):
        nonlocal most
        gate.wait(60)
        workers = [t for t in threading.enumerate() if t.name == "web-images-ahead"]
        most = max(most, len(workers))
        if threading.current_thread().name == "web-images-ahead":
            made.append(item.object_name)
        return real(item, spec, work_dir)

    monkeypatch.setattr(derivatives, "_make", counted)
    work = tmp_path / "work"
    names = [f"row-{i}" for i in range(6)]
    for start in range(0, 6, 2):  # three hand-overs while the first item is being made
        assert derivatives.make_ahead([_item(photo, object_name=n) for n in names[start:start + 2]],
                                      SPEC, work) == 2
    gate.set()
    for name in names:
        assert make_derivatives(_item(photo, object_name=name), SPEC, work).image.path.is_file()
    assert most == derivatives.AHEAD_WORKERS == 1
    assert made and made == sorted(made, key=names.index)  # in the order handed over


def test_while_the_gate_waits_every_core_makes_web_images_then_one_again(photo, tmp_path,
                                                                         monkeypatch):
    """Stage 7 leaves a core to itself; the review gate (:func:`ahead_workers`) lets as
    many workers as asked make the queue at once, and after it a lone worker goes on."""
    import threading

    from galleryflow.publishing import derivatives

    release = threading.Semaphore(0)
    started = threading.Semaphore(0)
    real = derivatives._make
    busy: list[int] = []  # how many were being made as each one started
    lock = threading.Lock()
    running = 0

    def held(item, spec, work_dir):
        nonlocal running
        if threading.current_thread().name != "web-images-ahead":
            return real(item, spec, work_dir)  # the publish's own call
        with lock:
            running += 1
            busy.append(running)
        started.release()
        release.acquire(timeout=60)
        try:
            return real(item, spec, work_dir)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(derivatives, "_make", held)
    work = tmp_path / "work"
    items = [_item(photo, object_name=f"row-{i}") for i in range(8)]
    assert derivatives.make_ahead(items, SPEC, work) == 8
    assert started.acquire(timeout=30)  # stage 7's one worker took the first row
    with derivatives.ahead_workers(3):
        assert started.acquire(timeout=30) and started.acquire(timeout=30)
        assert busy == [1, 2, 3]  # three rows at once while the gate waits
    # The person answered with three in hand: they finish, then one worker goes on.
    busy.clear()
    for _ in range(3):
        release.release()
    for _ in range(5):
        assert started.acquire(timeout=30)
        release.release()
    assert busy == [1] * 5
    for item in items:  # the publish finds every one made
        assert make_derivatives(item, SPEC, work).reused
    deadline = time.monotonic() + 30
    while any(t.name == "web-images-ahead" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "a made-ahead worker outlived its queue"
        time.sleep(0.01)
    assert derivatives._ahead_limit == derivatives.AHEAD_WORKERS
