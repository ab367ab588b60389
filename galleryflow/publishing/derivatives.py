"""Web derivatives for publishing: a full-size JPEG and a thumbnail per approved row.

From the incoming copy (never the original), decoded once, through the one image
stack (:mod:`galleryflow.imaging`):

- JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale when the web size allows it
  (DESIGN.md: ~3× faster for a 2000-px result); the thumbnail is reduced from the
  full-size image, so one decode serves both;
- EXIF orientation applied to the pixels (the output says orientation 1);
- colour converted to sRGB through the embedded ICC profile (``imaging.colour``;
  a profile that is already sRGB needs no conversion), alpha flattened on white,
  and the sRGB profile embedded, so browsers that ignore profiles still show it right;
- caption, alt text and keywords embedded twice, because sites and photo tools
  read one or the other: IPTC IIM in a Photoshop APP13 segment (Caption-Abstract
  2:120, Keywords 2:25, Headline 2:105, ObjectName 2:05, UTF-8 declared in 1:90)
  and XMP (dc:description, dc:subject, dc:title, photoshop:Headline,
  Iptc4xmpCore:AltTextAccessibility);
- EXIF reduced to an allow-list of photographic facts; GPS only when asked to
  keep it. The source's own XMP/IPTC/maker notes are never copied (they can
  carry location too).

Outputs go to ``work/publish/<row id>/`` under a name derived from a content key
(source sha256, metadata, sizes, code version), written atomically. A rerun after
a crash finds them and reuses them; identical inputs give byte-identical files,
which is what lets a resumed publish recognise an upload it already made.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from xml.sax.saxutils import escape

from PIL import ExifTags, Image
from pydantic import BaseModel, Field

from galleryflow.core.fsutil import read_hashed, sha256_file
from galleryflow.imaging.colour import srgb_profile_bytes, to_rgb, to_srgb
from galleryflow.imaging.decode import decode, read_header
from galleryflow.imaging.encode import write
from galleryflow.imaging.geometry import reduce

# Bump when the output of this module changes, so cached work files are not reused.
# 2: the one image stack (sRGB-tagged sources are not re-transformed, an RGBA
# source's profile is applied, 4:4:4 chroma at quality >= 90, no source comment).
# 3: the thumbnail is reduced with Pillow's thumbnail gap (THUMB_REDUCING_GAP).
# 4: JPEGs decoded at libjpeg's eighth scales (imaging.jpeg_scale): 2048 px from a 24-MP
# photo is resized from a 3/8-scale decode, no longer a 1/2-scale one.
FORMAT_VERSION = "4"

# The thumbnail (~5× smaller than the web image) is reduced the way Pillow's own
# ``Image.thumbnail`` does by default: a box reduction by an integer factor first, then
# Lanczos over the last ≥ 2×. Measured on 24-MP photos (2048 → 400 px): 13 ms instead of
# 30 ms, at most 2 levels from the full Lanczos result (PSNR 54 dB). The web image
# itself keeps the full Lanczos reduction (a ×1.5 step, where no gap applies anyway).
THUMB_REDUCING_GAP = 2.0


class DerivativeError(RuntimeError):
    """The web images for one row could not be built (message names file and fault)."""


class DerivativeSpec(BaseModel):
    full_long_edge: int = Field(ge=16)
    thumb_long_edge: int = Field(ge=16)
    quality: int = Field(ge=1, le=95)
    keep_gps: bool = False


class DerivativeInput(BaseModel):
    row_id: int
    source_path: Path  # the incoming copy
    sha256: str  # of the incoming copy: part of the key
    object_name: str  # the web file name without suffix (IPTC ObjectName, dc:title)
    headline: str | None = None
    caption: str | None = None
    alt_text: str | None = None
    keywords: list[str] = Field(default_factory=list)


class WebImage(BaseModel):
    path: Path
    width: int
    height: int
    size: int
    sha256: str


class Derivatives(BaseModel):
    key: str
    image: WebImage
    thumbnail: WebImage
    reused: bool = False
    warnings: list[str] = Field(default_factory=list)


# ------------------------------------------------------------------------- keys, paths


def derivative_key(item: DerivativeInput, spec: DerivativeSpec) -> str:
    payload = item.model_dump(mode="json", exclude={"row_id", "source_path"})
    payload.update(spec=spec.model_dump(mode="json"), version=FORMAT_VERSION)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def work_folder(work_dir: Path, row_id: int) -> Path:
    return work_dir / "publish" / str(row_id)


def derivative_paths(work_dir: Path, item: DerivativeInput, key: str) -> tuple[Path, Path]:
    folder = work_folder(work_dir, item.row_id)
    return folder / f"{key[:20]}.jpg", folder / f"{key[:20]}-thumb.jpg"


# ----------------------------------------------------------------------------- EXIF

_B = ExifTags.Base
_IFD0_KEEP = [_B.Make, _B.Model, _B.DateTime, _B.Artist, _B.Copyright]
_EXIF_KEEP_NAMES = [
    "DateTimeOriginal",
    "DateTimeDigitized",
    "OffsetTime",
    "OffsetTimeOriginal",
    "OffsetTimeDigitized",
    "SubsecTimeOriginal",
    "ExposureTime",
    "FNumber",
    "ExposureProgram",
    "ISOSpeedRatings",
    "ExposureBiasValue",
    "MeteringMode",
    "Flash",
    "FocalLength",
    "FocalLengthIn35mmFilm",
    "LensMake",
    "LensModel",
    "LensSpecification",
    "WhiteBalance",
    "ExposureMode",
    "SceneCaptureType",
]
_EXIF_KEEP = [getattr(_B, n) for n in _EXIF_KEEP_NAMES if hasattr(_B, n)]


def web_exif(source: Image.Exif, keep_gps: bool) -> bytes:
    """An allow-listed EXIF block: camera facts, orientation 1, sRGB, GPS only if kept."""
    out = Image.Exif()
    for tag in _IFD0_KEEP:
        if tag in source:
            out[tag] = source[tag]
    out[_B.Orientation] = 1
    out[_B.Software] = "galleryflow"
    src_exif = source.get_ifd(ExifTags.IFD.Exif)
    dst_exif = out.get_ifd(ExifTags.IFD.Exif)
    for tag in _EXIF_KEEP:
        if tag in src_exif:
            dst_exif[tag] = src_exif[tag]
    dst_exif[_B.ColorSpace] = 1  # sRGB
    if keep_gps:
        gps = source.get_ifd(ExifTags.IFD.GPSInfo)
        if gps:
            out.get_ifd(ExifTags.IFD.GPSInfo).update(gps)
    return out.tobytes()


# ------------------------------------------------------------------------ IPTC / XMP


def _clip_utf8(text: str, limit: int) -> bytes:
    """UTF-8 bytes of ``text`` cut to ``limit`` without splitting a character."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore").encode("utf-8")


def _iim(record: int, dataset: int, value: bytes) -> bytes:
    if len(value) > 0x7FFF:
        raise ValueError("IIM dataset too long")
    return b"\x1c" + bytes((record, dataset)) + struct.pack(">H", len(value)) + value


def iptc_iim(
    object_name: str, headline: str | None, caption: str | None, keywords: list[str]
) -> bytes:
    """IPTC IIM datasets (record 1 and 2) with the IIM length limits applied."""
    data = _iim(1, 90, b"\x1b%G")  # coded character set: UTF-8
    data += _iim(2, 0, b"\x00\x04")  # record version 4
    data += _iim(2, 5, _clip_utf8(object_name, 64))  # ObjectName
    if headline:
        data += _iim(2, 105, _clip_utf8(headline, 256))  # Headline
    for keyword in keywords:
        data += _iim(2, 25, _clip_utf8(keyword, 64))  # Keywords (repeatable)
    if caption:
        data += _iim(2, 120, _clip_utf8(caption, 2000))  # Caption-Abstract
    return data


def photoshop_app13(iim: bytes) -> bytes:
    """A complete APP13 marker segment holding ``iim`` as 8BIM resource 0x0404."""
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00"  # empty Pascal name, padded
    resource += struct.pack(">I", len(iim)) + iim + (b"\x00" if len(iim) % 2 else b"")
    payload = b"Photoshop 3.0\x00" + resource
    if len(payload) + 2 > 0xFFFF:
        raise ValueError("IPTC block too large for one APP13 segment")
    return b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload


def _xml_text(text: str) -> str:
    # XML 1.0 forbids most control characters; drop them rather than write bad XML.
    cleaned = "".join(ch for ch in text if ch in "\t\n\r" or ord(ch) >= 0x20)
    return escape(cleaned)


def _alt(tag: str, text: str | None) -> str:
    if not text:
        return ""
    return (
        f'   <{tag}><rdf:Alt><rdf:li xml:lang="x-default">{_xml_text(text)}</rdf:li>'
        f"</rdf:Alt></{tag}>\n"
    )


def xmp_packet(
    object_name: str,
    headline: str | None,
    caption: str | None,
    alt_text: str | None,
    keywords: list[str],
) -> bytes:
    subject = ""
    if keywords:
        items = "".join(f"<rdf:li>{_xml_text(k)}</rdf:li>" for k in keywords)
        subject = f"   <dc:subject><rdf:Bag>{items}</rdf:Bag></dc:subject>\n"
    head = (
        f"   <photoshop:Headline>{_xml_text(headline)}</photoshop:Headline>\n" if headline else ""
    )
    body = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:dc="http://purl.org/dc/elements/1.1/"\n'
        '    xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"\n'
        '    xmlns:Iptc4xmpCore="http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/">\n'
        + _alt("dc:title", object_name)
        + _alt("dc:description", caption)
        + subject
        + head
        + _alt("Iptc4xmpCore:AltTextAccessibility", alt_text)
        + "  </rdf:Description>\n </rdf:RDF>\n</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    )
    return body.encode("utf-8")


# ------------------------------------------------------------------------- writing


def _write_jpeg(img: Image.Image, dest: Path, quality: int, **extra: bytes) -> WebImage:
    write(img, dest, "jpeg", quality=quality, optimize=True, progressive=True,
          icc_profile=srgb_profile_bytes(), **extra)
    return WebImage(
        path=dest,
        width=img.width,
        height=img.height,
        size=dest.stat().st_size,
        sha256=sha256_file(dest),
    )


def _existing(path: Path) -> WebImage:
    header = read_header(path)
    width, height = header.width, header.height
    return WebImage(
        path=path, width=width, height=height, size=path.stat().st_size, sha256=sha256_file(path)
    )


# Web images to be made ahead of the publish (:func:`make_ahead`), by the path of the
# full-size image: (claimed, done). The publish builds one nobody has claimed yet
# itself, and waits for one being made, instead of making it twice.
_ahead: dict[Path, tuple[threading.Event, threading.Event]] = {}
_ahead_lock = threading.Lock()
# What the one worker of this process makes next, in the order asked (with who asked:
# drop_ahead), and the worker.
_ahead_queue: deque[tuple[DerivativeInput, DerivativeSpec, Path, Path, str | None]] = deque()
_ahead_workers: set[threading.Thread] = set()
# One while stage 7 runs (one core, bound by Python, keeps the other); the review gate
# raises it to one per core (:func:`ahead_workers`): nothing else needs the cores while
# it waits for a person, and the publish after it is bound by this work.
AHEAD_WORKERS = 1
_ahead_limit = AHEAD_WORKERS


def _claim(full_path: Path) -> threading.Event | None:
    """Take ``full_path``'s made-ahead entry: None when it is unclaimed (or unknown: the
    caller makes it), else the event of the one making it."""
    with _ahead_lock:
        entry = _ahead.get(full_path)
        if entry is None:
            return None
        claimed, done = entry
        if claimed.is_set():
            return done
        claimed.set()
        done.set()  # whoever else asks makes it or finds it (atomic writes)
        _ahead.pop(full_path, None)
        return None


def make_ahead(items: list[DerivativeInput], spec: DerivativeSpec, work_dir: Path,
               owner: str | None = None) -> int:
    """Queue these rows' web images to be made in the background, in turn, by one daemon
    thread per process (:data:`AHEAD_WORKERS`, more within :func:`ahead_workers`; started
    when there is work, ending when there is none).

    Stage 7 calls it as drafts are written (every few rows, so the thread starts with
    the first drafts rather than after a whole chunk), so that the decode and resize of
    each photo (most of a publish) run while the rest of stage 7 (one core, bound by
    Python) and the review gate do. One thread, not one per call: stage 7 and the gate
    keep the other core. Nothing is published: the files are work files under the
    derivative key (source sha256, the words embedded, sizes, version), and the publish
    reuses them only for a row whose reviewed words give the same key; a row edited at
    the gate gets new ones then. The publish makes any this thread has not started yet
    itself (in its own threads) and waits only for the one being made. Every check of
    :func:`make_derivatives` applies (the source must still be the approved bytes); an
    error here is left for the publish to meet and report. ``owner`` (the flow run)
    names the queued images for :func:`drop_ahead`. Returns how many were queued.
    """
    queued = 0
    with _ahead_lock:
        for item in items:
            full_path, _ = derivative_paths(work_dir, item, derivative_key(item, spec))
            if full_path not in _ahead:
                _ahead[full_path] = (threading.Event(), threading.Event())
                _ahead_queue.append((item, spec, work_dir, full_path, owner))
                queued += 1
        if queued:
            _start_workers()
    return queued


def _start_workers() -> None:
    """Up to :data:`_ahead_limit` workers for the queue (called under the lock)."""
    _ahead_workers.intersection_update(w for w in list(_ahead_workers) if w.is_alive())
    while len(_ahead_workers) < min(_ahead_limit, len(_ahead_queue)):
        worker = threading.Thread(target=_make_queued, name="web-images-ahead", daemon=True)
        _ahead_workers.add(worker)
        worker.start()


def drop_ahead(owner: str | None) -> int:
    """Forget the images ``owner`` queued that no worker has started: its publish is over,
    so they are for rows it did not publish (rejected, held back, not reviewed) and would
    only take the cores from whatever this process does next (a long-lived process's
    next run: a 120-photo set held back at the gate left ~100 web images, ~17 CPU-s,
    to slow the run after it by half). One being made is finished. Returns how many
    were dropped; a later publish of those rows makes them itself."""
    dropped = 0
    with _ahead_lock:
        kept: deque[tuple[DerivativeInput, DerivativeSpec, Path, Path, str | None]] = deque()
        for queued in _ahead_queue:
            if queued[4] != owner:
                kept.append(queued)
                continue
            dropped += 1
            entry = _ahead.get(queued[3])
            if entry is not None and not entry[0].is_set():
                _ahead.pop(queued[3], None)
        _ahead_queue.clear()
        _ahead_queue.extend(kept)
    return dropped


@contextmanager
def ahead_workers(count: int) -> Iterator[None]:
    """While the block runs, up to ``count`` threads make the queued web images (the
    review gate: stage 7 is done and a person is reading); one again afterwards, as
    each finishes the photo in hand."""
    global _ahead_limit
    with _ahead_lock:
        previous, _ahead_limit = _ahead_limit, max(1, count)
        _start_workers()
    try:
        yield
    finally:
        with _ahead_lock:
            _ahead_limit = previous


def _make_queued() -> None:
    """The worker of :func:`make_ahead`: the queue in order, until it is empty."""
    while True:
        with _ahead_lock:
            if not _ahead_queue or len(_ahead_workers) > _ahead_limit:
                # Under the lock: a later make_ahead starts another.
                _ahead_workers.discard(threading.current_thread())
                return
            item, spec, work_dir, full_path, _ = _ahead_queue.popleft()
            entry = _ahead.get(full_path)
            if entry is None or entry[0].is_set():
                continue  # the publish took it
            entry[0].set()
        try:
            _make(item, spec, work_dir)
        except Exception:  # noqa: BLE001 - the publish makes it again and reports why
            pass
        finally:
            entry[1].set()


def make_derivatives(item: DerivativeInput, spec: DerivativeSpec, work_dir: Path) -> Derivatives:
    """Build (or reuse) the row's web image and thumbnail in ``work_dir/publish/<row>/``.

    One being made ahead (:func:`make_ahead`) is waited for, then reused."""
    full_path, _ = derivative_paths(work_dir, item, derivative_key(item, spec))
    making = _claim(full_path)
    if making is not None:
        making.wait()
        with _ahead_lock:
            _ahead.pop(full_path, None)
    return _make(item, spec, work_dir)


def _make(item: DerivativeInput, spec: DerivativeSpec, work_dir: Path) -> Derivatives:
    key = derivative_key(item, spec)
    full_path, thumb_path = derivative_paths(work_dir, item, key)
    if full_path.is_file() and thumb_path.is_file():
        try:
            return Derivatives(
                key=key, image=_existing(full_path), thumbnail=_existing(thumb_path), reused=True
            )
        except OSError:
            pass  # damaged leftovers: rebuild below (the writes replace them atomically)
    source = item.source_path
    if not source.is_file():
        raise DerivativeError(f"{source}: the incoming copy is missing; rerun intake for this set")
    # Only approved bytes reach the site: what is derived from must be the content the
    # person approved (the row's sha256), whatever happened to the file since. One read:
    # the bytes hashed are the bytes decoded (a file swapped between a check and a second
    # read would otherwise be decoded unchecked).
    data, actual = read_hashed(source)
    if actual != item.sha256:
        raise DerivativeError(
            f"{source}: the incoming copy is not the photo that was approved (sha256 "
            f"{actual[:12]}…, approved {item.sha256[:12]}…); refused. Run the set again: the "
            "changed file becomes a new photo for review")
    warnings: list[str] = []
    try:
        decoded = decode(source if data is None else io.BytesIO(data),
                         long_edge=spec.full_long_edge)
        exif = decoded.exif  # as stored: web_exif allow-lists it and writes orientation 1
        srgb = to_srgb(decoded.image, decoded.icc_profile)
        if srgb.warning:  # publish as if sRGB, and say so rather than fail the row
            warnings.append(f"{source.name}: {srgb.warning}")
        full = reduce(to_rgb(srgb.image), spec.full_long_edge, copy=False)
        thumb = reduce(full, spec.thumb_long_edge, reducing_gap=THUMB_REDUCING_GAP)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DerivativeError(f"{source}: cannot decode for the web images: {exc}") from exc
    iim = iptc_iim(item.object_name, item.headline, item.caption, item.keywords)
    xmp = xmp_packet(item.object_name, item.headline, item.caption, item.alt_text, item.keywords)
    try:
        app13 = photoshop_app13(iim)
        image = _write_jpeg(
            full, full_path, spec.quality, exif=web_exif(exif, spec.keep_gps), xmp=xmp, extra=app13
        )
        # The thumbnail carries the same words (sites index thumbnails too), no EXIF.
        thumbnail = _write_jpeg(thumb, thumb_path, spec.quality, xmp=xmp, extra=app13)
    except (OSError, ValueError) as exc:
        raise DerivativeError(f"{source}: cannot write the web images: {exc}") from exc
    return Derivatives(key=key, image=image, thumbnail=thumbnail, warnings=warnings)
