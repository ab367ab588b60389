"""Batch operations on real files: dimensions, formats, quality, metadata, colour,
RAW, video, failures in plain words, output naming and rerun skipping.

These run the per-file pipeline directly (no Prefect); tests/test_batch_flow.py
runs the same code through the flow."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageChops, ImageStat

from galleryflow.imaging import media
from galleryflow.batch.outputs import OutputRegistry, glob_base, iter_inputs
from galleryflow.core.fsutil import sha256_file
from galleryflow.batch.presets import PresetError, resolve
from galleryflow.batch.ops import FileResult, JobSpec, _retry_io, process_file
from tests.fixtures import photos as gen


def run(inputs: list[Path], out: Path, operation: str | None = None, preset: str | None = None,
        base: Path | None = None, **params) -> list[FileResult]:
    job = resolve(operation, preset, params)
    spec = JobSpec(job_id="test", operation=job.operation, params=job.params,
                   base_dir=str(base or inputs[0].parent), output_directory=str(out))
    registry = OutputRegistry(out)
    return [process_file(p, spec, registry) for p in inputs]


def one(inputs: Path, out: Path, operation: str | None = None, **kw) -> FileResult:
    result = run([inputs], out, operation, **kw)[0]
    return result


def opened(result: FileResult) -> Image.Image:
    assert result.status == "completed", result.error
    assert result.output is not None
    img = Image.open(result.output)
    img.load()
    return img


def luma(img: Image.Image) -> float:
    return ImageStat.Stat(img.convert("L")).mean[0]


# ---------------------------------------------------------------- resize

def test_resize_width_keeps_aspect_and_never_upscales_unless_asked(tmp_path):
    src = gen.jpeg(tmp_path / "in" / "lake.jpg", (640, 480))
    assert opened(one(src, tmp_path / "a", "resize", width=320)).size == (320, 240)
    assert opened(one(src, tmp_path / "b", "resize", height=120)).size == (160, 120)
    assert opened(one(src, tmp_path / "c", "resize", width=1000)).size == (640, 480)
    assert opened(one(src, tmp_path / "d", "resize", width=1000, upscale=True)).size == (1000, 750)
    assert opened(one(src, tmp_path / "e", "resize", width=300, height=300)).size == (300, 225)


def test_resize_crop_fill_and_pad_give_the_exact_box(tmp_path):
    src = gen.jpeg(tmp_path / "in" / "lake.jpg", (640, 480))
    crop = opened(one(src, tmp_path / "crop", "resize", width=200, height=200, fit="crop"))
    fill = opened(one(src, tmp_path / "fill", "resize", width=200, height=50, fit="fill"))
    pad = opened(one(src, tmp_path / "pad", "resize", width=200, height=200, fit="pad",
                     format="png", background="#ff0000"))
    assert crop.size == (200, 200) and fill.size == (200, 50) and pad.size == (200, 200)
    # Pad: the 200×150 picture sits centred, the bands above and below are the colour.
    assert pad.convert("RGB").getpixel((100, 5)) == (255, 0, 0)
    assert pad.convert("RGB").getpixel((100, 100)) != (255, 0, 0)
    # Crop of a too-small image keeps the box's shape at 1:1 rather than enlarging.
    small = opened(one(src, tmp_path / "crop2", "resize", width=1000, height=500, fit="crop"))
    assert small.size == (640, 320)


def test_resize_decodes_jpeg_in_draft_mode_without_visible_loss(tmp_path):
    src = gen.jpeg(tmp_path / "in" / "big.jpg", (1600, 1200))
    reduced = media.load_source(src, want=(400, 300))
    assert reduced.image.size == (400, 300)  # libjpeg decoded at 1/4 scale
    out = opened(one(src, tmp_path / "out", "resize", width=400, format="png"))
    with Image.open(src) as full:
        reference = full.convert("RGB").resize((400, 300), Image.Resampling.LANCZOS)
    mse = np.mean((np.asarray(out.convert("RGB"), float) - np.asarray(reference, float)) ** 2)
    assert 10 * np.log10(255**2 / mse) > 30  # PSNR in dB: indistinguishable at this size


def test_exif_orientation_is_applied_and_the_tag_dropped(tmp_path):
    src = gen.jpeg(tmp_path / "in" / "turned.jpg", (640, 480), orientation=6)
    with Image.open(src) as stored:
        assert stored.size == (480, 640)
    out = opened(one(src, tmp_path / "out", "resize", width=320))
    assert out.size == (320, 240)
    assert out.getexif().get(0x0112) in (None, 1)


# ---------------------------------------------------------------- convert / quality

@pytest.mark.parametrize("fmt, pillow, suffix", [
    ("jpeg", "JPEG", ".jpg"), ("png", "PNG", ".png"), ("webp", "WEBP", ".webp"),
    ("avif", "AVIF", ".avif"), ("jpg", "JPEG", ".jpg"),
])
def test_convert_writes_each_format(tmp_path, fmt, pillow, suffix):
    src = gen.png(tmp_path / "in" / "chart.png", (320, 240))
    result = one(src, tmp_path / "out", "convert", format=fmt)
    img = opened(result)
    assert (img.format, img.size, Path(result.output).suffix) == (pillow, (320, 240), suffix)


def test_jpeg_quality_setting_is_the_one_encoded(tmp_path):
    src = gen.png(tmp_path / "in" / "chart.png", (320, 240))
    for quality in (40, 75):
        img = opened(one(src, tmp_path / f"q{quality}", "convert", format="jpeg", quality=quality))
        assert img.quantization == gen.jpeg_quality_tables(quality)


def test_webp_and_avif_quality_and_lossless(tmp_path):
    src = gen.jpeg(tmp_path / "in" / "lake.jpg", (640, 480))
    sizes = {}
    for fmt in ("webp", "avif"):
        for quality in (30, 90):
            sizes[fmt, quality] = one(src, tmp_path / f"{fmt}{quality}", "convert", format=fmt,
                                      quality=quality).output_bytes
        assert sizes[fmt, 30] < sizes[fmt, 90]
    lossless = one(src, tmp_path / "ll", "convert", format="webp", lossless=True)
    data = Path(lossless.output).read_bytes()
    assert b"VP8L" in data[:4096] and b"VP8 " not in data[:4096]  # the lossless bitstream
    decoded = np.asarray(Image.open(lossless.output).convert("RGB"), dtype=int)
    original = np.asarray(Image.open(src).convert("RGB"), dtype=int)
    assert np.abs(decoded - original).max() == 0


# ---------------------------------------------------------------- colour and metadata

def _gps(img: Image.Image) -> dict:
    return dict(img.getexif().get_ifd(0x8825))


def test_metadata_kept_by_default_gps_or_all_stripped_on_request(tmp_path):
    src = gen.jpeg(tmp_path / "in" / "summit.jpg", (320, 240), gps=True)
    kept = opened(one(src, tmp_path / "keep", "convert", format="jpeg"))
    assert _gps(kept) and kept.getexif().get(0x010F) == "Canon"
    no_gps = opened(one(src, tmp_path / "nogps", "convert", format="webp", strip_gps=True))
    assert not _gps(no_gps) and no_gps.getexif().get(0x010F) == "Canon"
    bare = opened(one(src, tmp_path / "bare", "convert", format="png", strip_metadata=True))
    assert len(bare.getexif()) == 0
    web = opened(one(src, tmp_path / "web", preset="web_optimized"))
    assert not _gps(web) and web.getexif().get(0x010F) == "Canon"


def test_colour_profile_converted_to_srgb_or_kept(tmp_path):
    src = gen.tagged_jpeg(tmp_path / "in" / "xyz.jpg")
    with Image.open(src) as original:
        profile = original.info["icc_profile"]
        original_pixels = np.asarray(original.convert("RGB"), dtype=int)
    srgb = opened(one(src, tmp_path / "srgb", "convert", format="png"))
    kept = opened(one(src, tmp_path / "keep", "convert", format="png", colour="keep"))
    assert "icc_profile" not in srgb.info
    assert np.abs(np.asarray(srgb, dtype=int) - original_pixels).mean() > 5  # converted
    assert kept.info["icc_profile"] == profile
    assert np.abs(np.asarray(kept, dtype=int) - original_pixels).mean() < 1


def test_cmyk_jpeg_becomes_faithful_rgb(tmp_path):
    src = gen.cmyk_jpeg(tmp_path / "in" / "print.jpg")
    with Image.open(src) as img:
        assert img.mode == "CMYK"
    out = opened(one(src, tmp_path / "out", "convert", format="webp", quality=95))
    assert out.mode == "RGB"
    expected = np.asarray(Image.open(src).convert("RGB"), dtype=int)
    assert np.abs(np.asarray(out, dtype=int) - expected).mean() < 6


def test_16bit_pngs_are_scaled_not_clipped(tmp_path):
    grey = gen.png16_grey(tmp_path / "in" / "ramp16.png", (640, 480))
    with Image.open(grey) as img:
        assert img.mode.startswith("I")
    out = opened(one(grey, tmp_path / "out", "resize", width=320, format="png")).convert("L")
    left, middle, right = (out.getpixel((x, 100)) for x in (2, 160, 317))
    assert left < 10 and 100 < middle < 156 and right > 245
    rgb = gen.png16_rgb(tmp_path / "in" / "rgb48.png")
    assert opened(one(rgb, tmp_path / "out48", "convert", format="jpeg")).size == (320, 240)


def test_animated_gif_uses_first_frame_and_says_so(tmp_path):
    src = gen.animated_gif(tmp_path / "in" / "spinner.gif")
    result = one(src, tmp_path / "out", "convert", format="png")
    first = opened(result).convert("RGB").getpixel((10, 10))
    assert abs(first[0] - 0) < 10 and abs(first[2] - 255) < 10
    assert "first frame" in result.note


# ---------------------------------------------------------------- RAW and video

def test_dng_raw_is_read_by_every_operation(tmp_path):
    src = gen.dng(tmp_path / "in" / "IMG_0001.dng", (320, 240))
    shot = tmp_path / "in2" / "IMG_0002.dng"
    gen.dng(shot, (320, 240), orientation=6)
    for op, params, size in [
        ("resize", {"width": 160}, (160, 120)),
        ("convert", {"format": "webp"}, (320, 240)),
        ("compress", {"quality": 60, "force": True}, (320, 240)),
        ("watermark", {"watermark_text": "© Studio"}, (320, 240)),
        ("thumbnail", {"width": 80, "height": 60}, (80, 60)),
    ]:
        result = one(src, tmp_path / op, op, **params)
        img = opened(result)
        assert img.size == size, op
        assert img.format == ("WEBP" if op == "convert" else "JPEG")
        assert luma(img) > 30  # demosaiced picture, not an empty frame
    turned = opened(one(shot, tmp_path / "turned", "convert", format="png"))
    assert turned.size == (240, 320)  # LibRaw applied the DNG's orientation


def test_a_jpeg_named_like_raw_is_read_as_what_it_is(tmp_path):
    fake = tmp_path / "in" / "IMG_0003.NEF"
    gen.jpeg(tmp_path / "tmp.jpg", (320, 240)).rename(fake.parent.mkdir(parents=True) or fake)
    result = one(fake, tmp_path / "out", "resize", width=160)
    assert opened(result).size == (160, 120)
    assert "not a RAW file" in result.note


@pytest.mark.parametrize("name", ["clip.mp4", "clip.mov", "clip.webm"])
def test_video_thumbnail_is_a_representative_frame_not_the_black_first_one(tmp_path, name):
    import av

    src = gen.video(tmp_path / "in" / name, black_seconds=0.5)
    with av.open(str(src)) as container:  # the clip really opens on black
        first = next(container.decode(video=0)).to_image()
    assert luma(first) < 5
    result = one(src, tmp_path / "out", preset="thumbnail")
    img = opened(result)
    assert (img.format, img.size) == ("JPEG", (320, 240))
    assert luma(img) > 60 and ImageStat.Stat(img.convert("L")).stddev[0] > 20
    assert "video frame at" in result.note


def test_videos_are_refused_by_image_only_operations(tmp_path):
    src = gen.video(tmp_path / "in" / "clip.mp4", seconds=0.5, black_seconds=0)
    result = one(src, tmp_path / "out", "resize", width=100)
    assert result.status == "failed"
    assert result.error == ("clip.mp4: Unsupported for this operation: resize works on images; "
                            "videos can only be thumbnailed")


# ---------------------------------------------------------------- failures in plain words

def test_bad_files_fail_alone_with_plain_reasons(tmp_path):
    folder = tmp_path / "in"
    good = gen.jpeg(folder / "good.jpg", (320, 240))
    files = [
        gen.truncated_jpeg(folder / "truncated.jpg"),
        gen.text_named(folder / "notes.jpg"),
        gen.text_named(folder / "empty.png", ""),
        gen.png_named_jpg(folder / "scan.jpg"),
        good,
    ]
    results = {Path(r.input).name: r for r in run(files, tmp_path / "out", "resize", width=100)}
    assert results["truncated.jpg"].error.startswith("truncated.jpg: Corrupted file: image file is truncated")
    assert results["notes.jpg"].error == "notes.jpg: Unsupported format: not an image Pillow can read"
    movie = one(gen.text_named(folder / "movie.mp4"), tmp_path / "thumbs", "thumbnail")
    assert movie.error.startswith("movie.mp4: Corrupted file: not a readable video")
    assert results["empty.png"].error == "empty.png: Corrupted file: empty (0 bytes)"
    assert results["scan.jpg"].status == "completed"
    assert "really PNG" in results["scan.jpg"].note
    assert Image.open(results["scan.jpg"].output).format == "PNG"  # stays lossless, right suffix
    assert results["scan.jpg"].output.endswith("scan.png")
    assert results["good.jpg"].status == "completed"


def test_unreadable_file_says_permission_denied(tmp_path):
    from tests.unprivileged import as_nobody

    warm = gen.jpeg(tmp_path / "in" / "warm.jpg", (64, 48))
    one(warm, tmp_path / "warm-out", "resize", width=10)  # imports done as root
    src = gen.jpeg(tmp_path / "in" / "locked.jpg", (64, 48))
    src.chmod(0)
    out = tmp_path / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    try:
        assert as_nobody(lambda: str(one(src, out, "resize", width=10).error)) == "locked.jpg: Permission denied"
    finally:
        src.chmod(0o644)


def test_error_words_for_os_faults():
    assert media.describe_error(PermissionError(13, "Permission denied")) == "Permission denied"
    assert media.describe_error(OSError(errno.ENOSPC, "No space")).startswith("Disk full")
    assert media.describe_error(FileNotFoundError(2, "gone")).startswith("File not found")


def test_transient_io_errors_are_retried_and_others_are_not():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError(errno.EIO, "Input/output error")
        return "read"

    assert _retry_io(flaky, delay=0.001) == "read" and len(calls) == 3

    def denied():
        calls.append(1)
        raise PermissionError(errno.EACCES, "Permission denied")

    calls.clear()
    with pytest.raises(PermissionError):
        _retry_io(denied, delay=0.001)
    assert len(calls) == 1


# ---------------------------------------------------------------- compress

def test_compress_to_quality_and_to_target_size(tmp_path):
    src = gen.jpeg(tmp_path / "in" / "lake.jpg", (640, 480), quality=95)
    q60 = one(src, tmp_path / "q", "compress", quality=60)
    assert opened(q60).quantization == gen.jpeg_quality_tables(60)
    assert q60.output_bytes < src.stat().st_size
    target = 30_000
    fitted = one(src, tmp_path / "t", "compress", target_size="30KB")
    assert fitted.output_bytes <= target and fitted.quality >= 30
    # the next quality up would not have fitted: the search found the best one
    above = one(src, tmp_path / "t2", "compress", quality=fitted.quality + 1)
    assert above.output_bytes > target


def test_compress_never_makes_a_file_larger_unless_forced(tmp_path):
    small = gen.jpeg(tmp_path / "in" / "small.jpg", (320, 240), quality=30)
    kept = one(small, tmp_path / "kept", "compress", quality=98)
    assert kept.status == "completed" and "kept the original" in kept.note
    assert Path(kept.output).read_bytes() == small.read_bytes()
    other = one(small, tmp_path / "png", "compress", format="png")
    assert other.status == "skipped" and "force=true" in other.note
    assert not list((tmp_path / "png").glob("*.png"))
    forced = one(small, tmp_path / "forced", "compress", format="png", force=True)
    assert forced.status == "completed" and forced.output_bytes > small.stat().st_size


# ---------------------------------------------------------------- watermark

def test_text_watermark_lands_where_asked(tmp_path):
    src = gen.png(tmp_path / "in" / "chart.png", (400, 300))
    base = Image.open(src).convert("RGB")
    for position, box_inside, box_outside in [
        ("bottom-right", (200, 225, 400, 300), (0, 0, 200, 75)),
        ("top-left", (0, 0, 200, 75), (200, 225, 400, 300)),
    ]:
        out = opened(one(src, tmp_path / position, "watermark", format="png",
                         watermark_text="© Studio North", watermark_size=28,
                         watermark_opacity=0.9, watermark_position=position))
        diff = ImageChops.difference(out.convert("RGB"), base)
        assert diff.crop(box_inside).getbbox() is not None
        assert diff.crop(box_outside).getbbox() is None


def test_watermark_font_opacity_and_logo(tmp_path):
    src = gen.png(tmp_path / "in" / "chart.png", (400, 300))
    base = np.asarray(Image.open(src).convert("RGB"), dtype=int)
    dejavu = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    font = dejavu if Path(dejavu).exists() else None
    strong = opened(one(src, tmp_path / "s", "watermark", format="png", watermark_text="PROOF",
                        watermark_font=font, watermark_size=60, watermark_opacity=1.0,
                        watermark_position="center"))
    faint = opened(one(src, tmp_path / "f", "watermark", format="png", watermark_text="PROOF",
                       watermark_font=font, watermark_size=60, watermark_opacity=0.2,
                       watermark_position="center"))
    strong_diff = np.abs(np.asarray(strong.convert("RGB"), dtype=int) - base).sum()
    faint_diff = np.abs(np.asarray(faint.convert("RGB"), dtype=int) - base).sum()
    assert strong_diff > 3 * faint_diff > 0
    logo_path = tmp_path / "logo.png"
    Image.new("RGBA", (100, 50), (255, 0, 0, 255)).save(logo_path)
    logo = opened(one(src, tmp_path / "l", "watermark", format="png", watermark_logo=str(logo_path),
                      watermark_scale=0.25, watermark_opacity=1.0, watermark_margin=10,
                      watermark_position="top-left")).convert("RGB")
    assert logo.getpixel((20, 20)) == (255, 0, 0)  # 100 px wide logo at (10, 10)
    assert logo.getpixel((200, 150)) == tuple(base[150, 200])
    with pytest.raises(PresetError, match="font not found"):
        from galleryflow.batch.ops import load_font
        load_font("no-such-font.ttf", 20)


# ---------------------------------------------------------------- presets

def test_builtin_presets_give_their_sizes_formats_and_qualities(tmp_path):
    src = gen.jpeg(tmp_path / "in" / "lake.jpg", (1600, 1200))
    expected = {
        "web_optimized": ("WEBP", (1280, 960)),
        "social_media": ("JPEG", (1080, 1080)),
        "thumbnail": ("JPEG", (320, 240)),
        "high_quality": ("PNG", (1600, 1200)),
    }
    for preset, (fmt, size) in expected.items():
        result = one(src, tmp_path / preset, preset=preset)
        img = opened(result)
        assert (img.format, img.size) == (fmt, size), preset
    social = Image.open(next((tmp_path / "social_media").glob("*.jpg")))
    assert social.quantization == gen.jpeg_quality_tables(90, subsampling=0)
    thumb = Image.open(next((tmp_path / "thumbnail").glob("*.jpg")))
    assert thumb.quantization == gen.jpeg_quality_tables(75)
    assert resolve(None, "web_optimized").params.quality == 85


def test_explicit_parameters_override_a_preset(tmp_path):
    src = gen.jpeg(tmp_path / "in" / "lake.jpg", (1600, 1200))
    result = one(src, tmp_path / "out", preset="social_media", quality=70, width=500, height=500)
    img = opened(result)
    assert img.size == (500, 500) and img.quantization == gen.jpeg_quality_tables(70)
    # An explicit operation wins over the preset's, and keeps the preset's other values.
    job = resolve("convert", "web_optimized", {"format": "avif"})
    assert (job.operation, job.params.format, job.params.width, job.params.quality) == \
        ("convert", "avif", 1280, 85)


def test_user_presets_from_settings(gf_home, monkeypatch, tmp_path):
    gf_home.batch.presets = {
        "shop": {"operation": "resize", "width": 800, "format": "webp", "quality": 80},
        "thumbnail": {"operation": "thumbnail", "width": 150, "height": 150, "fit": "crop"},
    }
    shop = resolve(None, "shop")
    assert (shop.operation, shop.params.width, shop.params.format) == ("resize", 800, "webp")
    assert resolve(None, "thumbnail").params.width == 150  # a user preset replaces a built-in


@pytest.mark.parametrize("operation, preset, params, message", [
    (None, None, {}, "no operation"),
    ("sharpen", None, {}, "unknown operation 'sharpen'"),
    (None, "poster", {}, "unknown preset 'poster'"),
    ("resize", None, {}, "resize needs width"),
    ("convert", None, {}, "convert needs a format"),
    ("convert", None, {"format": "bmp"}, "unsupported output format"),
    ("resize", None, {"width": 100, "colour_space": "p3"}, "unknown parameter 'colour_space'"),
    ("resize", None, {"width": "wide"}, "width: Input should be a valid integer"),
    ("watermark", None, {}, "watermark needs watermark_text"),
    ("resize", None, {"width": 100, "fit": "crop"}, "fit=crop needs both width and height"),
])
def test_bad_parameters_are_explained(operation, preset, params, message):
    with pytest.raises(PresetError, match=message):
        resolve(operation, preset, params)


# ---------------------------------------------------------------- naming and reruns

def test_outputs_never_overwrite_inputs_and_collisions_get_a_suffix(tmp_path):
    folder = tmp_path / "photos"
    a_jpg = gen.jpeg(folder / "a.jpg", (320, 240))
    a_png = gen.png(folder / "a.png", (320, 240))
    user_file = folder / "b.webp"
    user_file.write_bytes(b"the user's own file")
    b_jpg = gen.jpeg(folder / "b.jpg", (320, 240), seed=2)
    before = {p: sha256_file(p) for p in (a_jpg, a_png, b_jpg)}
    # Output folder = input folder: a.jpg → a.jpg would overwrite the input.
    results = run([a_jpg, a_png, b_jpg], folder, "convert", format="webp")
    outputs = sorted(Path(r.output).name for r in results)
    assert outputs == ["a-1.webp", "a.webp", "b-1.webp"]
    same = one(a_jpg, folder, "resize", width=100)
    assert Path(same.output).name == "a-1.jpg"
    assert user_file.read_bytes() == b"the user's own file"
    assert all(sha256_file(p) == digest for p, digest in before.items())


def test_a_rerun_skips_complete_outputs_and_redoes_changed_ones(tmp_path):
    folder = tmp_path / "in"
    files = [gen.jpeg(folder / f"p{i}.jpg", (320, 240), seed=i) for i in range(3)]
    first = run(files, tmp_path / "out", "resize", width=100)
    assert [r.status for r in first] == ["completed"] * 3
    mtimes = {r.output: os.stat(r.output).st_mtime_ns for r in first}
    second = run(files, tmp_path / "out", "resize", width=100)
    assert [r.status for r in second] == ["skipped"] * 3
    assert {r.output: os.stat(r.output).st_mtime_ns for r in second} == mtimes
    # New content under the same name, and new parameters: redone, same names.
    gen.jpeg(files[0], (320, 240), seed=99)
    Path(first[1].output).unlink()  # an output deleted by hand is made again
    third = run(files, tmp_path / "out", "resize", width=100)
    assert [r.status for r in third] == ["completed", "completed", "skipped"]
    assert [r.output for r in third] == [r.output for r in first]
    fourth = run(files, tmp_path / "out", "resize", width=80)
    assert [r.status for r in fourth] == ["completed"] * 3
    assert Image.open(fourth[2].output).size == (80, 60)


def test_a_still_image_is_read_once_for_its_key_and_its_pixels(tmp_path, monkeypatch):
    """The rerun key is the digest of the very bytes decoded: the file is read once,
    hashed, and decoded from those bytes (a streamed hash and a second read by the
    decoder used to be two reads, of what could by then be other content)."""
    import io

    import xxhash

    from galleryflow.batch import ops

    photo = gen.jpeg(tmp_path / "in" / "p.jpg", (320, 240), seed=3)
    decoded_from: list[object] = []
    real_decode = media.decode

    def decode(src, **kwargs):
        decoded_from.append(src.getvalue() if isinstance(src, io.BytesIO) else src)
        return real_decode(src, **kwargs)

    monkeypatch.setattr(media, "decode", decode)
    monkeypatch.setattr(ops, "content_digest_file",
                        lambda path: pytest.fail("hashed in a read of its own"))
    keys: list[str] = []
    real_key = ops.cache_key
    monkeypatch.setattr(ops, "cache_key", lambda digest, *a: keys.append(digest) or real_key(digest, *a))
    result = one(photo, tmp_path / "out", "resize", width=100)
    assert result.status == "completed", result.error
    assert decoded_from == [photo.read_bytes()]  # the bytes in hand, not the path again
    assert keys == ["xxh3-128:" + xxhash.xxh3_128_hexdigest(photo.read_bytes())]
    monkeypatch.undo()
    assert ops.content_digest_file(photo) == keys[0]  # streamed (a video, a huge TIFF): the same
    # Keyed on that content: the rerun skips it, new bytes under the name redo it.
    assert one(photo, tmp_path / "out", "resize", width=100).status == "skipped"
    gen.jpeg(photo, (320, 240), seed=4)
    assert one(photo, tmp_path / "out", "resize", width=100).status == "completed"


def test_recursive_glob_streams_and_keeps_folders(tmp_path):
    root = tmp_path / "shoot"
    for sub in ("day1", "day2/raw"):
        gen.jpeg(root / sub / "x.jpg", (64, 48))
    (root / "day1" / ".hidden.jpg").write_bytes(b"")
    gen.jpeg(root / "out" / "old.jpg", (64, 48))  # the output folder inside the tree
    pattern = str(root / "**" / "*.jpg")
    found = sorted(p.relative_to(root).as_posix() for p in iter_inputs(pattern, exclude=root / "out"))
    assert found == ["day1/x.jpg", "day2/raw/x.jpg"]
    assert glob_base(pattern) == root
    results = run(list(iter_inputs(pattern, exclude=root / "out")), root / "out", "resize",
                  width=32, base=glob_base(pattern))
    assert sorted(Path(r.output).relative_to(root / "out").as_posix() for r in results) == \
        ["day1/x.jpg", "day2/raw/x.jpg"]


def test_claims_are_exclusive_across_registries(tmp_path):
    """Two workers (separate registries, as in two processes) asking for one name."""
    out = tmp_path / "out"
    first = OutputRegistry(out).claim(tmp_path / "x" / "a.jpg", out / "a.webp")[0]
    second = OutputRegistry(out).claim(tmp_path / "y" / "a.jpg", out / "a.webp")[0]
    again = OutputRegistry(out).claim(tmp_path / "x" / "a.jpg", out / "a.webp")[0]
    assert (first.name, second.name, again.name) == ("a.webp", "a-1.webp", "a.webp")


# ---------------------------------------------------------------- issue 15: sizes, depth, limits, modes

def test_social_media_is_always_1080_square_enlarged_with_a_note_or_padded(tmp_path):
    small = gen.jpeg(tmp_path / "in" / "small.jpg", (900, 600))
    enlarged = one(small, tmp_path / "social", preset="social_media")
    assert opened(enlarged).size == (1080, 1080)
    assert "enlarged 1.80× to 1080×1080: the image is 900×600" in enlarged.note
    padded = one(small, tmp_path / "padded", preset="social_media", small_images="pad",
                 background="#000000")
    img = opened(padded)
    assert img.size == (1080, 1080) and "padded to 1080×1080" in padded.note
    assert img.convert("L").getpixel((540, 20)) < 8  # the black band above the 900×600 photo
    assert img.convert("L").getpixel((540, 540)) > 8
    big = gen.jpeg(tmp_path / "in" / "big.jpg", (1800, 1200))
    assert one(big, tmp_path / "big", preset="social_media").note is None  # nothing to say


def test_high_quality_keeps_16bit_greyscale_pngs_16bit(tmp_path):
    grey = gen.png16_grey(tmp_path / "in" / "ramp16.png", (640, 480))
    out = opened(one(grey, tmp_path / "hq", preset="high_quality"))
    assert out.mode == "I;16" and out.size == (640, 480)
    low, high = out.getextrema()
    assert low < 300 and high > 65_000  # the whole 16-bit range, not 0–255
    assert opened(one(grey, tmp_path / "web", "convert", format="png")).mode in ("L", "RGB")


def test_an_image_over_the_pixel_limit_is_refused_before_decoding_and_named_a_bomb(tmp_path):
    src = gen.png(tmp_path / "in" / "huge.png", (400, 300))
    job = resolve("thumbnail", None, {})
    spec = JobSpec(job_id="t", operation="thumbnail", params=job.params,
                   base_dir=str(src.parent), output_directory=str(tmp_path / "out"),
                   max_pixels=100_000)
    result = process_file(src, spec, OutputRegistry(tmp_path / "out"))
    assert result.status == "failed"
    assert result.error == ("huge.png: Image too large: 400×300 = 0 MP is over the 0 MP limit, "
                            "which guards against decompression bombs (validation.max_pixels)")
    assert not list((tmp_path / "out").glob("*.jpg"))


def test_outputs_and_claims_land_0644_under_umask_022(tmp_path):
    import stat

    from galleryflow.core.fsutil import default_file_mode

    old = os.umask(0o022)
    default_file_mode.cache_clear()
    try:
        src = gen.jpeg(tmp_path / "in" / "a.jpg", (320, 240))
        result = one(src, tmp_path / "out", "convert", format="webp")
        assert result.status == "completed"
        claims = list((tmp_path / "out" / ".galleryflow-batch" / "claims").glob("*.json"))
        for path in (Path(result.output), *claims):
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    finally:
        os.umask(old)
        default_file_mode.cache_clear()


def test_output_folder_faults_stop_the_job_naming_the_folder(tmp_path, monkeypatch):
    from galleryflow.batch import outputs
    from galleryflow.batch.outputs import OutputError

    src = gen.jpeg(tmp_path / "in" / "a.jpg", (320, 240))
    job = resolve("thumbnail", None, {})

    def spec(out: Path) -> JobSpec:
        return JobSpec(job_id="t", operation="thumbnail", params=job.params,
                       base_dir=str(src.parent), output_directory=str(out))

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match=f"Output folder {blocker} is not a folder"):
        process_file(src, spec(blocker), OutputRegistry(blocker))
    for code, words in ((errno.EROFS, "is on a read-only file system"),
                        (errno.EACCES, "No permission to write in the output folder"),
                        (errno.ENOSPC, "Disk full: no space left")):
        def refuse(handle, data, code=code):  # type: ignore[no-untyped-def]
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(outputs, "_write_all", refuse)
        out = tmp_path / f"out-{code}"
        with pytest.raises(OutputError) as caught:
            process_file(src, spec(out), OutputRegistry(out))
        assert words in str(caught.value) and str(out) in str(caught.value)
        assert not [p for p in out.iterdir() if p.is_file()]  # no partial file left
