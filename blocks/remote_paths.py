"""Remote-path safety for publish targets: a destination is a :class:`RemotePath` (a
known folder below the base plus a plain, web-safe file name), checked before any
connection is used; separate so both targets share one set of rules.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

THUMB_FOLDER = "thumbs"
FOLDERS = ("", THUMB_FOLDER)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class UnsafeRemotePath(ValueError):
    """A file name that could leave the target's base folder (or is not a plain name)."""


@dataclass(frozen=True)
class RemotePath:
    """A destination below a target's base: a known folder and a plain file name."""

    folder: str
    name: str

    @property
    def relative(self) -> str:
        return f"{self.folder}/{self.name}" if self.folder else self.name

    def __str__(self) -> str:
        return self.relative


def safe_name(name: str) -> str:
    """Return ``name`` if it is a plain, web-safe file name; raise :class:`UnsafeRemotePath`."""
    if not isinstance(name, str) or not name:
        raise UnsafeRemotePath("empty file name")
    if "/" in name or "\\" in name or "\x00" in name:
        raise UnsafeRemotePath(f"file name {name!r} contains a path separator")
    if name in (".", "..") or ".." in name:
        raise UnsafeRemotePath(f"file name {name!r} would leave the remote base")
    if name.startswith("."):
        raise UnsafeRemotePath(f"file name {name!r} is hidden (starts with a dot)")
    if not _SAFE_NAME.match(name):
        raise UnsafeRemotePath(
            f"file name {name!r} has characters outside A-Z a-z 0-9 . _ - (or is over 200 long)"
        )
    return name


def remote_path(name: str, folder: str = "") -> RemotePath:
    if folder not in FOLDERS:
        raise UnsafeRemotePath(f"folder {folder!r} is not one of {FOLDERS}")
    return RemotePath(folder=folder, name=safe_name(name))


def join_under(base: str, dest: RemotePath) -> str:
    """``base/dest`` as a POSIX path, refusing anything that normalises outside ``base``."""
    root = posixpath.normpath(base) if base else "."
    joined = posixpath.normpath(posixpath.join(root, dest.relative))
    if root == "/":
        inside = joined.startswith("/") and joined != "/"
    else:
        inside = joined.startswith(root.rstrip("/") + "/")
    if not inside:
        raise UnsafeRemotePath(f"{dest.relative!r} resolves to {joined!r}, outside {root!r}")
    return joined
