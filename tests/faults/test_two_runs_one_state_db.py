"""Two runs at once on one state DB (MariaDB) and one Prefect server, as two workers run
them: four sets, two of which share photo names and fold to the same web names.
Nothing duplicated, nothing lost, no name shared.

What this does not cover (docs/operations.md, *More than one machine*): Prefect
workers picking the runs from a work pool, and machines that do not share a host.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from blocks.gallery_db import GalleryDatabase
from blocks.targets import SftpTarget
from galleryflow.core.settings import PublishSettings, Settings
from galleryflow.db import ImageSet, Photo, session_scope
from tests.faults.test_kill_anywhere import REPO, _env, _photo, _remote_files
from tests.fixtures.services import sftp_target_fields
from tests.fixtures.site import assert_site_consistent

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def test_two_runs_four_sets_one_state_db(tmp_path: Path, mariadb_server: str, sftp_server,
                                         prefect_server_url: str) -> None:
    from tests.services.mariadb import fresh_database

    sets = {
        "first": [tmp_path / "a" / "alps", tmp_path / "a" / "Harbour"],
        "second": [tmp_path / "b" / "lakes", tmp_path / "b" / "harbour"],
    }
    for group, folders in sets.items():
        for i, folder in enumerate(folders):
            for k in range(4):  # Harbour/ and harbour/ hold img-00.jpg … img-03.jpg each
                name = f"img-{k:02d}.jpg" if folder.name.lower() == "harbour" else f"{folder.name}-{k}.jpg"
                _photo(folder, name, seed=1000 * (group == "second") + 10 * i + k, minute=0)
    base = sftp_server.fresh_dir()
    target = sftp_target_fields(sftp_server, base)
    home = tmp_path / "home"
    with fresh_database(mariadb_server) as state_url, fresh_database(mariadb_server) as site_url:
        env = _env(home, site_url, prefect_server_url) | {"GALLERYFLOW_DATABASE_URL": state_url}
        procs = []
        for group, folders in sets.items():
            cfg = tmp_path / f"{group}.json"
            cfg.write_text(json.dumps(dict(sets=[str(f) for f in folders], target=target,
                                           point=None)))
            procs.append(subprocess.Popen([sys.executable, "-m", "tests.faults.child", str(cfg)],
                                          cwd=REPO, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
        outputs = [p.communicate(timeout=240)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-4000:] for o in outputs)

        settings = Settings(home=home, database_url=state_url,
                            publish=PublishSettings(full_long_edge=120, thumb_long_edge=40))
        with session_scope(state_url) as db:
            sessions = {s.set_key: s.status for s in db.scalars(select(ImageSet))}
            photos = list(db.scalars(select(Photo)))
        assert sessions == {"alps": "completed", "Harbour": "completed", "lakes": "completed",
                            "harbour": "completed"}
        assert len(photos) == 16  # nothing lost, nothing duplicated
        names = [p.web_file_name.lower() for p in photos if p.web_file_name]
        assert len(names) == len(set(names)) == 16  # no name shared, ignoring case
        # … although both harbour sets asked for the same names (the set's name and the
        # photo's minute): the reservations decided who got which.
        stems = {p.set_key: {n.web_file_name.lower()[:23] for n in photos
                             if n.set_key == p.set_key} for p in photos}
        assert stems["Harbour"] == stems["harbour"], stems
        try:
            state = assert_site_consistent(settings, _remote_files(sftp_server, base),
                                           GalleryDatabase(url=site_url), SftpTarget(**target),
                                           tmp_path / "scratch")
        except AssertionError as exc:
            # Seen once in a full-suite run (2026-12-04): files of approved rows on the
            # site, neither in the gallery nor published. What each run printed says why.
            statuses = sorted((p.set_key, p.original_name, p.status, p.web_file_name or "",
                               p.error or "")
                              for p in photos)
            raise AssertionError(f"{exc}\nrows: {statuses}\n" + "\n=====\n".join(
                o[-6000:] for o in outputs)) from None
        assert {r.id for r in state.published.values()} == {
            p.id for p in photos if p.status == "published"}
