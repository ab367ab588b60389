"""What every publish target shares: the errors it raises, the session and target
protocols ``tasks/publish.py`` relies on, and the common ``url_for``; separate from
:mod:`blocks.targets` (which re-exports it) so the target modules import it without
an import cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from blocks.remote_paths import RemotePath


class TargetError(RuntimeError):
    """A publish target refused or failed an operation (not worth retrying as is)."""


class TargetUnavailable(TargetError):
    """The target could not be reached or the connection dropped: retry later."""


class HostKeyRejected(TargetError):
    """The SFTP server's host key is unknown or does not match known_hosts."""


class UploadVerificationFailed(TargetError):
    """The uploaded temporary file does not have the local file's size."""


class TargetSession(Protocol):
    def upload(self, local: Path, dest: RemotePath) -> int: ...
    def size(self, dest: RemotePath) -> int | None: ...
    def sha256(self, dest: RemotePath) -> str | None: ...
    def delete(self, dest: RemotePath) -> bool: ...


class PublishTarget(Protocol):
    """What ``tasks/publish.py`` needs from a target block."""

    full_long_edge: int | None
    thumb_long_edge: int | None
    jpeg_quality: int | None
    keep_gps: bool | None

    def describe(self) -> str: ...
    def url_for(self, dest: RemotePath) -> str: ...
    def open_session(self) -> Any: ...  # a context manager yielding a TargetSession


class TargetCommon:
    """Methods both target blocks share (fields live on each block)."""

    public_base_url: str | None

    def url_for(self, dest: RemotePath) -> str:
        base = (self.public_base_url or "").rstrip("/")
        return f"{base}/{quote(dest.relative)}" if base else dest.relative
