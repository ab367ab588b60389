"""Stage 1: validate the chosen sets before anything is written.

Every check runs before any write, so a set with a blocking fault leaves no trace:
missing or unreadable folder, no images, unsupported or mislabelled formats,
zero-byte, oversized or truncated files, decompression bombs, duplicate file
names across the chosen sets, too little free disk for the copies.

*Blocking* faults fail the set (all of them are reported at once, each naming
its file). *Per-file* faults exclude that file, with its reason, and the set goes
on; ``strict`` turns every per-file fault into a blocking one. A mislabelled
file (a PNG named ``.jpg``) is not a fault: it goes on under its real format
with a warning.
"""

from __future__ import annotations

import errno
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from PIL import Image, UnidentifiedImageError
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from galleryflow.core.fsutil import free_bytes
from galleryflow.imaging.decode import read_header, structure_check
from galleryflow.imaging.formats import suffix_matches
from galleryflow.core.settings import Settings, ValidationSettings, get_settings

IGNORED_NAMES = {"thumbs.db", "desktop.ini", ".ready"}


class FileCheck(BaseModel):
    """The verdict on one file."""

    set_name: str
    name: str
    path: str
    verdict: Literal["accepted", "excluded", "ignored"]
    format: str | None = None
    width: int | None = None
    height: int | None = None
    size: int = 0
    messages: list[str] = Field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.set_name}/{self.name}"


class SetReport(BaseModel):
    name: str
    path: str
    files: list[FileCheck] = Field(default_factory=list)
    blocking: list[str] = Field(default_factory=list)

    @property
    def accepted(self) -> list[FileCheck]:
        return [f for f in self.files if f.verdict == "accepted"]

    @property
    def excluded(self) -> list[FileCheck]:
        return [f for f in self.files if f.verdict == "excluded"]

    @property
    def ok(self) -> bool:
        return not self.blocking


class ValidationReport(BaseModel):
    sets: list[SetReport]
    blocking: list[str] = Field(default_factory=list)  # faults of the whole run (disk)

    @property
    def ok(self) -> bool:
        return not self.blocking and all(s.ok for s in self.sets)

    def faults_text(self) -> str:
        lines = list(self.blocking)
        for s in self.sets:
            lines += [f"{s.name}: {msg}" for msg in s.blocking]
        return "\n".join(lines)

    def rows(self) -> list[dict[str, str]]:
        """One row per file for a table artifact or a terminal table."""
        return [
            {
                "set": f.set_name,
                "file": f.name,
                "verdict": f.verdict,
                "format": f.format or "",
                "size": f"{f.width}×{f.height}" if f.width else "",
                "messages": "; ".join(f.messages),
            }
            for s in self.sets
            for f in s.files
        ]


class SetValidationError(RuntimeError):
    """One or more sets have blocking faults; the message lists every one."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__("validation failed:\n" + report.faults_text())
        self.report = report


def _looks_like_text(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(512)
    if not head:
        return False
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
    return printable / len(head) > 0.95


def check_file(path: Path, set_name: str, rules: ValidationSettings) -> FileCheck:
    """Every per-file check on one file; never raises for a bad file."""
    check = FileCheck(set_name=set_name, name=path.name, path=str(path), verdict="accepted")

    def exclude(message: str) -> FileCheck:
        check.verdict = "excluded"
        check.messages.append(message)
        return check

    try:
        check.size = path.stat().st_size
        if not os.access(path, os.R_OK):
            return exclude("cannot be read: permission denied")
    except PermissionError:
        return exclude("cannot be read: permission denied")
    except OSError as exc:
        return exclude(f"cannot be read: {exc.strerror or exc}")
    if check.size == 0:
        return exclude("empty file (0 bytes)")
    if check.size > rules.max_file_bytes:
        return exclude(f"file is {check.size / 1e6:.0f} MB, over the {rules.max_file_bytes / 1e6:.0f} MB limit")
    try:
        header = read_header(path)
    except Image.DecompressionBombError as exc:
        return exclude(f"decompression-bomb guard: {exc}")
    except PermissionError:
        return exclude("cannot be read: permission denied")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if _looks_like_text(path):
            return exclude("not an image: the file contains text")
        return exclude(f"not an image Pillow can read ({exc})")
    check.format, check.width, check.height = header.format, header.width, header.height
    if header.format not in rules.formats:
        return exclude(f"unsupported format {header.format}")
    if not suffix_matches(path, header.format):
        check.messages.append(
            f"mislabelled: the file is really {header.format}, not {path.suffix}; it goes on as {header.format}"
        )
    pixels = header.width * header.height
    if pixels > rules.max_pixels:
        return exclude(
            f"{header.width}×{header.height} = {pixels / 1e6:.0f} MP exceeds the "
            f"{rules.max_pixels / 1e6:.0f} MP limit (decompression-bomb guard)"
        )
    if min(header.width, header.height) < rules.min_side:
        return exclude(f"too small: {header.width}×{header.height} (minimum side {rules.min_side} px)")
    try:
        structure_check(path, header)
    except Image.DecompressionBombError as exc:
        return exclude(f"decompression-bomb guard: {exc}")
    except (OSError, SyntaxError, ValueError) as exc:
        reason = str(exc)
        if "truncated" in reason or isinstance(exc, OSError) and exc.errno is None:
            return exclude(f"damaged or truncated image data ({reason})")
        if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM):
            return exclude("cannot be read: permission denied")
        return exclude(f"cannot be decoded ({reason})")
    return check


def set_name_fault(name: str) -> str | None:
    """Why ``name`` cannot name a set (it becomes ``incoming/<name>/``), or None.

    Empty, ``.``, ``..``, hidden names and anything with a separator could leave
    ``incoming/`` or merge unrelated folders into one set.
    """
    if not name or name in (".", ".."):
        return f"a set folder needs a name (got {name!r}): name the folder itself, not / or ."
    if "/" in name or "\\" in name or "\x00" in name:
        return f"set name {name!r} contains a path separator"
    if name.startswith("."):
        return f"set name {name!r} is hidden (starts with a dot)"
    return None


def _inside(entry: Path, folder: Path) -> bool:
    """Whether ``entry`` (maybe a symlink) resolves to a file inside ``folder``."""
    try:
        return entry.resolve(strict=True).is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # dangling or looping link
        return False


def _candidate_files(folder: Path, rules: ValidationSettings) -> tuple[list[Path], list[Path]]:
    """(image candidates, ignored files) directly inside ``folder``, sorted by name.

    A symlink counts only when it points at a file inside the set folder: a link to
    a photo elsewhere (another shoot, someone's home) is never followed.
    """
    exts = {e.lower() for e in rules.extensions}
    candidates, ignored = [], []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if not entry.is_file() or entry.name.startswith(".") or entry.name.lower() in IGNORED_NAMES:
            continue
        if entry.is_symlink() and not _inside(entry, folder):
            ignored.append(entry)
            continue
        (candidates if entry.suffix.lower() in exts else ignored).append(entry)
    return candidates, ignored


def validate_set_dirs(
    set_dirs: list[Path], settings: Settings, strict: bool | None = None
) -> ValidationReport:
    """Validate every set; the report says what is accepted, excluded and blocking."""
    rules = settings.validation
    strict = rules.strict if strict is None else strict
    reports: list[SetReport] = []
    jobs: list[tuple[SetReport, Path]] = []
    for raw in set_dirs:
        # The set's name is the *resolved* folder's: `run .` from two folders gives two
        # sets, never one with the empty name, and `run ..` names the parent folder.
        folder = Path(raw).expanduser().resolve()
        report = SetReport(name=folder.name, path=str(folder))
        reports.append(report)
        fault = set_name_fault(folder.name)
        if fault:
            report.blocking.append(f"{raw}: {fault}")
            continue
        if not folder.exists():
            report.blocking.append(f"folder {folder} does not exist")
            continue
        if not folder.is_dir():
            report.blocking.append(f"{folder} is not a folder")
            continue
        try:
            candidates, ignored = _candidate_files(folder, rules)
        except PermissionError:
            report.blocking.append(f"folder {folder} cannot be read: permission denied")
            continue
        for path in ignored:
            why = ("a symlink to a file outside the set folder: not followed"
                   if path.is_symlink() and not _inside(path, folder) else "not an image file type")
            report.files.append(FileCheck(set_name=report.name, name=path.name, path=str(path),
                                          verdict="ignored", messages=[why]))
        if not candidates:
            report.blocking.append(f"no images in {folder} (looked for {', '.join(rules.extensions)})")
        jobs += [(report, path) for path in candidates]

    with ThreadPoolExecutor(max_workers=settings.threads) as pool:
        checks = list(pool.map(lambda job: check_file(job[1], job[0].name, rules), jobs))
    for (report, _), check in zip(jobs, checks):
        report.files.append(check)
    for report in reports:
        report.files.sort(key=lambda f: (f.verdict == "ignored", f.name))

    _flag_duplicate_names(reports)
    for report in reports:
        if strict:
            report.blocking += [f"{f.name}: {'; '.join(f.messages)}" for f in report.excluded]
        if report.files and not report.accepted and not report.blocking:
            report.blocking.append("no usable images: every file was excluded")

    validation = ValidationReport(sets=reports)
    needed = sum(f.size for r in reports if r.ok for f in r.accepted)
    available = free_bytes(settings.incoming_dir)
    if needed + rules.disk_headroom_bytes > available:
        validation.blocking.append(
            f"not enough free disk under {settings.incoming_dir}: the copies need "
            f"{needed / 1e6:.0f} MB + {rules.disk_headroom_bytes / 1e6:.0f} MB headroom, "
            f"{available / 1e6:.0f} MB free"
        )
    return validation


def _flag_duplicate_names(reports: list[SetReport]) -> None:
    """A file name seen before (any chosen set, case-insensitive) is excluded.

    Web file names and the gallery's ``File_Name`` key must be unique, and two
    files of the same name are almost always one photo exported twice.
    """
    first_seen: dict[str, FileCheck] = {}
    for report in reports:
        for check in report.accepted:
            key = check.name.lower()
            if key in first_seen:
                check.verdict = "excluded"
                check.messages.append(f"duplicate file name: also in {first_seen[key].label}")
            else:
                first_seen[key] = check


@task(name="validate-sets", cache_policy=NO_CACHE)
def validate_sets(set_dirs: list[str], strict: bool | None = None) -> ValidationReport:
    """Stage 1 (writes nothing)."""
    return validate_set_dirs([Path(p) for p in set_dirs], get_settings(), strict)
