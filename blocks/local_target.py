"""The local folder target (:class:`LocalFolderTarget`, the embedded default that makes
``make demo`` produce a browsable site folder) and its session; separate from SFTP,
with which it shares only :mod:`blocks.target_base` and :mod:`blocks.remote_paths`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field

from blocks.remote_paths import RemotePath, UnsafeRemotePath, join_under
from blocks.target_base import TargetCommon, UploadVerificationFailed
from galleryflow.core.fsutil import CHUNK, atomic_path


class LocalFolderTarget(TargetCommon, Block):
    """Publish into a folder on this machine (the embedded default: a browsable site)."""

    _block_type_name = "Local Folder Target"
    _block_type_slug = "local-folder-target"
    _description = "galleryflow: publish web images into a local folder (a static site)."
    # Saved block types name the public module (blocks.targets), not this one.
    _code_example = """\
        ```python
        from blocks.targets import LocalFolderTarget

        local_folder_target_block = LocalFolderTarget.load("BLOCK_NAME")
        ```"""

    root: str = Field(description="Folder the site lives in; created when missing.")
    public_base_url: str | None = Field(
        default=None, description="URL the folder is served at (default: its file:// URI)."
    )
    full_long_edge: int | None = Field(default=None, description="Long edge of the web image.")
    thumb_long_edge: int | None = Field(default=None, description="Long edge of the thumbnail.")
    jpeg_quality: int | None = Field(default=None, ge=1, le=95)
    keep_gps: bool | None = Field(default=None, description="Keep GPS in published files.")

    def describe(self) -> str:
        return f"local:{Path(self.root).expanduser().resolve()}"

    def url_for(self, dest: RemotePath) -> str:
        if self.public_base_url:
            return super().url_for(dest)
        return (Path(self.root).expanduser().resolve() / dest.relative).as_uri()

    @contextmanager
    def open_session(self) -> Iterator["LocalFolderSession"]:
        yield LocalFolderSession(Path(self.root).expanduser().resolve())


class LocalFolderSession:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _abs(self, dest: RemotePath) -> Path:
        join_under("/root", dest)  # the same lexical check as remote paths
        path = (self.root / dest.relative).resolve()
        if not path.is_relative_to(self.root):  # a symlinked folder pointing elsewhere
            raise UnsafeRemotePath(f"{dest.relative!r} resolves to {path}, outside {self.root}")
        return path

    def upload(self, local: Path, dest: RemotePath) -> int:
        final = self._abs(dest)
        final.parent.mkdir(parents=True, exist_ok=True)
        # atomic_path's temporaries are `.name.XXXX.jpg.part`; a killed earlier run
        # may have left one behind: it never had the final name, so just drop it.
        for stale in final.parent.glob(f".{final.name}.*.part"):
            stale.unlink(missing_ok=True)
        expected = local.stat().st_size
        with atomic_path(final) as tmp:
            with open(local, "rb") as src, open(tmp, "wb") as out:
                for block in iter(lambda: src.read(CHUNK), b""):
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            written = tmp.stat().st_size
            if written != expected:
                raise UploadVerificationFailed(
                    f"{dest}: wrote {written} bytes of {expected} to {tmp}; not renamed into place"
                )
        return expected

    def size(self, dest: RemotePath) -> int | None:
        path = self._abs(dest)
        return path.stat().st_size if path.is_file() else None

    def sha256(self, dest: RemotePath) -> str | None:
        path = self._abs(dest)
        if not path.is_file():
            return None
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(CHUNK), b""):
                digest.update(block)
        return digest.hexdigest()

    def delete(self, dest: RemotePath) -> bool:
        path = self._abs(dest)
        if path.is_file():
            path.unlink()
            return True
        return False
