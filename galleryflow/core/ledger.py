"""What one session changed, on disk, so that a rollback can undo exactly that.

A session (one set in one flow run) records, before each change:

- files it creates (incoming copies, work files): deleted on rollback;
- files it replaces: moved aside first, moved back on rollback;
- the previous values of rows it refreshes (first touch wins): restored;
rows it *inserts* carry ``created_session_id`` and need no entry.

The ledger lives in ``work/.sessions/<id>/`` as one small file per entry, each
written atomically, so concurrent chunk tasks never contend for a lock and a
crash loses at most the entry being written (whose change had not happened yet).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from galleryflow.core.fsutil import atomic_write_text
from galleryflow.core.settings import Settings


class SessionLedger:
    def __init__(self, settings: Settings, image_set_id: int) -> None:
        self.root = settings.work_dir / ".sessions" / str(image_set_id)
        self.image_set_id = image_set_id

    @property
    def scratch(self) -> Path:
        """Files only this session uses (stage 2's stored scoring inputs): removed with
        the ledger when the session commits or is rolled back."""
        return self.root / "scratch"

    def has_created(self, path: Path) -> bool:
        """Whether this session recorded creating ``path``."""
        key = hashlib.sha1(str(path).encode()).hexdigest()
        return (self._files / f"{key}.txt").is_file()

    @property
    def _files(self) -> Path:
        return self.root / "files"

    @property
    def _rows(self) -> Path:
        return self.root / "rows"

    def record_created_file(self, path: Path) -> None:
        key = hashlib.sha1(str(path).encode()).hexdigest()
        atomic_write_text(self._files / f"{key}.txt", str(path))

    def backup_file(self, path: Path) -> None:
        """Move an existing file aside before this session replaces it."""
        key = hashlib.sha1(str(path).encode()).hexdigest()
        backup = self.root / "backup" / key
        if backup.exists():
            return
        backup.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.root / "backup" / f"{key}.path", str(path))
        shutil.move(str(path), backup)

    def backups(self) -> list[tuple[Path, Path]]:
        """(backup copy, original location) pairs."""
        folder = self.root / "backup"
        if not folder.is_dir():
            return []
        return [(folder / p.stem, Path(p.read_text())) for p in sorted(folder.glob("*.path"))]

    def record_snapshot(self, table: str, row_id: int, values: dict[str, Any]) -> None:
        target = self._rows / f"{table}-{row_id}.json"
        if target.exists():  # the first snapshot is the state before this session
            return
        atomic_write_text(target, json.dumps({"table": table, "id": row_id, "values": values},
                                             default=str))

    def created_files(self) -> list[Path]:
        if not self._files.is_dir():
            return []
        return [Path(p.read_text()) for p in sorted(self._files.glob("*.txt"))]

    def snapshots(self) -> list[dict[str, Any]]:
        if not self._rows.is_dir():
            return []
        return [json.loads(p.read_text()) for p in sorted(self._rows.glob("*.json"))]

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
