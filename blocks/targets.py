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
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import posixpath
import re
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar
from urllib.parse import quote

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from galleryflow.core.fsutil import CHUNK, atomic_path

if TYPE_CHECKING:  # paramiko is the optional `sftp` extra
    import paramiko

log = logging.getLogger(__name__)
T = TypeVar("T")

THUMB_FOLDER = "thumbs"
FOLDERS = ("", THUMB_FOLDER)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
# Hidden and without the image suffix, so no web server serves a half-written file.
TEMP_SUFFIX = ".gfpart"


class TargetError(RuntimeError):
    """A publish target refused or failed an operation (not worth retrying as is)."""


class TargetUnavailable(TargetError):
    """The target could not be reached or the connection dropped: retry later."""


class HostKeyRejected(TargetError):
    """The SFTP server's host key is unknown or does not match known_hosts."""


class UploadVerificationFailed(TargetError):
    """The uploaded temporary file does not have the local file's size."""


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


def _join_under(base: str, dest: RemotePath) -> str:
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


class _TargetCommon:
    """Methods both target blocks share (fields live on each block)."""

    public_base_url: str | None

    def url_for(self, dest: RemotePath) -> str:
        base = (self.public_base_url or "").rstrip("/")
        return f"{base}/{quote(dest.relative)}" if base else dest.relative


# ---------------------------------------------------------------------------- local


class LocalFolderTarget(_TargetCommon, Block):
    """Publish into a folder on this machine (the embedded default: a browsable site)."""

    _block_type_name = "Local Folder Target"
    _block_type_slug = "local-folder-target"
    _description = "galleryflow: publish web images into a local folder (a static site)."

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
        _join_under("/root", dest)  # the same lexical check as remote paths
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


# ----------------------------------------------------------------------------- SFTP


class SftpTarget(_TargetCommon, Block):
    """Publish over SFTP (paramiko), host key checked against known_hosts."""

    _block_type_name = "SFTP Target"
    _block_type_slug = "sftp-target"
    _description = (
        "galleryflow: publish web images to a web server over SFTP. Unknown host keys "
        "are rejected unless known_hosts_policy says otherwise."
    )

    host: str
    port: int = 22
    username: str
    password: SecretStr | None = Field(default=None, description="Password (or key below).")
    private_key: SecretStr | None = Field(
        default=None, description="Private key text (OpenSSH or PEM: Ed25519, ECDSA, RSA)."
    )
    private_key_file: str | None = Field(default=None, description="Path to a private key.")
    private_key_passphrase: SecretStr | None = None
    remote_base: str = Field(description="Folder on the server that holds the gallery files.")
    known_hosts: str | None = Field(
        default=None, description="known_hosts lines for the server (instead of a file)."
    )
    known_hosts_file: str | None = Field(
        default=None, description="known_hosts file (default: ~/.ssh/known_hosts)."
    )
    known_hosts_policy: Literal["reject", "accept_new"] = Field(
        default="reject",
        description="Unknown host key: reject (default) or accept and remember it "
        "(OpenSSH's accept-new). A *changed* key is always rejected.",
    )
    public_base_url: str | None = Field(default=None, description="URL remote_base is served at.")
    connect_timeout: float = 15.0
    reconnect_attempts: int = Field(
        default=3, ge=1, description="Tries per operation when the connection drops mid-chunk."
    )
    full_long_edge: int | None = None
    thumb_long_edge: int | None = None
    jpeg_quality: int | None = Field(default=None, ge=1, le=95)
    keep_gps: bool | None = None

    def describe(self) -> str:
        return (
            f"sftp://{self.username}@{self.host}:{self.port}{posixpath.normpath(self.remote_base)}"
        )

    @contextmanager
    def open_session(self) -> Iterator["SftpSession"]:
        session = SftpSession(self)
        try:
            session.connect()
            yield session
        finally:
            session.close()

    # -- helpers used by the session -------------------------------------------------

    def _pkey(self) -> "paramiko.PKey | None":
        import paramiko

        passphrase = (
            self.private_key_passphrase.get_secret_value() if self.private_key_passphrase else None
        )
        if self.private_key_file:
            try:
                return paramiko.PKey.from_path(Path(self.private_key_file).expanduser(), passphrase)
            except (OSError, paramiko.SSHException, ValueError) as exc:
                raise TargetError(
                    f"{self.describe()}: private key file {self.private_key_file} unreadable: "
                    f"{type(exc).__name__}"
                ) from None
        if not self.private_key:
            return None
        text = self.private_key.get_secret_value()
        for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
            try:
                return cls.from_private_key(io.StringIO(text), password=passphrase)
            except (paramiko.SSHException, ValueError, TypeError):
                continue
        # Never echo the key material: name the fault only.
        raise TargetError(
            f"{self.describe()}: private_key is not an Ed25519, ECDSA or RSA key in OpenSSH/PEM "
            "form, or its passphrase is wrong"
        )

    def _load_known_hosts(self, client: "paramiko.SSHClient") -> str:
        """Load the configured known hosts into ``client``; return where they came from."""
        if self.known_hosts:
            # paramiko loads from files only; a private temp file keeps hashed entries working.
            with tempfile.NamedTemporaryFile("w", suffix=".known_hosts", delete=False) as handle:
                handle.write(self.known_hosts)
                name = handle.name
            try:
                client.get_host_keys().load(name)
            finally:
                os.unlink(name)
            return "the block's known_hosts"
        path = Path(self.known_hosts_file or "~/.ssh/known_hosts").expanduser()
        if path.is_file():
            client.get_host_keys().load(str(path))
        return str(path)


def _missing_key_policy(target: SftpTarget, source: str) -> "paramiko.MissingHostKeyPolicy":
    import paramiko

    class _Reject(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):  # type: ignore[no-untyped-def]
            raise HostKeyRejected(
                f"{target.describe()}: host key {key.get_name()} {key.fingerprint} for {hostname} "
                f"is not in {source}; refusing to connect (add it to known_hosts, or set "
                "known_hosts_policy='accept_new' to trust it on first use)"
            )

    class _AcceptNew(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):  # type: ignore[no-untyped-def]
            client.get_host_keys().add(hostname, key.get_name(), key)
            log.warning(
                "%s: trusting new host key %s %s for %s (known_hosts_policy=accept_new)",
                target.describe(),
                key.get_name(),
                key.fingerprint,
                hostname,
            )
            if not target.known_hosts:
                path = Path(target.known_hosts_file or "~/.ssh/known_hosts").expanduser()
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "a") as handle:
                    handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")

    return _AcceptNew() if target.known_hosts_policy == "accept_new" else _Reject()


class SftpSession:
    """One SSH connection for a chunk's uploads; reconnects if it drops mid-chunk."""

    BLOCK = 256 * 1024

    def __init__(self, target: SftpTarget) -> None:
        self.target = target
        self._ssh: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._dirs: set[str] = set()
        self._posix_rename = True

    # -- connection ---------------------------------------------------------------

    def connect(self) -> None:
        self._retrying(lambda: None, "connect")

    def _connected(self) -> bool:
        transport = self._ssh.get_transport() if self._ssh else None
        return bool(self._sftp and transport and transport.is_active())

    def _connect_once(self) -> None:
        import paramiko

        self.close()
        t = self.target
        ssh = paramiko.SSHClient()
        source = t._load_known_hosts(ssh)
        ssh.set_missing_host_key_policy(_missing_key_policy(t, source))
        try:
            ssh.connect(
                t.host,
                port=t.port,
                username=t.username,
                password=t.password.get_secret_value() if t.password else None,
                pkey=t._pkey(),
                look_for_keys=False,
                allow_agent=False,
                timeout=t.connect_timeout,
                banner_timeout=t.connect_timeout,
                auth_timeout=t.connect_timeout,
            )
            self._sftp = ssh.open_sftp()
            self._sftp.get_channel().settimeout(max(t.connect_timeout, 60.0))
        except TargetError:
            ssh.close()
            raise
        except paramiko.BadHostKeyException as exc:
            ssh.close()
            raise HostKeyRejected(
                f"{t.describe()}: the server's host key {exc.key.get_name()} {exc.key.fingerprint} "
                f"does NOT match the one in {source} (expected {exc.expected_key.fingerprint}); "
                "refusing to connect: the server was reinstalled, or someone is in between"
            ) from None
        except paramiko.AuthenticationException:
            ssh.close()
            raise TargetError(
                f"{t.describe()}: authentication failed (check the key or password)"
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            ssh.close()
            raise TargetUnavailable(
                f"{t.describe()}: cannot connect: {type(exc).__name__}: {exc}"
            ) from None
        self._ssh = ssh
        self._dirs.clear()

    def close(self) -> None:
        for thing in (self._sftp, self._ssh):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # closing a dead connection: nothing to save
                    pass
        self._sftp = None
        self._ssh = None

    def _retrying(self, fn: Callable[[], T], what: str) -> T:
        """Run ``fn`` connected; on a dropped connection reconnect and try again.

        Prefect retries the whole chunk task; this is the finer retry it cannot
        reach, so one blip on file 40 of 64 does not restart the chunk.
        """
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

        for attempt in Retrying(
            retry=retry_if_exception_type(TargetUnavailable),
            stop=stop_after_attempt(self.target.reconnect_attempts),
            wait=wait_exponential(multiplier=0.5, max=8),
            reraise=True,
        ):
            with attempt:
                if not self._connected():
                    self._connect_once()
                return self._classified(fn, what)
        raise AssertionError("unreachable")  # pragma: no cover

    def _classified(self, fn: Callable[[], T], what: str) -> T:
        import paramiko

        try:
            return fn()
        except TargetError:
            raise
        except (paramiko.SSHException, EOFError, socket.timeout) as exc:
            raise TargetUnavailable(
                f"{self.target.describe()}: {what}: connection lost ({exc})"
            ) from None
        except OSError as exc:
            if not self._connected():
                raise TargetUnavailable(
                    f"{self.target.describe()}: {what}: connection lost ({exc})"
                ) from None
            # An SFTP status error on a live connection (permission denied, disk full…).
            raise TargetError(f"{self.target.describe()}: {what}: {exc}") from None

    @property
    def sftp(self) -> "paramiko.SFTPClient":
        assert self._sftp is not None
        return self._sftp

    # -- paths ----------------------------------------------------------------------

    def _abs(self, dest: RemotePath) -> str:
        return _join_under(self.target.remote_base, dest)

    def _ensure_dir(self, directory: str) -> None:
        if directory in self._dirs:
            return
        parts, current = [], directory
        while current not in ("", "/", "."):
            parts.append(current)
            current = posixpath.dirname(current)
        for path in reversed(parts):
            try:
                self.sftp.stat(path)
            except FileNotFoundError:
                try:
                    self.sftp.mkdir(path)
                except OSError:
                    self.sftp.stat(path)  # made meanwhile by another chunk: fine; else raise
        self._dirs.add(directory)

    def _replace(self, tmp: str, final: str) -> None:
        if self._posix_rename:
            try:
                self.sftp.posix_rename(tmp, final)  # atomic, replaces an older version
                return
            except OSError as exc:
                if "unsupported" not in str(exc).lower():
                    raise
                self._posix_rename = False
        # Servers without posix-rename: plain SFTP rename refuses to overwrite. The
        # old file disappears briefly, but a partial file is still never visible.
        try:
            self.sftp.remove(final)
        except FileNotFoundError:
            pass
        self.sftp.rename(tmp, final)

    # -- operations -------------------------------------------------------------------

    def upload(self, local: Path, dest: RemotePath) -> int:
        final = self._abs(dest)
        directory = posixpath.dirname(final)
        # Fixed temporary name: a rerun after a kill overwrites the leftover.
        tmp = posixpath.join(directory, f".{dest.name}{TEMP_SUFFIX}")
        expected = local.stat().st_size

        def attempt() -> int:
            self._ensure_dir(directory)
            with open(local, "rb") as src, self.sftp.open(tmp, "wb") as out:
                out.set_pipelined(True)
                for block in iter(lambda: src.read(self.BLOCK), b""):
                    out.write(block)
            written = self.sftp.stat(tmp).st_size
            if written != expected:
                self.sftp.remove(tmp)
                raise UploadVerificationFailed(
                    f"{self.target.describe()}: {dest}: server has {written} bytes of "
                    f"{expected}; not renamed into place"
                )
            self._replace(tmp, final)
            return expected

        return self._retrying(attempt, f"upload {dest}")

    def size(self, dest: RemotePath) -> int | None:
        path = self._abs(dest)

        def stat() -> int | None:
            import stat as st

            try:
                attrs = self.sftp.stat(path)
            except FileNotFoundError:
                return None
            if attrs.st_mode is not None and not st.S_ISREG(attrs.st_mode):
                raise TargetError(f"{self.target.describe()}: {dest} exists and is not a file")
            return attrs.st_size

        return self._retrying(stat, f"stat {dest}")

    def sha256(self, dest: RemotePath) -> str | None:
        path = self._abs(dest)

        def read() -> str | None:
            digest = hashlib.sha256()
            try:
                with self.sftp.open(path, "rb") as handle:
                    handle.prefetch()
                    for block in iter(lambda: handle.read(self.BLOCK), b""):
                        digest.update(block)
            except FileNotFoundError:
                return None
            return digest.hexdigest()

        return self._retrying(read, f"read {dest}")

    def delete(self, dest: RemotePath) -> bool:
        path = self._abs(dest)

        def remove() -> bool:
            try:
                self.sftp.remove(path)
            except FileNotFoundError:
                return False
            return True

        return self._retrying(remove, f"delete {dest}")
