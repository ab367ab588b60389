"""Who the SFTP server is and who we are: known_hosts loading, the unknown-host-key
policy (reject, or OpenSSH's accept-new) and the private key from an
:class:`~blocks.sftp_target.SftpTarget`; separate from the connection handling so the
trust rules can be read (and reviewed) on their own.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from blocks.target_base import HostKeyRejected, TargetError

if TYPE_CHECKING:  # paramiko is the optional `sftp` extra
    import paramiko

    from blocks.sftp_target import SftpTarget

log = logging.getLogger(__name__)


def private_key(target: SftpTarget) -> paramiko.PKey | None:
    """The target's private key (file or text), or None; never echoes key material."""
    import paramiko

    passphrase = (
        target.private_key_passphrase.get_secret_value() if target.private_key_passphrase else None
    )
    if target.private_key_file:
        try:
            return paramiko.PKey.from_path(Path(target.private_key_file).expanduser(), passphrase)
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise TargetError(
                f"{target.describe()}: private key file {target.private_key_file} unreadable: "
                f"{type(exc).__name__}"
            ) from None
    if not target.private_key:
        return None
    text = target.private_key.get_secret_value()
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text), password=passphrase)
        except (paramiko.SSHException, ValueError, TypeError):
            continue
    # Never echo the key material: name the fault only.
    raise TargetError(
        f"{target.describe()}: private_key is not an Ed25519, ECDSA or RSA key in OpenSSH/PEM "
        "form, or its passphrase is wrong"
    )


def load_known_hosts(target: SftpTarget, client: paramiko.SSHClient) -> str:
    """Load the configured known hosts into ``client``; return where they came from."""
    if target.known_hosts:
        # paramiko loads from files only; a private temp file keeps hashed entries working.
        with tempfile.NamedTemporaryFile("w", suffix=".known_hosts", delete=False) as handle:
            handle.write(target.known_hosts)
            name = handle.name
        try:
            client.get_host_keys().load(name)
        finally:
            os.unlink(name)
        return "the block's known_hosts"
    path = Path(target.known_hosts_file or "~/.ssh/known_hosts").expanduser()
    if path.is_file():
        client.get_host_keys().load(str(path))
    return str(path)


def remember_inline(target: SftpTarget, line: str) -> None:
    """Trust on first use with inline ``known_hosts``: the key joins the block's own
    lines (so this object's next connection checks against it) and a saved block is
    saved again; otherwise every connection would trust whatever key is offered."""
    target.known_hosts = f"{(target.known_hosts or '').rstrip(chr(10))}\n{line}\n".lstrip("\n")
    name = getattr(target, "_block_document_name", None)
    if not name:
        return
    try:
        target.save(name, overwrite=True)
    except Exception as exc:  # the connection goes on; the next one asks again
        log.warning("%s: could not save the accepted host key into block %s: %s",
                    target.describe(), name, type(exc).__name__)


def missing_key_policy(target: SftpTarget, source: str) -> paramiko.MissingHostKeyPolicy:
    """What to do with a host key not in ``source``: refuse, or trust and remember it."""
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
            line = f"{hostname} {key.get_name()} {key.get_base64()}"
            if target.known_hosts:
                remember_inline(target, line)
                return
            path = Path(target.known_hosts_file or "~/.ssh/known_hosts").expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as handle:
                handle.write(line + "\n")

    return _AcceptNew() if target.known_hosts_policy == "accept_new" else _Reject()
