"""Real media files for the batch tests, generated on the spot (small, fast).

Each writer makes a genuine file of its kind: JPEG with EXIF and GPS (via
``galleryflow.intake.samples``), PNG with alpha, 16-bit PNGs (grey through Pillow, RGB
written by hand since Pillow cannot write 48-bit PNG), CMYK JPEG, animated GIF,
an MP4/WebM whose first second is black (encoded with PyAV), a Bayer DNG that
LibRaw reads (written by hand: a TIFF with the DNG tags), and broken files.
"""

from __future__ import annotations

import io
import struct
import zlib
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

from galleryflow.intake.samples import SampleSpec, write_sample


def jpeg(path: Path, size: tuple[int, int] = (640, 480), orientation: int = 1,
         gps: bool = True, seed: int = 1, quality: int = 92) -> Path:
    spec = SampleSpec(name=path.name, width=size[0], height=size[1], seed=seed,
                      orientation=orientation, quality=quality,
                      gps=(46.55, 7.98, 2000.0) if gps else None,
                      taken_at=datetime(2026, 6, 14, 11, 0))
    return write_sample(path, spec)


def gradient(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    w, h = size
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    rgb = np.stack([np.broadcast_to(x, (h, w)), np.broadcast_to(y, (h, w)),
                    np.broadcast_to((x + y) / 2, (h, w))], axis=-1)
    rgb = rgb + rng.normal(0, 8, (h, w, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def png(path: Path, size: tuple[int, int] = (640, 480), alpha: bool = False) -> Path:
    img = Image.fromarray(gradient(size), "RGB")
    if alpha:
        mask = Image.new("L", size, 0)
        mask.paste(255, (size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4))
        img.putalpha(mask)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "PNG")
    return path


def png16_grey(path: Path, size: tuple[int, int] = (640, 480)) -> Path:
    """A 16-bit greyscale PNG spanning the whole 0–65535 range."""
    w, h = size
    ramp = np.linspace(0, 65535, w, dtype=np.float64)[None, :].repeat(h, axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ramp.astype(np.uint16)).save(path, "PNG")
    return path


def png16_rgb(path: Path, size: tuple[int, int] = (320, 240)) -> Path:
    """A 48-bit RGB PNG (colour type 2, bit depth 16), written chunk by chunk."""
    w, h = size
    rgb = gradient(size).astype(np.uint16) * 257
    raw = b"".join(b"\x00" + rgb[row].astype(">u2").tobytes() for row in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    blob = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return path


def cmyk_jpeg(path: Path, size: tuple[int, int] = (640, 480)) -> Path:
    img = Image.fromarray(gradient(size), "RGB").convert("CMYK")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=90)
    return path


def swapped_rgb_profile() -> bytes:
    """A real RGB display profile that is not sRGB: littleCMS's sRGB with the red
    and blue colorants exchanged (and renamed), so converting through it to sRGB
    visibly swaps colours. (littleCMS builds no other RGB profile offline.)"""
    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    count = struct.unpack(">I", icc[128:132])[0]
    entries = {}
    for i in range(count):
        at = 132 + 12 * i
        entries[bytes(icc[at:at + 4])] = at
    r, b = entries[b"rXYZ"], entries[b"bXYZ"]
    icc[r + 4:r + 12], icc[b + 4:b + 12] = icc[b + 4:b + 12], icc[r + 4:r + 12]
    icc[84:100] = bytes(16)  # profile id (MD5) no longer matches: mark it "not computed"
    return bytes(icc).replace("sRGB".encode("utf-16-be"), "BRGs".encode("utf-16-be")) \
        .replace(b"sRGB", b"BRGs")


def tagged_jpeg(path: Path, size: tuple[int, int] = (320, 240)) -> Path:
    """A JPEG carrying a non-sRGB ICC profile (see swapped_rgb_profile)."""
    profile = swapped_rgb_profile()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(gradient(size), "RGB").save(path, "JPEG", quality=92, icc_profile=profile)
    return path


def animated_gif(path: Path, size: tuple[int, int] = (320, 240), frames: int = 4) -> Path:
    images = [Image.new("RGB", size, (60 * i, 100, 255 - 60 * i)) for i in range(frames)]
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)
    return path


def video(path: Path, size: tuple[int, int] = (320, 240), seconds: float = 2.0, fps: int = 24,
          black_seconds: float = 0.5, codec: str | None = None) -> Path:
    """A clip that opens on black (a fade-in), then shows a bright textured scene.
    One keyframe only (a long GOP), so a naive "first keyframe" picks black."""
    import av

    suffix = path.suffix.lower()
    codec = codec or {"webm": "libvpx"}.get(suffix.lstrip("."), "libx264")
    path.parent.mkdir(parents=True, exist_ok=True)
    scene = gradient(size, seed=3)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = int(seconds * fps) + 10
        for index in range(int(seconds * fps)):
            if index < black_seconds * fps:
                frame_rgb = np.zeros((size[1], size[0], 3), np.uint8)
            else:
                frame_rgb = np.roll(scene, index * 3, axis=1)
            frame = av.VideoFrame.from_ndarray(frame_rgb, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def dng(path: Path, size: tuple[int, int] = (320, 240), orientation: int = 1) -> Path:
    """A minimal uncompressed DNG: RGGB Bayer mosaic, 12-bit data in 16-bit words.

    No DNG writer is available offline (and Pillow writes none), so the TIFF
    structure is written here with the tags LibRaw needs to identify and
    demosaic it: PhotometricInterpretation CFA, CFA pattern, DNGVersion,
    black/white level, a colour matrix and the as-shot neutral.
    """
    w, h = size
    rgb = gradient(size, seed=5).astype(np.float64) * (4095 / 255)
    cfa = np.zeros((h, w), dtype=np.uint16)
    cfa[0::2, 0::2] = rgb[0::2, 0::2, 0]
    cfa[0::2, 1::2] = rgb[0::2, 1::2, 1]
    cfa[1::2, 0::2] = rgb[1::2, 0::2, 1]
    cfa[1::2, 1::2] = rgb[1::2, 1::2, 2]
    data = cfa.astype("<u2").tobytes()
    entries: list[tuple[int, int, int, bytes]] = []

    def add(tag: int, kind: int, values) -> None:  # type: ignore[no-untyped-def]
        if kind == 2:
            blob = values.encode() + b"\0"
            entries.append((tag, kind, len(blob), blob))
            return
        fmt = {1: "B", 3: "H", 4: "I", 5: "II", 10: "ii"}[kind]
        if kind in (5, 10):
            blob = b"".join(struct.pack("<" + fmt, *v) for v in values)
        else:
            blob = struct.pack(f"<{len(values)}{fmt}", *values)
        entries.append((tag, kind, len(values), blob))

    add(254, 4, [0]); add(256, 4, [w]); add(257, 4, [h]); add(258, 3, [16]); add(259, 3, [1])
    add(262, 3, [32803]); add(271, 2, "Galleryflow"); add(272, 2, "Test DNG"); add(273, 4, [0])
    add(274, 3, [orientation]); add(277, 3, [1]); add(278, 4, [h]); add(279, 4, [len(data)])
    add(284, 3, [1]); add(33421, 3, [2, 2]); add(33422, 1, [0, 1, 1, 2])
    add(50706, 1, [1, 4, 0, 0]); add(50707, 1, [1, 1, 0, 0])
    add(50708, 2, "Galleryflow Test DNG"); add(50714, 4, [0]); add(50717, 4, [4095])
    add(50721, 10, [(1, 1), (0, 1), (0, 1), (0, 1), (1, 1), (0, 1), (0, 1), (0, 1), (1, 1)])
    add(50728, 5, [(1, 1), (1, 1), (1, 1)]); add(50778, 3, [21])
    entries.sort()
    extra_at = 8 + 2 + 12 * len(entries) + 4
    extra = b""
    offsets: dict[int, int] = {}
    for tag, _kind, _count, blob in entries:
        if len(blob) > 4:
            offsets[tag] = extra_at + len(extra)
            extra += blob + (b"\0" if len(blob) % 2 else b"")
    data_at = extra_at + len(extra)
    ifd = b""
    for tag, kind, count, blob in entries:
        if tag == 273:
            ifd += struct.pack("<HHII", tag, kind, count, data_at)
        elif tag in offsets:
            ifd += struct.pack("<HHII", tag, kind, count, offsets[tag])
        else:
            ifd += struct.pack("<HHI", tag, kind, count) + blob.ljust(4, b"\0")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"II*\0" + struct.pack("<IH", 8, len(entries)) + ifd + b"\0\0\0\0"
                     + extra + data)
    return path


def truncated_jpeg(path: Path) -> Path:
    good = io.BytesIO()
    Image.fromarray(gradient((640, 480)), "RGB").save(good, "JPEG", quality=90)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(good.getvalue()[: len(good.getvalue()) // 3])
    return path


def png_named_jpg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(gradient((320, 240)), "RGB").save(path, "PNG")
    return path


def text_named(path: Path, text: str = "shopping list: film, batteries\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def jpeg_quality_tables(quality: int, subsampling: int = 2) -> dict:
    """The quantisation tables Pillow writes at ``quality``: comparing a file's
    tables with these proves which quality setting encoded it."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (128, 128, 128)).save(buffer, "JPEG", quality=quality,
                                                     subsampling=subsampling)
    return Image.open(io.BytesIO(buffer.getvalue())).quantization
