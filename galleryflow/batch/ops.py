"""Batch operations: decode → resize → watermark → encode, one file at a time.

The steps are small pure functions on Pillow images; decoding, geometry, colour
and encoding are the one image stack's (:mod:`galleryflow.imaging`: ``media``,
``geometry``, ``encode``, ``formats``), this module adds the batch parameters,
the watermark and the compress search (:func:`resize`, :func:`watermark`,
:func:`encode`, :func:`compress`); :func:`process_file` runs one input through
them and raises only for a fault of the output folder
(:class:`~galleryflow.batch.outputs.OutputError`, which stops the job): whatever
else goes wrong becomes a :class:`FileResult` with a plain-words error naming the
file. :mod:`galleryflow.batch.runner` runs files through it and records each one
as it finishes; plain Python, no Prefect.

Speed (DESIGN.md): decode in JPEG draft mode (or RAW half-size) whenever the
output is smaller; Pillow releases the GIL, so chunks run in threads; AVIF at
speed 8 rather than Pillow's 6 (5x faster, still smaller than WebP).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from PIL import Image, ImageColor, ImageDraw, ImageFont
from pydantic import BaseModel

from galleryflow.batch.outputs import (
    OutputError,
    OutputRegistry,
    cache_key,
    content_digest,
    content_digest_file,
)
from galleryflow.batch.presets import BatchParams, PresetError
from galleryflow.core.fsutil import READ_WHOLE_BYTES
from galleryflow.imaging import encode as encoder
from galleryflow.imaging import formats, geometry, media
from galleryflow.imaging.decode import decode
from galleryflow.imaging.geometry import Plan

# Part of every cache key: bump when an operation's output changes for the same
# input and parameters, so reruns redo the work instead of keeping stale files.
# 2: JPEGs decoded at libjpeg's eighth scales (imaging.jpeg_scale), not only halves.
OPS_VERSION = "2"

LOSSY = formats.LOSSY_KEYS  # output keys with a quality setting (jpeg, webp, avif)
_RESAMPLE = geometry.RESAMPLE


# What became of one input, in the words the status shows.
FileOutcome = Literal["completed", "skipped", "failed", "not processed"]
DEFAULT_MAX_PIXELS = 120_000_000


class JobSpec(BaseModel):
    """What processing any file of one job needs to know (small: goes to each task run
    or worker thread). Everything here is recorded with the job."""

    job_id: str
    operation: str
    params: BatchParams
    base_dir: str
    output_directory: str
    disk_headroom_bytes: int = 0
    max_pixels: int = DEFAULT_MAX_PIXELS


class FileResult(BaseModel):
    input: str
    status: FileOutcome
    output: str | None = None
    error: str | None = None
    note: str | None = None
    input_bytes: int | None = None
    output_bytes: int | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    quality: int | None = None
    seconds: float = 0.0


# ---------------------------------------------------------------- geometry

def _scale_needed(sw: int, sh: int, p: BatchParams) -> float:
    """How much the image must grow to give what the box asks (> 1: it is smaller)."""
    w, h = p.width, p.height
    if w and h:
        return max(w / sw, h / sh) if p.fit in ("crop", "fill") else min(w / sw, h / sh)
    if w:
        return w / sw
    return h / sh if h else 1.0


def plan_resize(sw: int, sh: int, p: BatchParams) -> Plan:
    """Output size for a ``sw``×``sh`` image (display orientation): ``geometry.plan_resize``."""
    return plan_with_note(sw, sh, p)[0]


def plan_with_note(sw: int, sh: int, p: BatchParams) -> tuple[Plan, str | None]:
    """The plan, and a note when an image smaller than the box was enlarged or padded
    (``small_images``)."""
    scale = _scale_needed(sw, sh, p)
    if scale > 1 and p.small_images == "pad" and p.width and p.height:
        return (geometry.plan_resize(sw, sh, p.width, p.height, "pad", False),
                f"padded to {p.width}×{p.height}: the image ({sw}×{sh}) is smaller")
    plan = geometry.plan_resize(sw, sh, p.width, p.height, p.fit, p.enlarge)
    if scale > 1.0005 and p.enlarge:
        width, height = plan.size
        return plan, f"enlarged {scale:.2f}× to {width}×{height}: the image is {sw}×{sh}"
    return plan, None


def resize(img: Image.Image, plan: Plan, background: str = "#ffffff") -> Image.Image:
    return geometry.resize(img, plan, background)


# ---------------------------------------------------------------- watermark

@functools.lru_cache(maxsize=32)
def load_font(name: str | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A TrueType font by file or name; Pillow's scalable built-in one by default."""
    if not name:
        return ImageFont.load_default(size=size)
    try:
        return ImageFont.truetype(name, size)
    except OSError:
        raise PresetError(f"font not found: {name!r} (give a .ttf/.otf path or an installed "
                          "font's file name)") from None


@functools.lru_cache(maxsize=8)
def _load_logo(path: str, mtime: float) -> Image.Image:
    return decode(Path(path)).image.convert("RGBA")


def _place(canvas: tuple[int, int], mark: tuple[int, int], position: str,
           margin: int) -> tuple[int, int]:
    cw, ch = canvas
    mw, mh = mark
    vertical, _, horizontal = position.partition("-") if "-" in position else (position, "", position)
    x = {"left": margin, "right": cw - mw - margin}.get(horizontal, (cw - mw) // 2)
    y = {"top": margin, "bottom": ch - mh - margin}.get(vertical, (ch - mh) // 2)
    return max(0, x), max(0, y)


def _with_opacity(mark: Image.Image, opacity: float) -> Image.Image:
    alpha = mark.getchannel("A").point(lambda a: round(a * opacity))
    mark = mark.copy()
    mark.putalpha(alpha)
    return mark


def text_mark(text: str, p: BatchParams, short_edge: int) -> Image.Image:
    size = p.watermark_size or max(10, round(short_edge * 0.04))
    font = load_font(p.watermark_font, size)
    stroke = max(1, size // 18)
    probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    left, top, right, bottom = probe.textbbox((0, 0), text, font=font, stroke_width=stroke)
    mark = Image.new("RGBA", (right - left, bottom - top), (0, 0, 0, 0))
    fill = ImageColor.getrgb(p.watermark_color)[:3]
    # A thin dark outline keeps white text readable on a bright sky.
    ImageDraw.Draw(mark).text((-left, -top), text, font=font, fill=(*fill, 255),
                              stroke_width=stroke, stroke_fill=(0, 0, 0, 160))
    return mark


def watermark(img: Image.Image, p: BatchParams) -> Image.Image:
    if not (p.watermark_text or p.watermark_logo):
        return img
    short_edge = min(img.size)
    margin = p.watermark_margin if p.watermark_margin is not None else round(short_edge * 0.02)
    if p.watermark_logo is not None:
        logo = _load_logo(str(p.watermark_logo), p.watermark_logo.stat().st_mtime)
        width = max(1, round(img.width * p.watermark_scale))
        height = max(1, round(logo.height * width / logo.width))
        mark = logo.resize((width, height), _RESAMPLE)
    else:
        mark = text_mark(p.watermark_text or "", p, short_edge)
    mark = _with_opacity(mark, p.watermark_opacity)
    base = img.convert("RGBA")
    base.alpha_composite(mark, _place(img.size, mark.size, p.watermark_position, margin))
    return base if img.mode == "RGBA" else base.convert("RGB")


# ---------------------------------------------------------------- encode

def output_format(p: BatchParams, source_format: str, operation: str) -> str:
    if p.format:
        return p.format
    if operation == "thumbnail":
        return "jpeg"
    # Itself where we write it; GIF, TIFF, BMP keep losslessness as PNG; RAW and
    # video frames become JPEG.
    return formats.default_output(source_format)


def _metadata(source: media.Source, p: BatchParams) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if source.icc_profile:
        meta["icc_profile"] = source.icc_profile
    if p.strip_metadata:
        return meta
    if source.exif is not None and len(source.exif):
        exif = source.exif
        if p.strip_gps and 0x8825 in exif:
            exif = Image.Exif()
            exif.load(source.exif.tobytes())
            del exif[0x8825]
        meta["exif"] = exif.tobytes()
    # XMP can repeat the GPS position (exif:GPSLatitude): with strip_gps it goes.
    if source.xmp and not p.strip_gps:
        meta["xmp"] = source.xmp
    return meta


def encode(img: Image.Image, fmt: str, p: BatchParams, meta: dict[str, Any],
           quality: int | None = None) -> bytes:
    """The encoded bytes; ``quality`` overrides the parameters' (compress search).

    Only what :func:`_metadata` decided reaches the file (``imaging.encode``)."""
    q = quality if quality is not None else p.quality_for(fmt)
    return encoder.encode(img, fmt, quality=q if fmt in LOSSY else None, lossless=p.lossless,
                          optimize=p.optimize, progressive=p.progressive,
                          webp_method=p.webp_method, avif_speed=p.avif_speed,
                          png_compress_level=p.png_compress_level, background=p.background,
                          **meta)


def compress(img: Image.Image, fmt: str, p: BatchParams, meta: dict[str, Any]
             ) -> tuple[bytes, int | None, str | None]:
    """Encode at the quality asked, or the best quality whose file fits ``target_size``
    (binary search, ~6 encodes). Returns (bytes, quality used, note)."""
    if not p.target_size or fmt not in LOSSY or p.lossless:
        data = encode(img, fmt, p, meta)
        note = None
        if p.target_size and len(data) > p.target_size:
            note = f"target {_kb(p.target_size)} not reachable losslessly ({_kb(len(data))})"
        return data, (p.quality_for(fmt) if fmt in LOSSY else None), note
    low, high = p.min_quality, p.quality_for(fmt)
    best: tuple[bytes, int] | None = None
    smallest = (encode(img, fmt, p, meta, quality=low), low)
    if len(smallest[0]) > p.target_size:
        return smallest[0], low, (f"target {_kb(p.target_size)} not reached: {_kb(len(smallest[0]))} "
                                  f"at the lowest quality allowed ({low})")
    best = smallest
    low += 1
    while low <= high:
        mid = (low + high) // 2
        data = encode(img, fmt, p, meta, quality=mid)
        if len(data) <= p.target_size:
            best, low = (data, mid), mid + 1
        else:
            high = mid - 1
    return best[0], best[1], None


def _kb(n: int) -> str:
    return f"{n / 1000:.0f} KB"


# ---------------------------------------------------------------- one file

def _retry_io(fn, attempts: int = 3, delay: float = 0.2):  # type: ignore[no-untyped-def]
    """Retry on transient I/O errors (EIO, EAGAIN, ESTALE…): network shares blink."""
    for attempt in range(attempts):
        try:
            return fn()
        except OSError as exc:
            if attempt == attempts - 1 or not media.is_transient(exc):
                raise
            time.sleep(delay * (2**attempt))
    raise AssertionError("unreachable")


def display_size(probe: media.Probe) -> tuple[int, int]:
    return geometry.oriented_size(probe.width, probe.height, probe.orientation)


def estimate_output_bytes(probe: media.Probe, operation: str, p: BatchParams) -> int:
    """A generous guess of the output's size, for the free-disk checks."""
    width, height = plan_resize(*display_size(probe), p).size
    fmt = output_format(p, probe.format, operation)
    return int(width * height * formats.bytes_per_pixel(fmt)) + 64 * 1024


def check_pixels(probe: media.Probe, max_pixels: int) -> None:
    """Refuse an image over the pixel limit before a byte of it is decoded: a small
    compressed file can hold billions of pixels (a decompression bomb)."""
    pixels = probe.width * probe.height
    if max_pixels and pixels > max_pixels:
        raise media.MediaError(
            "Image too large",
            f"{probe.width}×{probe.height} = {pixels / 1e6:.0f} MP is over the "
            f"{max_pixels / 1e6:.0f} MP limit, which guards against decompression bombs "
            "(validation.max_pixels)")


def read_and_key(path: Path) -> tuple[bytes | None, str]:
    """The file's content digest (:func:`~galleryflow.batch.outputs.content_digest`), and
    its bytes when it is a still image small enough to decode from them: one read of
    the file for its key and its pixels, which then also belong to the same content."""
    if media.classify(path) == "image" and path.stat().st_size <= READ_WHOLE_BYTES:
        data = path.read_bytes()
        return data, content_digest(data)
    return None, content_digest_file(path)


def process_file(path: Path, spec: JobSpec, registry: OutputRegistry,
                 probe: media.Probe | None = None) -> FileResult:
    """Run one input through the job's steps. Raises only
    :class:`~galleryflow.batch.outputs.OutputError` (the output folder's fault: the job
    stops); any fault of the file itself is in the result. ``probe``: the file's headers,
    when the caller has read them already (the runner's disk check)."""
    started = time.perf_counter()
    result = FileResult(input=str(path), status="failed")
    p = spec.params
    try:
        result.input_bytes = _retry_io(lambda: path.stat().st_size)
        if result.input_bytes == 0:
            raise media.MediaError("Corrupted file", "empty (0 bytes)")
        if media.classify(path) == "video" and spec.operation != "thumbnail":
            raise media.MediaError("Unsupported for this operation",
                                   f"{spec.operation} works on images; videos can only be thumbnailed")
        if probe is None:
            probe = _retry_io(lambda: media.probe(path))
        check_pixels(probe, spec.max_pixels)
        fmt = output_format(p, probe.format, spec.operation)
        desired = registry.desired(path, Path(spec.base_dir), formats.suffix(fmt))
        output, claim = registry.claim(path, desired)
        plan, size_note = plan_with_note(*display_size(probe), p)
        want = plan.decode if plan.mode != "none" else None
        keep_16bit = p.keep_16bit and fmt == "png"
        # The key is of the bytes that are decoded: one read for both (a decode made
        # ahead brings its hash along).
        ahead = _PREFETCHED.take(path, want, p, keep_16bit)
        if ahead is not None:
            (source, digest), data = ahead, None
        else:
            source = None
            data, digest = _retry_io(lambda: read_and_key(path))
        key = cache_key(digest, spec.operation, p.model_dump(mode="json"), OPS_VERSION)
        result.output, result.format = str(output), fmt
        if registry.complete(output, claim, key):
            result.status, result.note = "skipped", "already done (same content and parameters)"
            result.output_bytes = claim.size
            return result
        if source is None:
            source = _retry_io(lambda: media.load_source(path, want, p.colour, p.video_samples,
                                                         keep_16bit=keep_16bit, data=data))
        data = None  # the pixels are what is used from here on
        image = watermark(resize(source.image, plan, p.background), p)
        meta = _metadata(source, p)
        notes = [*source.notes, *([size_note] if size_note else [])]
        if spec.operation == "compress":
            data, result.quality, note = compress(image, fmt, p, meta)
            if note:
                notes.append(note)
            if len(data) >= result.input_bytes and not p.force:
                data = _keep_original(path, probe, fmt, p, data, result.input_bytes, notes)
                if data is None:
                    result.status = "skipped"
                    result.note = "; ".join(notes)
                    result.output = None
                    return result
        else:
            data = encode(image, fmt, p, meta)
            result.quality = p.quality_for(fmt) if fmt in LOSSY and not p.lossless else None
        _retry_io(lambda: registry.write(output, data))
        registry.record_done(output, claim, key, spec.job_id)
        result.status = "completed"
        result.output_bytes = len(data)
        result.width, result.height = image.size
        result.note = "; ".join(notes) or None
    except OutputError:
        raise  # the folder's fault, not this file's: the job stops
    except Exception as exc:  # one file's fault never stops the batch
        result.status = "failed"
        result.error = f"{path.name}: {media.describe_error(exc)}"
    finally:
        result.seconds = round(time.perf_counter() - started, 4)
    return result


# ---------------------------------------------------------------- decoding ahead

class Prefetch:
    """Decodes of a job's first images made ahead, while the process does something
    else that does not decode (a forked worker importing the DB layer and recording
    the job: Pillow releases the GIL, so the decodes use the other core meanwhile).

    Nothing is written: only the decoded source is kept, under a key of everything
    :func:`process_file` passes to :func:`media.load_source` plus the file's size
    and modification time, and :func:`process_file` takes it instead of decoding
    again (an unused or failed decode is simply done again there). At most
    ``limit`` files and ``max_bytes`` of pixels are held.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: dict[tuple[Any, ...], Future[tuple[media.Source, str] | None]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._held = 0
        # Decodes held and not yet taken: two full-size 24-MP images, or every
        # draft-size one of a thumbnail job's first files.
        self.max_bytes = 160 * 1024 * 1024

    @staticmethod
    def _key(path: Path, want: tuple[int, int] | None, p: BatchParams,
             keep_16bit: bool) -> tuple[Any, ...] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return (str(path), st.st_size, st.st_mtime_ns, want, p.colour, p.video_samples, keep_16bit)

    def start(self, paths: Iterable[Path], spec: JobSpec, workers: int, limit: int) -> None:
        """Decode up to ``limit`` of ``paths`` (still images only) on ``workers`` threads."""
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="prefetch")
        for path in paths:
            if limit <= 0:
                break
            if media.classify(path) != "image":
                continue
            limit -= 1
            self._pool.submit(self._load, path, spec)

    def _load(self, path: Path, spec: JobSpec) -> None:
        p = spec.params
        with self._lock:
            if self._held >= self.max_bytes:
                return
        try:
            probe = media.probe(path)
            check_pixels(probe, spec.max_pixels)
            fmt = output_format(p, probe.format, spec.operation)
            plan, _ = plan_with_note(*display_size(probe), p)
            want = plan.decode if plan.mode != "none" else None
            keep_16bit = p.keep_16bit and fmt == "png"
            key = self._key(path, want, p, keep_16bit)
        except Exception:  # noqa: BLE001 - process_file meets (and reports) it itself
            return
        if key is None:
            return
        future: Future[tuple[media.Source, str] | None] = Future()
        with self._lock:
            self._ready[key] = future
        try:
            data, digest = read_and_key(path)
            source = media.load_source(path, want, p.colour, p.video_samples,
                                       keep_16bit=keep_16bit, data=data)
        except Exception:  # noqa: BLE001 - decoded (and reported) again by process_file
            future.set_result(None)
            return
        with self._lock:
            self._held += _pixel_bytes(source)
        future.set_result((source, digest))

    def take(self, path: Path, want: tuple[int, int] | None, p: BatchParams,
             keep_16bit: bool) -> tuple[media.Source, str] | None:
        """The decode made ahead for exactly this file and request, and the content digest
        of the bytes it was made from, once; else None."""
        if not self._ready:
            return None
        key = self._key(path, want, p, keep_16bit)
        with self._lock:
            future = self._ready.pop(key, None) if key else None
        if future is None:
            return None
        made = future.result()  # being decoded right now: wait for it rather than redo it
        if made is not None:
            with self._lock:
                self._held -= _pixel_bytes(made[0])
        return made

    def stop(self) -> None:
        """Start no more decodes (those under way finish and stay takeable)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def clear(self) -> None:
        self.stop()
        with self._lock:
            self._ready.clear()
            self._held = 0


def _pixel_bytes(source: media.Source) -> int:
    image = source.image
    return len(image.getbands()) * image.width * image.height


_PREFETCHED = Prefetch()


def prefetch(paths: Iterable[Path], spec: JobSpec, workers: int, limit: int) -> Prefetch:
    """Start decoding ahead (see :class:`Prefetch`); process_file takes what it finds."""
    _PREFETCHED.start(paths, spec, workers, limit)
    return _PREFETCHED


def _keep_original(path: Path, probe: media.Probe, fmt: str, p: BatchParams, data: bytes,
                   input_bytes: int, notes: list[str]) -> bytes | None:
    """Compress never makes a file larger: keep the original bytes when that is a
    faithful result (same format, no metadata to strip), else write nothing."""
    same_format = formats.same_output(probe.format) == fmt
    if same_format and not (p.strip_metadata or p.strip_gps):
        notes.append(f"kept the original: re-encoding gave {_kb(len(data))} ≥ {_kb(input_bytes)}")
        return path.read_bytes()
    notes.append(f"not written: the result ({_kb(len(data))}) would be larger than the "
                 f"original ({_kb(input_bytes)}); pass force=true to write it anyway")
    return None


