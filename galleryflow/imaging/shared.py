"""One decode shared by the consumers of one piece of work.

Stages 5 and 6 both need a reduced copy of each photo: the scoring input at
``scoring.analysis_long_edge`` (512 px) and the model-ready image at
``model_resize.long_edge`` (1024 px). Each decoding the file for itself costs two
decodes per photo. Instead a chunk that runs both opens :func:`sharing_decodes`
at the larger size (``settings.shared_decode_edge``): the first consumer of a
file decodes it there, once (:func:`~galleryflow.imaging.decode.open_reduced`:
draft, EXIF orientation, RGB), and every consumer derives its own size from that
image with :func:`~galleryflow.imaging.geometry.reduce`.

:func:`open_derived` gives the same pixels with or without a session: outside
one it decodes at the same ``decode_edge`` itself and reduces the same way. So a
result never depends on which consumer came first, nor on whether the work was
shared.

The session lives in a context variable, so the code that opens it (a chunk
task) and the code far below it that reads pixels (a cached computation, whose
inputs are small typed values, never images) need not pass images between them.
Worker threads do not inherit a context variable: a caller that fans out to
threads takes :func:`current` and passes it along. Images are held until the
session closes: open one per batch, not per set.

Made ahead (:func:`store_derived`): stage 2 has each new photo's bytes in hand
while it copies them, so it decodes the photo there, once, on its I/O threads,
and leaves the reduced scoring input in a *store* folder (raw pixels: lossless,
and no encoder cost) and the model-ready image under its own name. A session
opened with that ``store`` gives the stored image instead of decoding (it is the
same image: the same decode, reduced by the same call), and removes it once
taken. A photo whose stored input is missing (not made, removed, a rerun) is
decoded as before. Why not hand images from stage 2 to stage 5 in memory: a set
of 1,200 photos at 1024 px is ~2.5 GB; the store holds ~0.5 MB per photo on disk
until its scores are made.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from galleryflow.core.fsutil import atomic_write_bytes
from galleryflow.imaging.decode import open_reduced
from galleryflow.imaging.geometry import reduce

# A stored image: this header line, then its raw pixels (Image.tobytes()).
_MAGIC = b"galleryflow-pixels-1"
_MODES = frozenset({"RGB", "L"})


def stored_path(store: Path, src: Path, long_edge: int, decode_edge: int) -> Path:
    """Where the image derived from ``src`` (its incoming copy: content-addressed, so
    the path names the content) at ``long_edge`` from a decode at ``decode_edge`` is kept."""
    key = hashlib.sha1(str(Path(src).resolve()).encode()).hexdigest()
    return store / f"{key}-{long_edge}-{decode_edge}.pixels"


def store_derived(store: Path, src: Path, image: Image.Image, long_edge: int,
                  decode_edge: int) -> Path:
    """Keep ``image`` (derived from ``src`` as :func:`open_derived` would) for a later
    session opened with ``store``; written atomically."""
    if image.mode not in _MODES:
        image = image.convert("RGB")
    header = b"%s %s %d %d\n" % (_MAGIC, image.mode.encode(), image.width, image.height)
    target = stored_path(store, src, long_edge, decode_edge)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, header + image.tobytes())
    return target


def take_stored(store: Path, src: Path, long_edge: int, decode_edge: int) -> Image.Image | None:
    """The stored image for ``src``, removed from the store; None when there is none
    or it is damaged (then the caller decodes)."""
    path = stored_path(store, src, long_edge, decode_edge)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        os.unlink(path)
    except OSError:
        pass
    head, _, pixels = data.partition(b"\n")
    parts = head.split(b" ")
    if len(parts) != 4 or parts[0] != _MAGIC or parts[1].decode() not in _MODES:
        return None
    mode, width, height = parts[1].decode(), int(parts[2]), int(parts[3])
    if len(pixels) != width * height * len(mode):
        return None  # cut short (a crash mid-write is renamed away; this is damage)
    return Image.frombytes(mode, (width, height), pixels)


@dataclass
class _Entry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    image: Image.Image | None = None
    error: Exception | None = None


class SharedDecodes:
    """Decoded images by file, each decoded once at ``long_edge`` (thread-safe)."""

    def __init__(self, long_edge: int, store: Path | None = None) -> None:
        self.long_edge = long_edge
        self.store = store  # images made ahead by stage 2 (:func:`store_derived`)
        self._entries: dict[Path, _Entry] = {}
        self._lock = threading.Lock()

    def image(self, path: Path) -> Image.Image:
        """``path`` decoded at this session's long edge: decoded on the first call,
        the same image afterwards (shared: read it, never change it).

        A file that fails to decode raises the same error on every call, without
        being decoded again.
        """
        key = Path(path)
        with self._lock:
            entry = self._entries.setdefault(key, _Entry())
        with entry.lock:
            if entry.image is None and entry.error is None:
                try:
                    entry.image = open_reduced(key, self.long_edge)
                except Exception as exc:
                    entry.error = exc
        if entry.error is not None:
            raise entry.error
        assert entry.image is not None
        return entry.image

    def derived(self, path: Path, long_edge: int) -> Image.Image:
        """``path`` with its long edge at most ``long_edge``, from the shared decode.

        A new image when it had to be reduced or came from the store; the shared
        image itself when it is already small enough (read it, never change it).
        """
        if self.store is not None and Path(path) not in self:
            stored = take_stored(self.store, Path(path), long_edge, self.long_edge)
            if stored is not None:
                return stored
        return reduce(self.image(path), long_edge, copy=True)

    def __contains__(self, path: object) -> bool:
        with self._lock:
            return isinstance(path, (str, Path)) and Path(path) in self._entries

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_CURRENT: ContextVar[SharedDecodes | None] = ContextVar("galleryflow_shared_decodes",
                                                        default=None)


@contextmanager
def sharing_decodes(long_edge: int, store: Path | None = None) -> Iterator[SharedDecodes]:
    """Within the block, :func:`open_derived` at ``decode_edge=long_edge`` decodes
    each file once (or takes the image stage 2 left in ``store``); the images are
    dropped when the block ends."""
    shared = SharedDecodes(long_edge, store)
    token = _CURRENT.set(shared)
    try:
        yield shared
    finally:
        _CURRENT.reset(token)
        shared.clear()


def current() -> SharedDecodes | None:
    """The session open in this context (a worker thread has none of its own)."""
    return _CURRENT.get()


def open_derived(src: Path, long_edge: int, decode_edge: int,
                 shared: SharedDecodes | None = None) -> Image.Image:
    """``src`` oriented, RGB, long edge at most ``long_edge``, derived from one decode
    at ``decode_edge`` (>= ``long_edge``).

    From ``shared`` (default: the :func:`current` session) when it decodes at
    ``decode_edge``, else decoded here the same way. The result may be the
    session's image itself: read it, never change it.
    """
    shared = shared if shared is not None else current()
    if shared is not None and shared.long_edge == decode_edge:
        return shared.derived(src, long_edge)
    return reduce(open_reduced(src, decode_edge), long_edge, copy=False)
