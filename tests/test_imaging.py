"""The one image stack, module by module: formats, geometry, decode, colour, encode,
stats, and the decode / hash counters."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, JpegImagePlugin

from galleryflow.core import fsutil
from galleryflow.imaging import colour, encode, formats, geometry, jpeg_scale
from galleryflow.imaging.decode import (
    DECODES,
    UnsupportedFormat,
    decode,
    decode_check,
    open_reduced,
    read_header,
)
from galleryflow.imaging.stats import ImageStats, image_stats
from tests.fixtures import photos as gen


# ---------------------------------------------------------------- formats

def test_one_table_answers_suffixes_outputs_and_mime():
    assert formats.suffix_matches(Path("a.JPG"), "JPEG")
    assert formats.suffix_matches(Path("a.jpg"), "MPO")  # a camera's multi-picture JPEG
    assert not formats.suffix_matches(Path("a.jpg"), "PNG")
    assert formats.suffix_matches(Path("a.ico"), "ICO")  # not in the table: .<name>
    assert [formats.suffix(k) for k in formats.OUTPUT_KEYS] == [".jpg", ".png", ".webp", ".avif"]
    assert formats.LOSSY_KEYS == {"jpeg", "webp", "avif"}
    assert formats.same_output("MPO") == "jpeg" and formats.same_output("TIFF") is None
    assert [formats.default_output(f) for f in ("WEBP", "GIF", "TIFF", "BMP", "HEIF", "RAW")] \
        == ["webp", "png", "png", "png", "jpeg", "jpeg"]
    assert formats.mime("JPEG") == formats.mime("jpeg") == "image/jpeg"
    assert formats.kind_of(Path("x.NEF")) == "raw" and formats.kind_of(Path("x.mov")) == "video"


# ---------------------------------------------------------------- geometry

def test_orientation_aware_sizes_and_aspect_true_draft_request():
    assert geometry.oriented_size(600, 400, 6) == (400, 600)
    assert geometry.oriented_size(600, 400, 3) == (600, 400)
    # A 3:2 photo bound to 1024 asks for 1024×683, not 1024×1024 (half the DCT scale).
    assert geometry.draft_request((6000, 4000), 1024) == (1024, 683)


def test_reduce_bounds_the_long_edge_and_leaves_the_input_alone():
    img = Image.new("RGB", (900, 600), (10, 20, 30))
    small = geometry.reduce(img, 300)
    assert small.size == (300, 200) and img.size == (900, 600)
    assert geometry.reduce(img, 1200) is img  # already small enough
    same = geometry.reduce(img, 450, copy=False)
    assert same is img and img.size == (450, 300)


@pytest.mark.parametrize("fit,size", [("fit", (300, 200)), ("crop", (300, 300)),
                                      ("fill", (300, 300)), ("pad", (300, 300))])
def test_box_fitting_gives_the_planned_size(fit, size):
    plan = geometry.plan_resize(900, 600, 300, 300, fit)
    out = geometry.resize(Image.new("RGB", (900, 600)), plan)
    assert out.size == plan.size == size


# ---------------------------------------------------------------- decode

def test_decode_drafts_orients_and_counts(tmp_path):
    path = gen.jpeg(tmp_path / "turned.jpg", (1200, 800), orientation=6)  # stored 800×1200
    DECODES.reset()
    decoded = decode(path, long_edge=300)
    assert decoded.format == "JPEG" and decoded.stored_size == (800, 1200)
    assert decoded.image.size == (300, 200)  # 1/4 scale, turned upright
    assert 0x0112 not in decoded.image.getexif()  # the pixels are turned: no tag
    assert decoded.exif.get(0x0112) == 6  # the file's EXIF, as stored
    full = decode(path)
    assert full.image.size == (1200, 800)
    assert DECODES.snapshot() == {"tests.test_imaging › decode [reduced]": 1,
                                  "tests.test_imaging › decode [full]": 1}


def test_an_upright_jpeg_is_decoded_without_a_copy_of_its_pixels(tmp_path, monkeypatch):
    upright = gen.jpeg(tmp_path / "upright.jpg", (1200, 800), orientation=1)
    copies = []
    real_copy = Image.Image.copy
    monkeypatch.setattr(Image.Image, "copy", lambda self: copies.append(self.size)
                        or real_copy(self))
    decoded = decode(io.BytesIO(upright.read_bytes()), long_edge=600)
    assert copies == []  # the decoded pixels are the image handed back
    assert decoded.image.size == (600, 400) and decoded.exif.get(0x0112) == 1
    # A plain image to its owner: reduced in place, saved, with the file long gone.
    geometry.reduce(decoded.image, 300, copy=False)
    out = io.BytesIO()
    decoded.image.save(out, "JPEG", quality=80)
    with Image.open(out) as again:
        assert again.size == (300, 200)
    # What still needs its own image: a turned photo, any other format.
    turned = decode(gen.jpeg(tmp_path / "turned.jpg", (1200, 800), orientation=6))
    assert turned.image.size == (1200, 800) and copies == []  # transposed, not copied
    decode(gen.png(tmp_path / "flat.png", (64, 48)))
    assert copies == [(64, 48)]  # a PNG's file object (its chunks as info) stays behind


def test_min_size_is_in_display_orientation(tmp_path):
    path = gen.jpeg(tmp_path / "turned.jpg", (1200, 800), orientation=6)  # shown 1200×800
    assert decode(path, min_size=(300, 200)).image.size == (300, 200)  # 1/4 fits exactly
    assert decode(path, min_size=(200, 300)).image.size == (450, 300)  # 300 high: 3/8


def _psnr(a: Image.Image, b: Image.Image) -> float:
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(10 * np.log10(255 ** 2 / max((diff ** 2).mean(), 1e-9)))


def _pillow_only(monkeypatch):
    monkeypatch.setattr(jpeg_scale, "simplejpeg", None)


def test_a_jpeg_is_decoded_at_the_eighth_scale_that_covers_the_request(tmp_path, monkeypatch):
    """libjpeg's M/8 scales where Pillow's draft has only halves: a 1200-px JPEG bound to
    450 px is decoded at 3/8 (450 px), not 1/2 (600 px), once, with the same picture."""
    path = gen.jpeg(tmp_path / "a.jpg", (1200, 800))
    DECODES.reset()
    scaled = decode(path, long_edge=450)
    assert (scaled.image.mode, scaled.image.size) == ("RGB", (450, 300))
    assert DECODES.total() == 1
    assert scaled.exif.get(0x0112) == 1 and scaled.stored_size == (1200, 800)
    assert scaled.info.get("exif") and "jfif" in scaled.info  # the file's, as Pillow reads them
    with Image.open(path) as full:
        reference = full.convert("RGB").resize((450, 300), Image.Resampling.LANCZOS)
    assert _psnr(scaled.image, reference) > 35
    # From memory the same pixels, and the buffer is the caller's again afterwards.
    held = io.BytesIO(path.read_bytes())
    assert np.array_equal(np.asarray(decode(held, long_edge=450).image), np.asarray(scaled.image))
    held.write(b"more")  # would raise BufferError if a view were still exported
    # Where an eighth scale is no smaller than Pillow's (1/2, 1/4, 1/8), Pillow decodes.
    assert decode(path, long_edge=600).image.size == (600, 400)
    assert decode(path, long_edge=300).image.size == (300, 200)
    assert decode(path, long_edge=4000).image.size == (1200, 800)  # a larger request: whole
    assert decode(path, long_edge=1000).image.size == (1200, 800)  # 7/8: no faster, whole
    assert decode(path, long_edge=850).image.size == (900, 600)  # 6/8
    # Without simplejpeg: Pillow's draft scale, the same picture once reduced.
    _pillow_only(monkeypatch)
    drafted = decode(path, long_edge=450)
    assert drafted.image.size == (600, 400)
    assert _psnr(geometry.reduce(drafted.image, 450), scaled.image) > 35


def test_an_eighth_scale_decode_turns_greys_and_leaves_the_rest_to_pillow(tmp_path, monkeypatch):
    turned = decode(gen.jpeg(tmp_path / "t.jpg", (1200, 800), orientation=6), long_edge=450)
    assert turned.image.size == (450, 300)  # stored 800×1200: decoded 300×450, turned upright
    assert turned.exif.get(0x0112) == 6 and 0x0112 not in turned.image.getexif()
    upright = decode(gen.jpeg(tmp_path / "u.jpg", (1200, 800), orientation=1), long_edge=450)
    assert _psnr(turned.image, upright.image) > 35  # the same picture (same seed), upright
    grey = tmp_path / "grey.jpg"
    Image.fromarray(gen.gradient((1200, 800))[:, :, 0]).save(grey, "JPEG", quality=90)
    decoded = decode(grey, long_edge=450)
    assert (decoded.image.mode, decoded.image.size) == ("L", (450, 300))
    # CMYK (no eighth-scale path): Pillow's 1/2 scale, in CMYK as Pillow gives it.
    cmyk = decode(gen.cmyk_jpeg(tmp_path / "c.jpg", (1200, 800)), long_edge=450)
    assert (cmyk.image.mode, cmyk.image.size) == ("CMYK", (600, 400))


def test_a_damaged_jpeg_fails_with_pillows_error_never_with_made_up_pixels(tmp_path):
    """simplejpeg runs strict: any libjpeg warning (a truncated scan, stray bytes) sends
    the file to Pillow, whose error the caller sees, as before."""
    cut = gen.truncated_jpeg(tmp_path / "cut.jpg", gen.jpeg(tmp_path / "a.jpg", (1200, 800)))
    with pytest.raises(OSError, match="truncated"):
        decode(cut, long_edge=450)
    good = gen.jpeg(tmp_path / "b.jpg", (1200, 800)).read_bytes()
    scan = good.index(b"\xff\xda")
    stray = good[: scan] + b"\x00\x00\x00" + good[scan:]  # libjpeg: "extraneous bytes"
    assert jpeg_scale.decode_scaled(stray, (450, 300), "RGB") is None
    assert decode(io.BytesIO(stray), long_edge=450).image.size == (600, 400)  # Pillow's


def test_open_reduced_and_one_decode_for_two_sizes(tmp_path):
    path = gen.jpeg(tmp_path / "a.jpg", (1200, 800))
    DECODES.reset()
    model = open_reduced(path, 600)
    analysis = geometry.reduce(model, 300)  # derived, not decoded again
    assert (model.mode, model.size, analysis.size) == ("RGB", (600, 400), (300, 200))
    assert sum(DECODES.snapshot().values()) == 1


def test_other_formats_are_refused_before_any_pixel_is_decoded(tmp_path):
    path = gen.png(tmp_path / "a.png")
    DECODES.reset()
    with pytest.raises(UnsupportedFormat, match="PNG images are not supported"):
        decode(path, formats=frozenset({"JPEG"}))
    assert DECODES.total() == 0


def test_header_and_decode_check(tmp_path):
    path = gen.jpeg(tmp_path / "a.jpg", (640, 480), orientation=8)
    header = read_header(path, orientation=True)
    assert (header.format, header.width, header.height, header.orientation) == \
        ("JPEG", 480, 640, 8)  # the stored frame: shown 640×480 once turned
    assert read_header(path).orientation == 1  # not read unless asked
    data = path.read_bytes()
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    decode_check(path)
    with pytest.raises(OSError):
        decode_check(truncated)


# ---------------------------------------------------------------- colour

def test_to_rgb_scales_16_bit_and_flattens_alpha(tmp_path):
    grey16 = Image.open(gen.png16_grey(tmp_path / "g.png"))
    rgb = colour.to_rgb(grey16)
    assert rgb.mode == "RGB" and rgb.getpixel((rgb.width - 1, 0))[0] == 255
    assert rgb.getpixel((rgb.width // 2, 0))[0] in range(120, 136)  # scaled, not clipped
    clear = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert colour.to_rgb(clear).getpixel((0, 0)) == (255, 255, 255)
    assert colour.flatten(clear, "#000000").getpixel((0, 0)) == (0, 0, 0)
    assert colour.flatten(Image.new("L", (4, 4))).mode == "L"  # no alpha: as it is


def test_srgb_is_recognised_by_what_a_profile_does_not_its_name(tmp_path):
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    swapped = gen.swapped_rgb_profile()
    named_srgb = swapped.replace(b"BRGs", b"sRGB").replace("BRGs".encode("utf-16-be"),
                                                            "sRGB".encode("utf-16-be"))
    assert colour.is_srgb(srgb)
    assert not colour.is_srgb(swapped) and not colour.is_srgb(named_srgb)
    red = Image.new("RGB", (8, 8), (230, 20, 20))
    assert colour.to_srgb(red, srgb).converted is False
    result = colour.to_srgb(red, named_srgb)
    r, g, b = result.image.getpixel((0, 0))
    assert result.converted and b > 150 and r < 80  # "red" in that space is blue in sRGB
    broken = colour.to_srgb(red, b"not a profile")
    assert not broken.converted and "unusable" in (broken.warning or "")


def test_srgb_conversion_is_the_same_on_every_thread():
    profile = gen.swapped_rgb_profile()
    img = Image.fromarray(gen.gradient((200, 150)), "RGB")
    expected = colour.to_srgb(img, profile).image.tobytes()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: colour.to_srgb(img, profile).image.tobytes(),
                                range(16)))
    assert all(r == expected for r in results)


def test_embedded_srgb_profile_is_the_same_bytes_every_time():
    data = colour.srgb_profile_bytes()
    assert data[24:36] == bytes(12)  # no build timestamp
    assert "sRGB" in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(data)))


# ---------------------------------------------------------------- encode

def test_only_the_metadata_passed_reaches_the_file():
    img = Image.new("RGB", (32, 32), (90, 120, 150))
    img.info.update(icc_profile=gen.swapped_rgb_profile(), comment=b"private note")
    for key in ("jpeg", "webp", "png", "avif"):
        with Image.open(io.BytesIO(encode.encode(img, key, quality=80))) as out:
            assert "icc_profile" not in out.info and "comment" not in out.info, key
    assert "icc_profile" in img.info  # the caller's image is left as it was
    icc = colour.srgb_profile_bytes()
    with Image.open(io.BytesIO(encode.encode(img, "jpeg", quality=80, icc_profile=icc))) as out:
        assert out.info["icc_profile"] == icc


def test_jpeg_chroma_follows_quality_and_alpha_is_flattened():
    img = Image.new("RGBA", (64, 64), (200, 30, 30, 0))
    for quality, sampling in ((85, 2), (90, 0)):
        with Image.open(io.BytesIO(encode.encode(img, "jpeg", quality=quality))) as out:
            assert out.mode == "RGB"
            assert JpegImagePlugin.get_sampling(out) == sampling
            assert out.getpixel((0, 0)) == (255, 255, 255)


def test_a_jpeg_larger_than_pillows_buffer_guess_is_still_written(tmp_path):
    noise = np.random.default_rng(5).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    img = Image.fromarray(noise, "RGB")  # 4:4:4 at q92 needs more than a byte per pixel
    dest = tmp_path / "out" / "noise.jpg"
    encode.write(img, dest, "jpeg", quality=92, optimize=True, progressive=True)
    with Image.open(dest) as out:
        out.load()
        assert out.size == (400, 300)
    assert len(encode.encode(img, "jpeg", quality=92)) > 400 * 300
    assert [p.name for p in dest.parent.iterdir()] == ["noise.jpg"]  # nothing left behind


# ---------------------------------------------------------------- stats

def test_one_image_stats_with_one_unit_convention():
    img = Image.new("RGB", (120, 80), (128, 128, 128))
    img.paste((250, 140, 40), (0, 0, 120, 40))  # warm light above
    plain = image_stats(img)
    assert isinstance(plain, ImageStats) and plain.warmth is None
    stats = image_stats(img, appearance=True)
    assert 0.0 < stats.brightness < 1.0 and 0.0 < stats.contrast <= 0.5
    assert 0.0 < stats.warmth < 1.0 and 0.0 < stats.upper_minus_lower < 1.0
    assert stats.dominant == "orange" and stats.orientation == "landscape"
    assert 0.0 <= stats.detail < 1.0
    assert stats.brightness == plain.brightness and stats.blur == plain.blur
    assert image_stats(Image.new("RGB", (50, 50), (0, 0, 0)), appearance=True).dominant == "grey"


# ---------------------------------------------------------------- counters

def test_hashes_are_counted_by_call_path(tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(b"x" * 1000)
    fsutil.HASHES.reset()
    fsutil.copy_verified(src, tmp_path / "out" / "a.bin")
    fsutil.sha256_file(src)
    assert fsutil.HASHES.snapshot() == {
        "tests.test_imaging › copy_verified [while copying]": 1,  # no read-back hash
        "tests.test_imaging › sha256_file": 1,
    }
    fsutil.HASHES.reset()
    assert fsutil.HASHES.total() == 0
