"""`galleryflow setup` connects the site: blocks for the gallery database and the SFTP
target, and the [publish] settings that select them written into galleryflow.toml
(comments and other sections kept)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from galleryflow.app.site_setup import SiteSetupError, SiteSpec, connect_site, write_settings
from galleryflow.core.settings import get_settings, reset_settings

EXISTING = """# our studio's settings
home = "/srv/galleryflow"

[publish]
target = "local"   # until the site is connected
keep_gps = false

[review]
page_size = 10
"""


def test_write_settings_keeps_the_rest_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "galleryflow.toml"
    path.write_text(EXISTING)
    write_settings(path, "publish", {"target": "sftp", "target_block": "site"})
    text = path.read_text()
    assert text.startswith("# our studio's settings\n") and "keep_gps = false" in text
    parsed = tomllib.loads(text)
    assert parsed["publish"] == {"target": "sftp", "keep_gps": False, "target_block": "site"}
    assert parsed["review"] == {"page_size": 10} and parsed["home"] == "/srv/galleryflow"

    fresh = tmp_path / "new" / "galleryflow.toml"
    write_settings(fresh, "publish", {"gallery_block": 'site "db"'})
    assert tomllib.loads(fresh.read_text()) == {"publish": {"gallery_block": 'site "db"'}}

    dotted = tmp_path / "dotted.toml"
    dotted.write_text('publish.target = "local"\n')
    with pytest.raises(SiteSetupError, match="not valid TOML after the edit|some other way"):
        write_settings(dotted, "publish", {"target": "sftp"})
    assert dotted.read_text() == 'publish.target = "local"\n'  # nothing written


def test_setup_connects_the_site_from_options(prefect_api: None, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from blocks.targets import SftpTarget
    from galleryflow.app.cli import app
    from galleryflow.publishing.config import resolve_gallery, resolve_target

    path = tmp_path / "galleryflow.toml"
    path.write_text(EXISTING)
    gallery_url = f"sqlite:///{tmp_path / 'site.db'}"
    result = CliRunner().invoke(app, [
        "setup", "--no-deploy", "--gallery-url", gallery_url, "--gallery-table", "photos",
        "--sftp-host", "www.example.org", "--sftp-user", "deploy", "--sftp-key-file",
        "~/.ssh/id_ed25519", "--remote-base", "/var/www/gallery", "--public-url",
        "https://www.example.org/gallery", "--config", str(path)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "saved GalleryDatabase block site-gallery" in result.output
    assert "saved SftpTarget block site (sftp://deploy@www.example.org:22/var/www/gallery" in result.output
    assert "restart it" in result.output

    monkeypatch.setenv("GALLERYFLOW_CONFIG", str(path))
    reset_settings()
    settings = get_settings()
    assert (settings.publish.target, settings.publish.target_block,
            settings.publish.gallery_block) == ("sftp", "site", "site-gallery")
    target = resolve_target(settings)
    assert isinstance(target, SftpTarget) and target.known_hosts_policy == "reject"
    assert target.private_key_file == "~/.ssh/id_ed25519"
    gallery = resolve_gallery(settings)
    assert gallery.url == gallery_url and gallery.table == "photos"


def test_an_incomplete_sftp_target_is_refused(prefect_api: None, tmp_path: Path) -> None:
    path = tmp_path / "galleryflow.toml"
    with pytest.raises(SiteSetupError, match="username, remote base folder, a private key"):
        connect_site(SiteSpec(sftp_host="www.example.org"), path)
    assert not path.exists()
