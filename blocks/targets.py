"""Where published images go: an SFTP server (``SftpTarget``) or a local folder
(``LocalFolderTarget``, the embedded default that makes ``make demo`` produce a
browsable site folder).

Both speak one small interface. ``target.open_session()`` opens the connection
once (per chunk, never per file) and yields a session with:

- ``upload(local, dest)``: write to a temporary hidden name in the destination
  folder, verify the size, then rename onto the final name. A reader (the web
  server) never sees a partial file under the final name, even if the process is
  killed mid-file: the final name only ever appears by rename.
- ``size(dest)`` / ``sha256(dest)``: what is on the target, for resume.
- ``delete(dest)``.

Every destination is a :class:`RemotePath` (a fixed folder below the base plus a
plain file name). A name with a separator, ``..``, a leading dot, an absolute
path or characters outside ``[A-Za-z0-9._-]`` is refused before any connection
is used, and the joined path is checked again to lie under the base.

Secrets (password, private key, passphrase) are ``SecretStr`` fields: Prefect
stores them encrypted and never prints them; :meth:`describe` names the target
without them, and that is all that reaches logs, artifacts and ``publish_log``.

This module is the public face: it re-exports what ``tasks/publish.py``, tests and
saved blocks use (``from blocks.targets import SftpTarget`` keeps working). The
parts live in :mod:`blocks.remote_paths` (path safety), :mod:`blocks.target_base`
(errors, protocols, ``url_for``), :mod:`blocks.local_target`,
:mod:`blocks.sftp_target` (the block), :mod:`blocks.sftp_session` (connection,
reconnects, uploads) and :mod:`blocks.sftp_host_keys` (known hosts, keys).
"""

from __future__ import annotations

from blocks.local_target import LocalFolderSession, LocalFolderTarget
from blocks.remote_paths import (
    FOLDERS,
    THUMB_FOLDER,
    RemotePath,
    UnsafeRemotePath,
    remote_path,
    safe_name,
)
from blocks.sftp_session import TEMP_SUFFIX, SftpSession
from blocks.sftp_target import SftpTarget
from blocks.target_base import (
    HostKeyRejected,
    PublishTarget,
    TargetError,
    TargetSession,
    TargetUnavailable,
    UploadVerificationFailed,
)

__all__ = [
    "FOLDERS", "THUMB_FOLDER", "TEMP_SUFFIX",
    "RemotePath", "UnsafeRemotePath", "remote_path", "safe_name",
    "TargetError", "TargetUnavailable", "HostKeyRejected", "UploadVerificationFailed",
    "TargetSession", "PublishTarget",
    "LocalFolderTarget", "LocalFolderSession", "SftpTarget", "SftpSession",
]
