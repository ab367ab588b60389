"""Atomic writes land with the mode a web server can read, whatever mkstemp gives."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from galleryflow.core.fsutil import atomic_path, atomic_write_bytes, copy_verified


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_honour_the_umask(tmp_path: Path) -> None:
    # A fresh interpreter with a known umask: the mode is read once per process.
    script = (
        "import os, sys, stat\n"
        "from pathlib import Path\n"
        "from galleryflow.core.fsutil import atomic_write_bytes\n"
        "p = Path(sys.argv[1]); atomic_write_bytes(p, b'x')\n"
        "print(oct(stat.S_IMODE(p.stat().st_mode)))\n"
    )
    for umask, expected in ((0o022, "0o644"), (0o027, "0o640"), (0o077, "0o600")):
        target = tmp_path / f"out-{umask:o}.bin"
        result = subprocess.run(
            [sys.executable, "-c", script, str(target)], capture_output=True, text=True,
            preexec_fn=lambda u=umask: os.umask(u), check=True,
        )
        assert result.stdout.strip() == expected, (umask, result.stdout, result.stderr)


def test_an_explicit_mode_wins_and_nothing_is_left_behind(tmp_path: Path) -> None:
    target = tmp_path / "site" / "photo.jpg"
    with atomic_path(target, mode=0o640) as tmp:
        tmp.write_bytes(b"jpeg")
    assert _mode(target) == 0o640
    assert [p.name for p in target.parent.iterdir()] == ["photo.jpg"]


def test_a_copy_of_a_read_only_original_is_writable_by_us(tmp_path: Path) -> None:
    original = tmp_path / "a.jpg"
    original.write_bytes(b"bytes of a photo")
    original.chmod(0o444)
    copy = tmp_path / "incoming" / "a.jpg"
    copy_verified(original, copy)
    assert _mode(copy) == 0o644
    assert _mode(original) == 0o444  # the original is never modified
    atomic_write_bytes(copy, b"again")
    assert copy.read_bytes() == b"again"
