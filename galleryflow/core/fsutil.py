"""File-system helpers: hashing and atomic writes.

Every file galleryflow writes goes to a temporary name in the destination folder
and is renamed into place (``os.replace`` is atomic within one file system), so a
crash never leaves a partial file under a final name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHUNK = 1024 * 1024


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_path(dest: Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` on success.

    The temporary name starts with ``.`` and ends with ``.part`` so that nothing
    that lists images (validate, watch, the site) mistakes it for one. The
    caller's writer sees ``suffix`` (default: ``dest``'s) so format detection by
    extension still works.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{dest.name}.", suffix=(suffix or dest.suffix) + ".part", dir=dest.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
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

    The source is hashed while it is copied (one read), the written file is hashed
    again from disk, and the two must agree; otherwise ``IOError`` is raised and
    nothing is left at ``dest``.
    """
    with atomic_path(dest) as tmp:
        digest = hashlib.sha256()
        with open(src, "rb") as reader, open(tmp, "wb") as writer:
            for block in iter(lambda: reader.read(CHUNK), b""):
                writer.write(block)
                digest.update(block)
            writer.flush()
            os.fsync(writer.fileno())
        source_sha, written_sha = digest.hexdigest(), sha256_file(tmp)
        if written_sha != source_sha:
            raise IOError(
                f"{src}: copy verification failed (read sha256 {source_sha[:12]}…, "
                f"wrote {written_sha[:12]}…)"
            )
        shutil.copystat(src, tmp)
        os.chmod(tmp, mode)  # the original may be read-only; our copy need not be
    return source_sha


def free_bytes(path: Path) -> int:
    """Free space on the file system holding ``path`` (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free
