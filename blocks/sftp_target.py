"""The SFTP target block (:class:`SftpTarget`): where the server is, how to log in and
which host keys to trust; the connection is :mod:`blocks.sftp_session`, the trust
rules :mod:`blocks.sftp_host_keys`, so the block stays its fields.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks.sftp_session import SftpSession
from blocks.target_base import TargetCommon


class SftpTarget(TargetCommon, Block):
    """Publish over SFTP (paramiko), host key checked against known_hosts."""

    _block_type_name = "SFTP Target"
    _block_type_slug = "sftp-target"
    _description = (
        "galleryflow: publish web images to a web server over SFTP. Unknown host keys "
        "are rejected unless known_hosts_policy says otherwise."
    )
    # Saved block types name the public module (blocks.targets), not this one.
    _code_example = """\
        ```python
        from blocks.targets import SftpTarget

        sftp_target_block = SftpTarget.load("BLOCK_NAME")
        ```"""

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
    create_remote_base: bool = Field(
        default=False,
        description="Create remote_base when it does not exist (default: refuse, so a "
        "mistyped path never publishes into a folder no web server serves).",
    )
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
    def open_session(self) -> Iterator[SftpSession]:
        session = SftpSession(self)
        try:
            session.connect()
            yield session
        finally:
            session.close()
