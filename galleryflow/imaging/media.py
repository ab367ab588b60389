"""Reading batch inputs: still images, camera RAW (rawpy) and video (PyAV), on top
of :mod:`galleryflow.imaging.decode` and :mod:`galleryflow.imaging.colour`.

One entry point, :func:`load_source`, gives every operation the same thing: an
oriented Pillow image plus the metadata worth carrying over (EXIF, XMP, ICC). It
decodes no more than needed: JPEG draft mode when the result will be smaller
(``decode(min_size=...)``), RAW half-size demosaic when that is still at least as
large as the output, and for video only the frames it scores.

Errors become :class:`MediaError` with plain words a photographer understands
(``Unsupported format``, ``Corrupted file``, ``Permission denied``) via
:func:`describe_error`, so a batch report never shows a traceback.
"""

from __future__ import annotations

import errno
import io
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from galleryflow.imaging import colour
from galleryflow.imaging.decode import DECODES, UnsupportedFormat, decode, read_header
from galleryflow.imaging.formats import INPUT_FORMATS, extensions, kind_of

# errno values worth a retry: the network share blinked, the disk was busy.
TRANSIENT_ERRNOS = frozenset({errno.EIO, errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT,
                              errno.ESTALE, errno.EINTR})


class MediaError(Exception):
    """A file that cannot be processed, with the reason in plain words."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class Source:
    """A decoded input, oriented, ready for the steps."""

    image: Image.Image
    kind: str  # image | raw | video
    format: str  # Pillow format, "RAW" or the container name
    exif: Image.Exif | None = None
    xmp: bytes | None = None
    icc_profile: bytes | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Probe:
    kind: str
    format: str
    width: int
    height: int
    orientation: int = 1


def classify(path: Path) -> str:
    """``raw``, ``video`` or ``image``, by suffix (:func:`formats.kind_of`)."""
    return kind_of(path)


# ---------------------------------------------------------------- probing (headers only)

def probe(path: Path) -> Probe:
    """Kind, format and stored size from headers only (for plans and disk estimates)."""
    kind = classify(path)
    if kind == "raw":
        try:
            return _probe_raw(path)
        except MediaError:
            kind = "image"  # a mislabelled file: let Pillow have a look
    if kind == "video":
        return _probe_video(path)
    header = read_header(path, orientation=True)
    if header.format not in INPUT_FORMATS:
        raise MediaError("Unsupported format", f"{header.format} images are not supported")
    return Probe("image", header.format, header.width, header.height, header.orientation)


def _probe_raw(path: Path) -> Probe:
    import rawpy

    try:
        with rawpy.imread(str(path)) as raw:
            sizes = raw.sizes
            width, height = sizes.width, sizes.height
            if sizes.flip in (5, 6):  # LibRaw's flip codes for 90° turns
                width, height = height, width
            return Probe("raw", "RAW", width, height)
    except (rawpy.LibRawFileUnsupportedError, rawpy.LibRawIOError) as exc:
        raise MediaError("Unsupported format", f"not a RAW file LibRaw can read ({exc})") from exc


def _probe_video(path: Path) -> Probe:
    import av

    try:
        with av.open(str(path)) as container:
            stream = _video_stream(container)
            return Probe("video", container.format.name, stream.codec_context.width,
                         stream.codec_context.height)
    except av.error.FFmpegError as exc:
        raise MediaError("Corrupted file", f"not a readable video ({_av_reason(exc)})") from exc


# ---------------------------------------------------------------- loading

def load_source(path: Path, want: tuple[int, int] | None = None, colour: str = "srgb",
                video_samples: int = 6, keep_16bit: bool = False,
                data: bytes | None = None) -> Source:
    """Decode ``path``, oriented and in RGB(A). ``want`` is the size the output needs
    (display orientation) so the decoder can skip detail that would be thrown away.
    ``keep_16bit``: a 16-bit greyscale image stays 16-bit (``I;16``, for a 16-bit PNG)
    instead of being scaled to 8 bits. ``data``: the still image's bytes, already read
    (decoded from them, not read again)."""
    kind = classify(path)
    if kind == "raw":
        try:
            return _load_raw(path, want)
        except MediaError as exc:
            if exc.reason != "Unsupported format":
                raise
            try:  # a JPEG or TIFF saved under a RAW name: use its real format
                source = _load_image(path, want, colour, keep_16bit)
            except MediaError:
                raise exc from None
            source.notes.append(f"not a RAW file: read as {source.format}")
            return source
    if kind == "video":
        return _load_video(path, want, video_samples)
    return _load_image(path, want, colour, keep_16bit, data)


def _load_image(path: Path, want: tuple[int, int] | None, colour_mode: str,
                keep_16bit: bool = False, data: bytes | None = None) -> Source:
    notes: list[str] = []
    try:
        decoded = decode(path if data is None else io.BytesIO(data), min_size=want,
                         formats=INPUT_FORMATS)
    except UnidentifiedImageError as exc:
        raise MediaError("Unsupported format", "not an image Pillow can read") from exc
    except UnsupportedFormat as exc:
        raise MediaError("Unsupported format", str(exc)) from exc
    fmt = decoded.format
    if path.suffix.lower() not in extensions(fmt) and fmt != "MPO":
        notes.append(f"file is really {fmt} (named {path.suffix or 'without suffix'})")
    if decoded.frames > 1:
        notes.append(f"animated ({decoded.frames} frames): first frame used")
    # The oriented image's EXIF block (Orientation dropped); a TIFF's own tags, which
    # describe the file (strips, sizes), never go into an output.
    exif = decoded.image.getexif() if fmt not in ("GIF", "BMP") else None
    if keep_16bit and decoded.image.mode in colour.SIXTEEN_BIT_MODES and decoded.image.mode != "I":
        return Source(image=decoded.image.convert("I;16") if decoded.image.mode != "I;16"
                      else decoded.image, kind="image", format=fmt, exif=exif or None,
                      xmp=decoded.xmp, icc_profile=decoded.icc_profile,
                      notes=[*notes, "16-bit greyscale kept"])
    image, icc_out, warning = _normalise_colour(decoded.image, decoded.icc_profile, colour_mode)
    if warning:
        notes.append(warning)
    return Source(image=image, kind="image", format=fmt, exif=exif or None, xmp=decoded.xmp,
                  icc_profile=icc_out, notes=notes)


def _normalise_colour(img: Image.Image, icc: bytes | None, colour_mode: str
                      ) -> tuple[Image.Image, bytes | None, str | None]:
    """RGB(A) or L pixels; converted to sRGB through the profile unless asked to keep it.

    CMYK always goes through its profile (no output format we write holds CMYK);
    16-bit greys scale to 8 bits rather than clipping (``colour.to_rgb``). Returns
    (image, the profile the output keeps, a warning about an unusable profile).
    """
    warning = None
    if icc is not None and (colour_mode == "srgb" or img.mode == "CMYK"):
        result = colour.to_srgb(img, icc)
        if result.converted:
            return result.image, None, None
        if result.warning:  # unusable: plain conversion, the profile dropped
            warning, icc = result.warning, None
    if colour.has_alpha(img):
        return img.convert("RGBA"), icc, warning
    if img.mode == "L":
        return img, icc, warning
    return colour.to_rgb(img), icc, warning


def _load_raw(path: Path, want: tuple[int, int] | None) -> Source:
    import rawpy

    try:
        with rawpy.imread(str(path)) as raw:
            sizes = raw.sizes
            # Half-size demosaic is 4x less work: take it whenever the output is at
            # most half the sensor size on both sides.
            half = bool(want) and want[0] * 2 <= max(sizes.width, sizes.height) and \
                want[1] * 2 <= max(sizes.width, sizes.height)
            DECODES.count_call("galleryflow.imaging", "raw half-size" if half else "raw full")
            rgb = raw.postprocess(use_camera_wb=True, output_bps=8, half_size=half)
    except rawpy.LibRawFileUnsupportedError as exc:
        raise MediaError("Unsupported format", "not a RAW file LibRaw can read") from exc
    except (rawpy.LibRawIOError, rawpy.LibRawDataError) as exc:
        raise MediaError("Corrupted file", f"RAW data cannot be decoded ({exc})") from exc
    except rawpy.LibRawError as exc:
        raise MediaError("Corrupted file", f"RAW decode failed ({exc})") from exc
    # LibRaw has applied the camera's orientation already.
    return Source(image=Image.fromarray(rgb, "RGB"), kind="raw", format="RAW",
                  notes=["RAW: camera white balance, half-size demosaic" if half else
                         "RAW: camera white balance"])


# ---------------------------------------------------------------- video

def _video_stream(container):  # type: ignore[no-untyped-def]
    if not container.streams.video:
        raise MediaError("Unsupported format", "the file has no video stream")
    return container.streams.video[0]


def _av_reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def frame_score(img: Image.Image) -> float:
    """How much a frame shows: contrast (luma standard deviation), with black, white
    and flat frames (fades, title cards) pushed to the bottom."""
    from PIL import ImageStat

    small = img.convert("L").resize((64, 36))
    stat = ImageStat.Stat(small)
    mean, std = stat.mean[0], stat.stddev[0]
    if mean < 16 or mean > 240 or std < 4:
        return std / 100.0  # near-black / near-white / flat: only a last resort
    # Prefer mid-tones a little: an over- or under-exposed frame is a poor thumbnail.
    return std * (1.0 - abs(mean - 128) / 256)


def _load_video(path: Path, want: tuple[int, int] | None, samples: int) -> Source:
    import av

    try:
        with av.open(str(path)) as container:
            stream = _video_stream(container)
            stream.thread_type = "AUTO"
            best: tuple[float, Image.Image, float] | None = None
            DECODES.count_call("galleryflow.imaging", "video frames")
            for seconds, frame in _candidate_frames(container, stream, samples):
                img = frame.to_image()
                score = frame_score(img)
                if best is None or score > best[0]:
                    best = (score, img, seconds)
            if best is None:
                raise MediaError("Corrupted file", "no decodable video frame")
            fmt = container.format.name
    except av.error.FFmpegError as exc:
        raise MediaError("Corrupted file", f"video cannot be decoded ({_av_reason(exc)})") from exc
    image = best[1]
    if want and max(image.size) > 2 * max(want):
        image.thumbnail((2 * want[0], 2 * want[1]), Image.Resampling.BILINEAR)
    return Source(image=image.convert("RGB"), kind="video", format=fmt,
                  notes=[f"video frame at {best[2]:.2f} s"])


def _candidate_frames(container, stream, samples: int):  # type: ignore[no-untyped-def]
    """Frames at evenly spread points of the video (skipping the very start, where
    fades from black live). Each seek lands on the keyframe before the point and
    decodes forward to it, so this works with one keyframe per clip too."""
    base = stream.time_base
    duration = None
    if stream.duration is not None and base is not None:
        duration = float(stream.duration * base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    if not duration or duration <= 0 or base is None:
        # No duration (some WebM): the first frames that decode, in order.
        for index, frame in enumerate(container.decode(stream)):
            if index >= samples * 10:
                return
            if index % 5 == 0:
                yield float(frame.time or 0.0), frame
        return
    start = float(stream.start_time * base) if stream.start_time is not None else 0.0
    for k in range(samples):
        target = start + duration * (0.1 + 0.8 * k / max(1, samples - 1))
        frame = _frame_at(container, stream, target)
        if frame is not None:
            yield target, frame


def _frame_at(container, stream, seconds: float, max_decode: int = 600):  # type: ignore[no-untyped-def]
    base = stream.time_base
    container.seek(int(seconds / base), stream=stream, backward=True, any_frame=False)
    last = None
    for index, frame in enumerate(container.decode(stream)):
        last = frame
        if frame.time is not None and frame.time >= seconds - 1e-3:
            return frame
        if index >= max_decode:  # a very long GOP: settle for what we have
            break
    return last


# ---------------------------------------------------------------- errors in plain words

def describe_error(exc: BaseException) -> str:
    """One line a photographer understands: the kind of fault, then the detail."""
    if isinstance(exc, MediaError):
        return str(exc)
    if isinstance(exc, ModuleNotFoundError) and exc.name in ("av", "rawpy"):
        return ("Unsupported format: RAW and video need the batch extra "
                "(pip install 'galleryflow[batch]')")
    if isinstance(exc, Image.DecompressionBombError):
        return f"Image too large: {exc}"
    if isinstance(exc, PermissionError):
        return "Permission denied"
    if isinstance(exc, FileNotFoundError):
        return "File not found: moved or deleted while the job ran"
    if isinstance(exc, IsADirectoryError):
        return "Not a file: it is a folder"
    if isinstance(exc, UnidentifiedImageError):
        return "Unsupported format: not an image Pillow can read"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "Disk full: no space left for the output"
    if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
        return f"I/O error (gave up after retries): {exc.strerror or exc}"
    if isinstance(exc, (OSError, SyntaxError, ValueError, EOFError)):
        # Pillow reports damaged data as OSError ("image file is truncated",
        # "broken data stream"), SyntaxError (bad header) or ValueError.
        return f"Corrupted file: {_short(exc)}"
    return f"Processing error: {type(exc).__name__}: {_short(exc)}"


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "…"


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and not isinstance(exc, (PermissionError, FileNotFoundError)) \
        and exc.errno in TRANSIENT_ERRNOS
