"""One SFTP connection for a chunk's uploads (:class:`SftpSession`): connecting,
reconnecting when it drops mid-chunk, and the atomic upload (temporary hidden name,
size check, rename); separate from the block, which only holds the settings.
"""

from __future__ import annotations

import hashlib
import posixpath
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from blocks.remote_paths import RemotePath, join_under
from blocks.sftp_host_keys import load_known_hosts, missing_key_policy, private_key
from blocks.target_base import (
    HostKeyRejected,
    TargetError,
    TargetUnavailable,
    UploadVerificationFailed,
)

if TYPE_CHECKING:  # paramiko is the optional `sftp` extra
    import paramiko

    from blocks.sftp_target import SftpTarget

T = TypeVar("T")

# Hidden and without the image suffix, so no web server serves a half-written file.
TEMP_SUFFIX = ".gfpart"


class SftpSession:
    """One SSH connection for a chunk's uploads; reconnects if it drops mid-chunk."""

    BLOCK = 256 * 1024

    def __init__(self, target: SftpTarget) -> None:
        self.target = target
        self._ssh: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._dirs: set[str] = set()
        self._listed: dict[str, list[str]] = {}  # temporaries seen per folder
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
        source = load_known_hosts(t, ssh)
        ssh.set_missing_host_key_policy(missing_key_policy(t, source))
        try:
            ssh.connect(
                t.host,
                port=t.port,
                username=t.username,
                password=t.password.get_secret_value() if t.password else None,
                pkey=private_key(t),
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
        self._listed.clear()

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
        return join_under(self.target.remote_base, dest)

    def _ensure_dir(self, directory: str) -> None:
        """Make ``directory`` (the base or ``thumbs/`` below it). The base itself must
        exist: a mistyped ``remote_base`` would otherwise publish into a new folder no
        web server serves, unless the block says ``create_remote_base``."""
        if directory in self._dirs:
            return
        base = posixpath.normpath(self.target.remote_base)
        create_base = False
        try:
            self.sftp.stat(base)
        except FileNotFoundError:
            if not self.target.create_remote_base:
                raise TargetError(
                    f"{self.target.describe()}: remote_base {base} does not exist on the server; "
                    "create it (the folder your web server serves), or set "
                    "create_remote_base=true on the block") from None
            create_base = True
        parts, current = [], directory
        while current not in ("", "/", ".") and (current != base or create_base):
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

    def _drop_stale_temps(self, directory: str, name: str) -> None:
        """Remove temporaries of ``name`` a killed upload left (they never had the final
        name). Only one photo holds a name (the state DB's reservation), so no live
        upload of another photo can be writing them."""
        if directory not in self._listed:
            try:
                self._listed[directory] = [
                    n for n in self.sftp.listdir(directory) if n.endswith(TEMP_SUFFIX)]
            except FileNotFoundError:
                self._listed[directory] = []
        for stale in [n for n in self._listed[directory]
                      if n == f".{name}{TEMP_SUFFIX}" or (n.startswith(f".{name}.") and
                                                          n.endswith(TEMP_SUFFIX))]:
            try:
                self.sftp.remove(posixpath.join(directory, stale))
            except FileNotFoundError:
                pass
            self._listed[directory].remove(stale)

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
        # A temporary name of this upload alone: two uploads never share one (a chunk
        # once renamed another chunk's upload into place under a fixed name).
        tmp = posixpath.join(directory, f".{dest.name}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")
        expected = local.stat().st_size

        def attempt() -> int:
            self._ensure_dir(directory)
            self._drop_stale_temps(directory, dest.name)
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
