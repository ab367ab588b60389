"""``galleryflow setup`` connects the site: the gallery database and the SFTP target as
Prefect blocks, and the ``[publish]`` settings that select them in ``galleryflow.toml``.

What a worker reads is the settings file where it runs (``galleryflow.toml`` in its
working directory, or ``GALLERYFLOW_CONFIG``) and the blocks on the Prefect server; a
worker reads its settings when it starts a run's process, but the environment it was
started with wins over the file (``GALLERYFLOW_PUBLISH__*``), and a long-running
``galleryflow serve`` or worker must be restarted to see a changed environment.

The file is edited in place, line by line, so its comments and other sections stay:
each key of ``[publish]`` given here replaces its line or joins the section (created
when missing); the result is read back and checked.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from galleryflow.core.fsutil import atomic_path


class SiteSetupError(RuntimeError):
    """The site could not be connected as asked; the message says why."""


class SiteSpec(BaseModel):
    """What to connect: a gallery database, an SFTP target, or both."""

    gallery_url: str | None = None
    gallery_password: SecretStr | None = None
    gallery_table: str = "gallery"
    gallery_block: str = "site-gallery"
    sftp_host: str | None = None
    sftp_port: int = 22
    sftp_username: str | None = None
    sftp_private_key_file: str | None = None
    sftp_password: SecretStr | None = None
    sftp_remote_base: str | None = None
    sftp_public_base_url: str | None = None
    sftp_known_hosts_file: str | None = None
    sftp_known_hosts_policy: str = "reject"
    target_block: str = "site"


def config_path(explicit: Path | None = None) -> Path:
    """The settings file galleryflow reads (``GALLERYFLOW_CONFIG`` or ./galleryflow.toml)."""
    return explicit or Path(os.environ.get("GALLERYFLOW_CONFIG", "galleryflow.toml"))


def connect_site(spec: SiteSpec, path: Path) -> list[str]:
    """Save the blocks ``spec`` describes and point ``[publish]`` at them; what was done."""
    from blocks.gallery_db import GalleryDatabase
    from blocks.targets import SftpTarget

    done: list[str] = []
    values: dict[str, str] = {}
    if spec.gallery_url:
        GalleryDatabase(url=spec.gallery_url, password=spec.gallery_password,
                        table=spec.gallery_table).save(spec.gallery_block, overwrite=True)
        values["gallery_block"] = spec.gallery_block
        done.append(f"saved GalleryDatabase block {spec.gallery_block} ({spec.gallery_url}, "
                    f"table {spec.gallery_table})")
    if spec.sftp_host:
        missing = [name for name, value in (("username", spec.sftp_username),
                                            ("remote base folder", spec.sftp_remote_base)) if not value]
        if not (spec.sftp_private_key_file or spec.sftp_password):
            missing.append("a private key file or a password")
        if missing:
            raise SiteSetupError(f"the SFTP target needs {', '.join(missing)}")
        target = SftpTarget(
            host=spec.sftp_host, port=spec.sftp_port, username=spec.sftp_username,
            private_key_file=spec.sftp_private_key_file, password=spec.sftp_password,
            remote_base=spec.sftp_remote_base, public_base_url=spec.sftp_public_base_url,
            known_hosts_file=spec.sftp_known_hosts_file,
            known_hosts_policy=spec.sftp_known_hosts_policy)
        target.save(spec.target_block, overwrite=True)
        values.update(target="sftp", target_block=spec.target_block)
        done.append(f"saved SftpTarget block {spec.target_block} ({target.describe()}, host keys "
                    f"from {spec.sftp_known_hosts_file or '~/.ssh/known_hosts'} of the user "
                    "that runs the worker)")
    if not values:
        raise SiteSetupError("nothing to connect: give a gallery database URL or an SFTP host")
    write_settings(path, "publish", values)
    done.append(f"wrote [publish] {', '.join(f'{k} = {v!r}' for k, v in values.items())} "
                f"to {path}")
    overridden = [f"GALLERYFLOW_PUBLISH__{k.upper()}" for k in values
                  if f"GALLERYFLOW_PUBLISH__{k.upper()}" in os.environ]
    if overridden:
        done.append(f"note: {', '.join(overridden)} set in this environment wins over the file")
    return done


_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\"' -]+?)\s*\]\s*(#.*)?$")


def write_settings(path: Path, section: str, values: dict[str, Any]) -> None:
    """Set ``values`` in ``[section]`` of the TOML file at ``path`` (created if missing),
    keeping everything else as it is; checked by reading the file back."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    start = next((i for i, line in enumerate(lines)
                  if (m := _HEADER.match(line)) and m.group(1) == section), None)
    rendered = {key: f"{key} = {json.dumps(value, ensure_ascii=False)}" for key, value in values.items()}
    if start is None:
        lines += ([""] if lines and lines[-1].strip() else []) + [f"[{section}]", *rendered.values()]
    else:
        end = next((i for i in range(start + 1, len(lines)) if _HEADER.match(lines[i])
                    or lines[i].lstrip().startswith("[[")), len(lines))
        todo = dict(rendered)
        for i in range(start + 1, end):
            key = lines[i].split("=", 1)[0].strip() if "=" in lines[i] else None
            if key in todo:
                lines[i] = todo.pop(key)
        last = max((i for i in range(start, end) if lines[i].strip()), default=start)
        lines[last + 1:last + 1] = list(todo.values())
    text = "\n".join(lines) + "\n"
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SiteSetupError(f"{path}: not valid TOML after the edit ({exc}); nothing written") from None
    got = parsed.get(section, {})
    if any(got.get(k) != v for k, v in values.items()):
        raise SiteSetupError(f"{path}: [{section}] is also set some other way in the file (a dotted "
                             f"key or an inline table); set {', '.join(values)} there by hand")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
