"""An OpenSSH SFTP server for the tests: ``GALLERYFLOW_TEST_SFTP`` or a private sshd.

Rule of tests/services (see ``tests/services/__init__.py``):

1. ``GALLERYFLOW_TEST_SFTP`` names a running server, as six colon-separated
   fields::

       GALLERYFLOW_TEST_SFTP=host:port:user:private_key_file:known_hosts_file:base_dir

   ``private_key_file`` is an unencrypted OpenSSH/PEM key the server accepts for
   ``user``; ``known_hosts_file`` holds the server's host key (OpenSSH format,
   ``[host]:port`` for a port other than 22); ``base_dir`` is an absolute remote
   directory the user may write in (every test makes its own subdirectory).
2. otherwise ``/usr/sbin/sshd`` (Debian ``openssh-server``) is started privately:
   ``sshd -D -f <temp config>`` on a free loopback port, with a generated host
   key, one authorised client key (key login only, no passwords), ``Subsystem
   sftp internal-sftp``, ``StrictModes no``, pid file and log in the temp dir.
   Running as root it allows root login with that key only, on loopback only.
3. otherwise the tests skip through :func:`tests.services.unavailable` (a
   failure under ``GALLERYFLOW_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.services import free_port, stop_process, unavailable

ENV = "GALLERYFLOW_TEST_SFTP"
SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class SftpServer:
    """Where a test SFTP server listens and how to log in to it."""

    host: str
    port: int
    username: str
    key_file: Path
    known_hosts: str  # OpenSSH known_hosts lines for the server's host key
    base_dir: str  # absolute remote directory the tests may write under

    @property
    def private_key(self) -> str:
        return self.key_file.read_text()

    def fresh_dir(self) -> str:
        """A new, not yet existing remote directory below ``base_dir``."""
        return f"{self.base_dir.rstrip('/')}/t-{uuid.uuid4().hex[:10]}"

    @contextmanager
    def client(self) -> Iterator["paramiko.SFTPClient"]:  # type: ignore[name-defined]  # noqa: F821
        """An SFTP client checking the host key, for tests to look at the remote side."""
        import paramiko

        ssh = paramiko.SSHClient()
        known = ssh.get_host_keys()  # the client's in-memory known hosts
        for line in self.known_hosts.splitlines():
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
            if entry is not None:
                for name in entry.hostnames:
                    known.add(name, entry.key.get_name(), entry.key)
        ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        pkey = paramiko.PKey.from_path(self.key_file)
        ssh.connect(
            self.host,
            self.port,
            username=self.username,
            pkey=pkey,
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
        try:
            sftp = ssh.open_sftp()
            try:
                yield sftp
            finally:
                sftp.close()
        finally:
            ssh.close()


def _from_env(value: str) -> SftpServer:
    parts = value.split(":")
    if len(parts) != 6:
        raise ValueError(
            f"{ENV} must be host:port:user:private_key_file:known_hosts_file:base_dir, "
            f"got {len(parts)} fields"
        )
    host, port, user, key_file, known_hosts_file, base_dir = parts
    return SftpServer(
        host=host,
        port=int(port),
        username=user,
        key_file=Path(key_file),
        known_hosts=Path(known_hosts_file).read_text(),
        base_dir=base_dir,
    )


def _keypair() -> tuple[bytes, str]:
    """A fresh Ed25519 key: (OpenSSH private key bytes, public key line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return private, public


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)  # sshd refuses group/world-readable host keys even with StrictModes no


def _config(root: Path, port: int, user: str) -> str:
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {root / 'ssh_host_ed25519_key'}",
        f"PidFile {root / 'sshd.pid'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitEmptyPasswords no",
        "UsePAM no",
        "StrictModes no",
        f"AllowUsers {user}",
        # root may log in with the generated key only (this server listens on loopback only)
        "PermitRootLogin prohibit-password",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "PrintMotd no",
        "MaxStartups 50:30:100",
        "LogLevel VERBOSE",
        "Subsystem sftp internal-sftp",
    ]
    return "\n".join(lines) + "\n"


def _wait_for_banner(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> bool:
    """True once the server answers with an SSH banner (a bound port is not enough)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                if sock.recv(64).startswith(b"SSH-"):
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


@contextmanager
def private_sshd() -> Iterator[SftpServer]:
    """Start a throw-away sshd on a free loopback port; yield how to reach it."""
    if not Path(SSHD).exists():
        unavailable(
            f"OpenSSH server is not installed ({SSHD} missing) and {ENV} is not set; "
            "install the Debian package openssh-server"
        )
    root = Path(tempfile.mkdtemp(prefix="gf-sshd-"))
    user = getpass.getuser()
    try:
        host_private, host_public = _keypair()
        client_private, client_public = _keypair()
        _write_private(root / "ssh_host_ed25519_key", host_private)
        _write_private(root / "client_ed25519", client_private)
        (root / "authorized_keys").write_text(client_public + "\n")
        (root / "remote").mkdir()
        if os.geteuid() == 0:
            # sshd's privilege-separation directory (normally made by the service unit).
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        port = free_port()
        config = root / "sshd_config"
        config.write_text(_config(root, port, user))
        log = root / "sshd.log"
        check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            unavailable(f"sshd rejects the test configuration: {check.stderr.strip()}")
        proc = subprocess.Popen(
            [SSHD, "-D", "-f", str(config), "-E", str(log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        if not _wait_for_banner(port, proc):
            text = log.read_text()[-2000:] if log.exists() else "(no log)"
            unavailable(f"private sshd did not start on 127.0.0.1:{port}: {text}")
        yield SftpServer(
            host="127.0.0.1",
            port=port,
            username=user,
            key_file=root / "client_ed25519",
            known_hosts=f"[127.0.0.1]:{port} {host_public}\n",
            base_dir=str(root / "remote"),
        )
    finally:
        stop_process(proc, timeout=10)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def sftp_server() -> Iterator[SftpServer]:
    value = os.environ.get(ENV)
    if value:
        yield _from_env(value)
        return
    with private_sshd() as server:
        yield server
