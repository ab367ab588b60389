"""Publish targets: safe names, atomic uploads, host-key policy; against a real sshd."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest

from blocks.targets import (
    TEMP_SUFFIX,
    HostKeyRejected,
    LocalFolderTarget,
    SftpTarget,
    TargetError,
    TargetUnavailable,
    UnsafeRemotePath,
    remote_path,
    safe_name,
)
from tests.fixtures.services import sftp_target_fields
from tests.services import free_port


def _payload(tmp_path: Path, size: int = 300_000, name: str = "photo.jpg") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["lake-dawn.jpg", "A_1.jpeg", "x.y-z_2.jpg", "9.jpg"])
def test_plain_names_pass(name):
    assert safe_name(name) == name


@pytest.mark.parametrize(
    "name,fault",
    [
        ("../etc/passwd", "separator"),
        ("..", "leave the remote base"),
        ("a..jpg", "leave"),
        ("/abs.jpg", "separator"),
        ("sub/x.jpg", "separator"),
        ("x\\y.jpg", "separator"),
        (".hidden.jpg", "hidden"),
        ("", "empty"),
        ("caf\u00e9.jpg", "characters"),
        ("a b.jpg", "characters"),
        ("nul\x00.jpg", "separator"),
        ("x" * 250 + ".jpg", "characters"),
    ],
)
def test_unsafe_names_are_refused(name, fault):
    with pytest.raises(UnsafeRemotePath, match=fault):
        safe_name(name)


def test_only_known_folders():
    assert remote_path("a.jpg", "thumbs").relative == "thumbs/a.jpg"
    with pytest.raises(UnsafeRemotePath, match="folder"):
        remote_path("a.jpg", "../..")


# ----------------------------------------------------------------------- local folder


def test_local_upload_is_atomic_and_verifiable(tmp_path):
    target = LocalFolderTarget(root=str(tmp_path / "site"), public_base_url="https://x.org/g/")
    src = _payload(tmp_path)
    dest = remote_path("photo.jpg", "thumbs")
    with target.open_session() as session:
        assert session.size(dest) is None
        assert session.upload(src, dest) == src.stat().st_size
        assert session.size(dest) == src.stat().st_size
        assert session.sha256(dest) == _sha(src)
        # no temporary left beside it
        assert sorted(p.name for p in (tmp_path / "site" / "thumbs").iterdir()) == ["photo.jpg"]
        assert session.delete(dest) is True
        assert session.delete(dest) is False
    assert target.url_for(dest) == "https://x.org/g/thumbs/photo.jpg"


def test_local_default_url_is_the_file_uri(tmp_path):
    target = LocalFolderTarget(root=str(tmp_path / "site"))
    assert target.url_for(remote_path("a.jpg")) == (tmp_path / "site" / "a.jpg").resolve().as_uri()


def test_local_refuses_a_symlink_escape(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (site / "thumbs").symlink_to(outside)
    target = LocalFolderTarget(root=str(site))
    with target.open_session() as session, pytest.raises(UnsafeRemotePath, match="outside"):
        session.upload(_payload(tmp_path), remote_path("a.jpg", "thumbs"))
    assert list(outside.iterdir()) == []


def test_local_upload_replaces_a_stale_temporary(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    stale = site / ".photo.jpg.abc123.jpg.part"
    stale.write_bytes(b"half a file from a killed run")
    with LocalFolderTarget(root=str(site)).open_session() as session:
        session.upload(_payload(tmp_path), remote_path("photo.jpg"))
    assert sorted(p.name for p in site.iterdir()) == ["photo.jpg"]


# ------------------------------------------------------------------------------ SFTP


@pytest.mark.integration
def test_sftp_upload_rename_and_replace(sftp_server, tmp_path):
    base = sftp_server.fresh_dir()
    target = SftpTarget(**sftp_target_fields(sftp_server, base))
    first, second = _payload(tmp_path, 200_000, "a.bin"), _payload(tmp_path, 150_000, "b.bin")
    dest = remote_path("photo.jpg", "thumbs")
    with target.open_session() as session:
        assert session.size(dest) is None
        session.upload(first, dest)
        assert session.size(dest) == 200_000
        session.upload(second, dest)  # a new version replaces the old one atomically
        assert session.size(dest) == 150_000
        assert session.sha256(dest) == _sha(second)
    with sftp_server.client() as sftp:
        assert sftp.listdir(f"{base}/thumbs") == ["photo.jpg"]  # no temporary left
        with sftp.open(f"{base}/thumbs/photo.jpg") as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == _sha(second)
    assert target.url_for(dest) == "https://photos.example.org/gallery/thumbs/photo.jpg"


@pytest.mark.integration
def test_sftp_one_connection_serves_many_files(sftp_server, tmp_path):
    target = SftpTarget(**sftp_target_fields(sftp_server, sftp_server.fresh_dir()))
    with target.open_session() as session:
        transport = session._ssh.get_transport()
        for i in range(5):
            session.upload(_payload(tmp_path, 10_000, f"{i}.bin"), remote_path(f"p{i}.jpg"))
        assert session._ssh.get_transport() is transport  # no reconnect per file


@pytest.mark.integration
def test_sftp_unknown_host_key_is_refused(sftp_server, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    fields = sftp_target_fields(
        sftp_server, sftp_server.fresh_dir(), known_hosts=None, known_hosts_file=str(empty)
    )
    target = SftpTarget(**fields)
    with pytest.raises(HostKeyRejected, match="not in .*known_hosts.*refusing"):
        with target.open_session():
            pass
    with sftp_server.client() as sftp:  # nothing was created on the server
        with pytest.raises(FileNotFoundError):
            sftp.stat(fields["remote_base"])


@pytest.mark.integration
def test_sftp_changed_host_key_is_refused_even_with_accept_new(sftp_server, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    impostor = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    line = f"[{sftp_server.host}]:{sftp_server.port} {impostor}\n"
    target = SftpTarget(
        **sftp_target_fields(
            sftp_server, sftp_server.fresh_dir(), known_hosts=line, known_hosts_policy="accept_new"
        )
    )
    with pytest.raises(HostKeyRejected, match="does NOT match"):
        with target.open_session():
            pass


@pytest.mark.integration
def test_sftp_accept_new_remembers_the_key(sftp_server, tmp_path):
    known = tmp_path / "ssh" / "known_hosts"
    target = SftpTarget(
        **sftp_target_fields(
            sftp_server,
            sftp_server.fresh_dir(),
            known_hosts=None,
            known_hosts_file=str(known),
            known_hosts_policy="accept_new",
        )
    )
    with target.open_session() as session:
        session.upload(_payload(tmp_path, 1000), remote_path("a.jpg"))
    remembered = known.read_text()
    assert sftp_server.known_hosts.split()[2] in remembered  # the server's real key
    # and the default policy now accepts the server from that file
    strict = SftpTarget(
        **sftp_target_fields(
            sftp_server, sftp_server.fresh_dir(), known_hosts=None, known_hosts_file=str(known)
        )
    )
    with strict.open_session() as session:
        assert session.size(remote_path("a.jpg")) is None


@pytest.mark.integration
def test_sftp_accept_new_with_inline_known_hosts_saves_the_key(sftp_server, tmp_path, prefect_api):
    """Inline known_hosts + accept_new: the accepted key joins the saved block, so the
    next connection checks against it instead of trusting whatever is offered."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = "other.example.org " + Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    SftpTarget(**sftp_target_fields(sftp_server, sftp_server.fresh_dir(), known_hosts=other + "\n",
                                    known_hosts_policy="accept_new")).save("inline-site",
                                                                         overwrite=True)
    with SftpTarget.load("inline-site").open_session() as session:
        session.upload(_payload(tmp_path, 1000), remote_path("a.jpg"))
    saved = SftpTarget.load("inline-site")
    assert other in saved.known_hosts  # kept
    assert sftp_server.known_hosts.split()[2] in saved.known_hosts  # the server's real key
    strict = saved.model_copy(update={"known_hosts_policy": "reject"})
    with strict.open_session() as session:  # known now, without trusting anything new
        assert session.size(remote_path("a.jpg")) == 1000


@pytest.mark.integration
def test_sftp_missing_remote_base_is_an_error_unless_asked_to_create_it(sftp_server, tmp_path):
    base = sftp_server.fresh_dir()
    target = SftpTarget(**sftp_target_fields(sftp_server, base, create_remote_base=False))
    with target.open_session() as session, pytest.raises(TargetError, match="does not exist"):
        session.upload(_payload(tmp_path, 1000), remote_path("a.jpg"))
    with sftp_server.client() as sftp, pytest.raises(FileNotFoundError):
        sftp.stat(base)  # nothing was created
    creating = SftpTarget(**sftp_target_fields(sftp_server, base, create_remote_base=True))
    with creating.open_session() as session:
        session.upload(_payload(tmp_path, 1000), remote_path("a.jpg"))
        assert session.size(remote_path("a.jpg")) == 1000


@pytest.mark.integration
def test_sftp_escape_is_refused_before_any_write(sftp_server, tmp_path):
    from blocks.targets import RemotePath

    base = sftp_server.fresh_dir()
    target = SftpTarget(**sftp_target_fields(sftp_server, base))
    with target.open_session() as session:
        for sneaky in (
            RemotePath("", "../escaped.jpg"),
            RemotePath("..", "escaped.jpg"),
            RemotePath("", "/tmp/escaped.jpg"),
        ):
            with pytest.raises(UnsafeRemotePath):
                session.upload(_payload(tmp_path, 100), sneaky)
    parent = base.rsplit("/", 1)[0]
    with sftp_server.client() as sftp:
        assert "escaped.jpg" not in sftp.listdir(parent)


@pytest.mark.integration
def test_sftp_wrong_key_is_an_authentication_error(sftp_server, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    stranger = (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        .decode()
    )
    target = SftpTarget(
        **sftp_target_fields(
            sftp_server, sftp_server.fresh_dir(), private_key_file=None, private_key=stranger
        )
    )
    with pytest.raises(TargetError, match="authentication failed") as info:
        with target.open_session():
            pass
    assert not isinstance(info.value, TargetUnavailable)  # not retried: it cannot get better
    assert "PRIVATE KEY" not in str(info.value)


@pytest.mark.integration
def test_sftp_key_text_works_and_secrets_stay_out_of_logs(sftp_server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    key_text = sftp_server.private_key
    target = SftpTarget(
        **sftp_target_fields(
            sftp_server,
            sftp_server.fresh_dir(),
            private_key_file=None,
            private_key=key_text,
            password="hunter2-not-logged",
        )
    )
    with target.open_session() as session:
        session.upload(_payload(tmp_path, 5000), remote_path("a.jpg"))
    body = key_text.strip().splitlines()[1]
    for secret in (body, "hunter2-not-logged"):
        assert secret not in caplog.text
        assert secret not in repr(target)
        assert secret not in target.describe()


@pytest.mark.integration
def test_sftp_unreachable_is_retryable(tmp_path):
    target = SftpTarget(
        host="127.0.0.1",
        port=free_port(),
        username="nobody",
        remote_base="/x",
        known_hosts="",
        connect_timeout=2,
        reconnect_attempts=1,
    )
    with pytest.raises(TargetUnavailable, match="cannot connect"):
        with target.open_session():
            pass


@pytest.mark.integration
def test_sftp_temporary_name_is_hidden_and_not_an_image(sftp_server, tmp_path):
    """The name a partial upload lives under is neither the final name nor served as .jpg."""
    base = sftp_server.fresh_dir()
    target = SftpTarget(**sftp_target_fields(sftp_server, base))
    src = _payload(tmp_path, 1000)
    with target.open_session() as session:
        session._ensure_dir(base)
        with session.sftp.open(f"{base}/.photo.jpg{TEMP_SUFFIX}", "wb") as handle:
            handle.write(b"partial from a killed run")
        session.upload(src, remote_path("photo.jpg"))  # overwrites the leftover, renames it
    with sftp_server.client() as sftp:
        assert sftp.listdir(base) == ["photo.jpg"]
        assert sftp.stat(f"{base}/photo.jpg").st_size == 1000
