"""File-system helpers: hashing and atomic writes.

Every file galleryflow writes goes to a temporary name in the destination folder
and is renamed into place (``os.replace`` is atomic within one file system), so a
crash never leaves a partial file under a final name.

Hashing a photo costs a full read, so every hash is counted in :data:`HASHES`
(by call path, see :class:`Tally`); ``bench/intake.py`` prints hashes per photo.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

CHUNK = 1024 * 1024


class Tally:
    """Counts of expensive work (hashes, decodes) by call path; thread-safe, cheap.

    A key is the *call path*: the first module outside the counting package, then
    the counting functions it went through, e.g. ``tasks.intake › copy_verified``.
    Benchmarks read :meth:`snapshot` and :meth:`reset` between runs; nothing in
    the pipeline depends on the counts.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def count_call(self, inside: str, kind: str = "", n: int = 1) -> None:
        """Count one event under the current call path (see :func:`call_path`)."""
        key = call_path(inside, depth=2)
        self.add(f"{key} [{kind}]" if kind else key, n)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


def call_path(inside: str, depth: int = 1) -> str:
    """``caller-module › f › g``: the functions of modules under ``inside`` on the
    stack (outermost first), after the first module outside it that called them."""
    frame = sys._getframe(depth)
    names: list[str] = []
    while frame is not None:
        module = frame.f_globals.get("__name__", "?")
        if module != inside and not module.startswith(inside + "."):
            break
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    caller = frame.f_globals.get("__name__", "?") if frame is not None else "?"
    return " › ".join([caller, *reversed(names)])


class FileStamp(NamedTuple):
    """What a file looked like on disk: its size and modification time (ns).

    A cheap identity check, not a proof of content: a file galleryflow wrote and
    hashed once (an incoming copy) is carried by that sha256 afterwards, and a
    later stage only checks that the file on disk still has the stamp recorded
    then. Rewriting the file changes its mtime (and usually its size).
    """

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, file: Path | int) -> "FileStamp":
        """The stamp of a path, or of an open file descriptor."""
        st = os.fstat(file) if isinstance(file, int) else os.stat(file)
        return cls(st.st_size, st.st_mtime_ns)

    def describe(self) -> str:
        when = datetime.fromtimestamp(self.mtime_ns / 1e9, timezone.utc)
        return f"{self.size} bytes, modified {when:%Y-%m-%d %H:%M:%S.%f} UTC"


HASHES = Tally("hashes")
"""Every full sha256 of a file's bytes computed here, by call path."""


def sha256_file(path: Path) -> str:
    HASHES.count_call(__name__)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """The sha256 of a file's bytes already read (counted as a hash of it)."""
    HASHES.count_call(__name__)
    return hashlib.sha256(data).hexdigest()


# A file up to this size is read whole by :func:`read_hashed` (a 24-MP JPEG is ~6-15 MB);
# a larger one (a big TIFF) is hashed as a stream instead of held in memory.
READ_WHOLE_BYTES = 64 * 1024 * 1024


def read_hashed(path: Path, max_bytes: int = READ_WHOLE_BYTES) -> tuple[bytes | None, str]:
    """``path``'s sha256, and its bytes when it holds at most ``max_bytes``: a caller that
    decodes from those bytes reads the file once, and decodes exactly what was hashed.
    A larger file is hashed as a stream (its bytes: None: decode it from the file)."""
    if path.stat().st_size <= max_bytes:
        data = path.read_bytes()
        return data, sha256_bytes(data)
    return None, sha256_file(path)


@functools.cache
def default_file_mode() -> int:
    """The mode a plain ``open(..., "w")`` would give a new file: 0o666 less the umask.

    ``mkstemp`` creates its files 0600 whatever the umask, so every atomic write
    would otherwise land unreadable for a web server running as another user.
    The umask is read from ``/proc/self/status`` (Linux 4.7+) because the only
    portable way, ``os.umask``, sets it process-wide for a moment, which races
    with other threads creating files. Read once: nothing here changes it.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(dest: Path, suffix: str | None = None, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` on success.

    The temporary name starts with ``.`` and ends with ``.part`` so that nothing
    that lists images (validate, watch, the site) mistakes it for one. The
    caller's writer sees ``suffix`` (default: ``dest``'s) so format detection by
    extension still works. The file lands with ``mode`` (default: what the umask
    gives a new file, 0644 under 022).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{dest.name}.", suffix=(suffix or dest.suffix) + ".part", dir=dest.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, default_file_mode() if mode is None else mode)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(dest: Path, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(dest: Path, text: str) -> None:
    atomic_write_bytes(dest, text.encode("utf-8"))


def copy_verified(src: Path, dest: Path, mode: int = 0o644) -> str:
    """Copy ``src`` to ``dest`` atomically and verify the copy; return its sha256.

    The source is hashed while it is copied: that one read is the photo's one full
    hash. The copy is verified without reading it back: after ``fsync`` the written
    file must hold exactly the bytes that were read, as many as the source holds,
    and the source must not have changed (size, mtime) while it was read. A short
    write, a source that changed meanwhile, or any error on the way (ENOSPC at
    ``fsync`` included) raises and leaves nothing at ``dest``.
    """
    with atomic_path(dest, mode=mode) as tmp:
        HASHES.count_call(__name__, "while copying")
        digest = hashlib.sha256()
        copied = 0
        with open(src, "rb") as reader, open(tmp, "wb") as writer:
            before = os.fstat(reader.fileno())
            for block in iter(lambda: reader.read(CHUNK), b""):
                writer.write(block)
                digest.update(block)
                copied += len(block)
            writer.flush()
            os.fsync(writer.fileno())
            written = os.fstat(writer.fileno()).st_size
            after = os.fstat(reader.fileno())
        if not written == copied == after.st_size:
            raise IOError(
                f"{src}: copy verification failed (read {copied} bytes of {after.st_size}, "
                f"{written} on disk after fsync)"
            )
        if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
            raise IOError(f"{src}: copy verification failed (the original changed while "
                          "it was copied)")
        shutil.copystat(src, tmp)  # times; the mode is set by atomic_path (the
        # original may be read-only; our copy need not be)
    return digest.hexdigest()


def free_bytes(path: Path) -> int:
    """Free space on the file system holding ``path`` (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free
