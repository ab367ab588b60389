"""Reading images: sniff the header, check that the data decodes, and decode once
(draft mode, EXIF orientation applied, reduced) — the one read path every
consumer uses.

Performance notes (DESIGN.md, measured on 24-MP JPEGs, one core): a full decode
is ~0.22 s; JPEG draft mode lets libjpeg decode at 1/2, 1/4 or 1/8 scale, which
makes a 1280-px result ~3× faster and a 320-px one ~4×, with no visible loss.
So every consumer that wants a smaller image says so (``long_edge`` or
``min_size``) and the decoder skips the detail that would be thrown away; a
consumer derives everything else it needs from that one reduced copy.

``Image.verify()`` passes truncated JPEGs. Validation checks a JPEG's structure
(:func:`structure_check`: the end-of-image marker after the scan data) and
decodes the other formats; a JPEG's pixels are decoded once, by stages 5-6.
``LOAD_TRUNCATED_IMAGES`` stays off: a truncated file is an error.

Every pixel decode is counted in :data:`DECODES` by call path and kind
(``check``: validation's 1/8 decode; ``reduced``: a draft-mode decode below the
stored size; ``full``); ``bench/intake.py`` prints decodes per photo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Union

from PIL import Image, ImageOps

from galleryflow.core.fsutil import Tally
from galleryflow.imaging import jpeg_scale
from galleryflow.imaging.colour import to_rgb
from galleryflow.imaging.formats import DRAFT_FORMATS, EXIF_FORMATS
from galleryflow.imaging.geometry import QUARTER_TURNS, draft_request, reduce

# Pillow's own bomb guard is a backstop; validate applies the configured limit first.
Image.MAX_IMAGE_PIXELS = 200_000_000

Source = Union[Path, IO[bytes]]

DECODES = Tally("decodes")
"""Every pixel decode, by call path and kind (check, reduced, full)."""

ORIENTATION_TAG = 0x0112
_TURNS = frozenset(range(2, 9))  # EXIF orientations that move pixels (1: as stored)
_PACKAGE = "galleryflow.imaging"  # a decode is counted under the consumer that asked for it


class UnsupportedFormat(ValueError):
    """The file is an image, of a format the caller does not take (nothing decoded)."""

    def __init__(self, fmt: str) -> None:
        super().__init__(f"{fmt} images are not supported")
        self.format = fmt


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int
    mode: str
    orientation: int = 1  # read only when asked (``read_header(..., orientation=True)``)


def read_header(path: Source, orientation: bool = False) -> ImageHeader:
    """Format, stored size and mode from the header only (no pixel decode); the EXIF
    orientation too when asked."""
    with Image.open(path) as img:
        turn = 1
        if orientation and img.format in EXIF_FORMATS:
            turn = int(img.getexif().get(ORIENTATION_TAG, 1) or 1)
        return ImageHeader(format=img.format or "?", width=img.width, height=img.height,
                           mode=img.mode, orientation=turn)


_EOI = b"\xff\xd9"
_TAIL = 1 << 16


def _jpeg_scan_offset(handle: IO[bytes]) -> int | None:
    """Where the first scan's entropy-coded data starts: the byte after the SOS
    segment, found by walking the marker segments from SOI (Pillow's tile offset is
    0 for JPEG, it hands libjpeg the whole file). None when the file ends first."""
    handle.seek(2)  # after SOI (Pillow opened the file, so it starts with one)
    while True:
        head = handle.read(2)
        while head[:1] == b"\xff" and head[1:2] == b"\xff":  # fill bytes before a marker
            head = head[1:] + handle.read(1)
        if len(head) < 2 or head[0] != 0xFF:
            return None
        marker = head[1]
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # standalone markers carry no length
            continue
        size = handle.read(2)
        if len(size) < 2:
            return None
        length = int.from_bytes(size, "big")
        if marker == 0xDA:
            return handle.tell() - 2 + length
        handle.seek(length - 2, 1)


def jpeg_complete(path: Path) -> bool:
    """Whether a JPEG's data runs to its end-of-image marker (EOI after the scan data).

    Why this is enough for validation, and what it leaves: a JPEG cut short (the
    common damage: an interrupted copy or download, a card pulled out) has no EOI
    after its scan data, because entropy-coded data never contains ``FF D9`` (a
    0xFF there is always stuffed or a restart marker). The EOI of an embedded
    thumbnail sits in a segment before the scan, so it does not count. Trailers
    after the EOI (motion-photo video, MPF pictures, zero padding) are allowed: the
    main image ends before them. This costs a marker walk and a tail read instead of
    a decode; damage *inside* complete scan data is found by the one decode of
    stages 5-6, which fails that photo's row with the file named and the decoder's
    reason (never published, nothing lost).
    """
    with open(path, "rb") as handle:
        offset = _jpeg_scan_offset(handle)
        if offset is None:
            return False
        size = handle.seek(0, 2)
        if offset >= size:
            return False
        handle.seek(max(offset, size - _TAIL))
        if handle.read().rstrip(b"\0").endswith(_EOI):
            return True
        handle.seek(offset)  # a trailer after the EOI: look for the EOI in all the scan data
        return _EOI in handle.read()


def structure_check(path: Path, header: ImageHeader) -> None:
    """Validation's check that the data is all there, at the least cost per format.

    JPEG: the end-of-image marker after the scan data (:func:`jpeg_complete`), no
    decode; the pixels are decoded once, at stages 5-6. Any other format (PNG, TIFF,
    WebP and the rest, rare in camera sets and with no such marker Pillow exposes)
    is decoded here as before (:func:`decode_check`). Raises ``OSError`` with
    "truncated" in its text when the data stops short.
    """
    if header.format == "JPEG":
        if not jpeg_complete(path):
            raise OSError("image file is truncated: no end-of-image marker after the scan data")
        return
    decode_check(path)


def decode_check(path: Source) -> None:
    """Decode the whole file; raise if it is damaged.

    A JPEG is decoded at the smallest DCT scale (1/8): libjpeg still reads every
    byte of the entropy-coded data, so a truncated or corrupt stream fails exactly
    as in a full decode, at about half the cost.
    """
    with Image.open(path) as img:
        if img.format in DRAFT_FORMATS:
            img.draft(img.mode, (1, 1))
        DECODES.count_call(_PACKAGE, "check")
        img.load()


@dataclass
class Decoded:
    """One decoded image: oriented pixels in their decoded mode, and what came with them."""

    image: Image.Image  # EXIF orientation applied (a turned image's EXIF says nothing of it)
    format: str  # Pillow's format name
    stored_size: tuple[int, int]  # width × height in the file, before draft and orientation
    exif: Image.Exif  # the file's EXIF as stored (a TIFF's own tags included)
    frames: int = 1  # > 1: animated, ``image`` is the first frame
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def icc_profile(self) -> bytes | None:
        return self.info.get("icc_profile") or None

    @property
    def xmp(self) -> bytes | None:
        xmp = self.info.get("xmp")
        return xmp.encode("utf-8") if isinstance(xmp, str) else xmp


def _draft_box(img: Image.Image, long_edge: int | None,
               min_size: tuple[int, int] | None) -> tuple[int, int] | None:
    """What to ask libjpeg for, in the stored frame (``min_size`` is in display orientation)."""
    if long_edge:
        return draft_request(img.size, long_edge)
    if min_size:
        w, h = min_size
        if img.getexif().get(ORIENTATION_TAG, 1) in QUARTER_TURNS:
            w, h = h, w  # the request is in the stored frame
        if w < img.width or h < img.height:
            return w, h
    return None


def decode(src: Source, *, long_edge: int | None = None,
           min_size: tuple[int, int] | None = None,
           formats: frozenset[str] | None = None) -> Decoded:
    """Read ``src`` once: header, draft (JPEG), pixels, EXIF orientation.

    ``long_edge``: the caller will bound the long edge to this, so a JPEG may be
    decoded at the largest DCT scale that still covers it (aspect kept).
    ``min_size``: the caller needs at least this width × height (display
    orientation). Without either the image is decoded at full size.
    ``formats``: the Pillow formats the caller takes; any other raises
    :class:`UnsupportedFormat` after reading the header only.
    """
    with Image.open(src) as img:
        fmt = img.format or "?"
        if formats is not None and fmt not in formats:
            raise UnsupportedFormat(fmt)
        stored = img.size
        frames = getattr(img, "n_frames", 1)
        if frames > 1:
            img.seek(0)
        scaled = None
        if fmt in DRAFT_FORMATS:
            box = _draft_box(img, long_edge, min_size)
            if box is not None and fmt == "JPEG" and frames == 1 and jpeg_scale.worthwhile(img, box):
                scaled = _decode_scaled(src, box, img.mode)  # an eighth scale (jpeg_scale)
            if box is not None and scaled is None:
                img.draft(img.mode, box)
        if scaled is None:
            DECODES.count_call(_PACKAGE, "reduced" if img.size != stored else "full")
            img.load()
        else:
            DECODES.count_call(_PACKAGE, "reduced")
        info = dict(img.info)
        exif = img.getexif()  # read (and cached) while the file is open
        if scaled is not None:
            if exif.get(ORIENTATION_TAG, 1) in _TURNS:
                scaled.info = info  # exif_transpose reads the orientation from it
                scaled = ImageOps.exif_transpose(scaled)
            return Decoded(image=scaled, format=fmt, stored_size=stored, exif=exif, info=info)
        if fmt in DRAFT_FORMATS and frames == 1 and exif.get(ORIENTATION_TAG, 1) not in _TURNS:
            # An upright JPEG: the decoded image itself. Pillow's exif_transpose would
            # copy its pixels (24 MB for a 24-MP photo at 1/2 scale: 2-3 ms, and twice
            # the memory while both exist). Once loaded it holds no file, and a JPEG's
            # EXIF is its APP1 block either way.
            oriented = img
        else:
            # A new, plain image (turned, or a copy): nothing of the file object (a
            # TIFF's own tags as EXIF, the frames of an animation) comes along.
            oriented = ImageOps.exif_transpose(img)
    return Decoded(image=oriented, format=fmt, stored_size=stored, exif=exif, frames=frames,
                   info=info)


def _decode_scaled(src: Source, box: tuple[int, int], mode: str) -> Image.Image | None:
    """:func:`jpeg_scale.decode_scaled` on the whole of ``src`` (a path, or a file object
    read from its start; an in-memory one is not copied)."""
    if isinstance(src, (str, Path)):
        return jpeg_scale.decode_scaled(Path(src).read_bytes(), box, mode)
    getbuffer = getattr(src, "getbuffer", None)
    if getbuffer is not None:
        with getbuffer() as view:  # released before anyone writes to the buffer again
            return jpeg_scale.decode_scaled(view, box, mode)
    position = src.tell()
    src.seek(0)
    try:
        return jpeg_scale.decode_scaled(src.read(), box, mode)
    finally:
        src.seek(position)


def open_reduced(src: Source, long_edge: int | None) -> Image.Image:
    """Decode once, EXIF orientation applied, RGB, long edge at most ``long_edge``."""
    rgb = to_rgb(decode(src, long_edge=long_edge).image)
    return reduce(rgb, long_edge, copy=False)
