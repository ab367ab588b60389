"""Where a batch job's outputs go, and how a rerun knows they are already done.

- Inputs are *streamed* from the glob (never listed in full), so a pattern that
  matches a million files costs no more memory than one that matches ten.
- An output keeps its input's path relative to the glob's fixed prefix, so a
  recursive ``photos/**/*.jpg`` keeps its folders and most name clashes vanish.
- Names are *claimed* in ``<output>/.galleryflow-batch/claims/``: a small record
  per output name saying which input owns it, created with an atomic hard link
  (fails if the name is taken, even across threads and processes). A name that
  exists on disk and is not ours (an input, the user's own file) is never used:
  the output gets ``-1``, ``-2``… instead. A rerun finds its own claim and reuses
  the name.
- The claim also records the *cache key* (the input's content digest + resolved
  parameters + ops version), the job that wrote it and the output's size once written: a rerun
  with the same key and a complete output skips the file, and a job whose process
  died is credited with the outputs it finished (:func:`finished_by`).
- Outputs are written by :func:`write_output`: a temporary name, then a rename
  (``core.fsutil.atomic_path``: the file lands with the umask's mode, 0644 under
  022), so a full disk or a kill never leaves a partial file under a final name.
- A fault of the output folder (read-only file system, no permission, not a
  folder, disk full) is no fault of the file being written: it raises
  :class:`OutputError`, which names the folder and stops the job.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import xxhash
from pydantic import BaseModel

from galleryflow.core.fsutil import CHUNK, atomic_path, atomic_write_text, default_file_mode

STATE_DIR = ".galleryflow-batch"
_WILDCARDS = set("*?[")


def glob_base(pattern: str) -> Path:
    """The pattern's fixed leading folders: ``photos/2026/**/*.jpg`` → ``photos/2026``."""
    parts = Path(os.path.expanduser(pattern)).parts
    fixed: list[str] = []
    for part in parts[:-1]:
        if _WILDCARDS & set(part):
            break
        fixed.append(part)
    if not fixed:
        return Path(".").resolve()
    return Path(*fixed).resolve()


def iter_inputs(pattern: str, exclude: Path | None = None) -> Iterator[Path]:
    """Files matching ``pattern`` (``**`` recursive), one at a time, sorted per folder
    level only by the OS. Hidden files and anything under ``exclude`` (the output
    folder, when it lies inside the input tree) are left out."""
    exclude_resolved = exclude.resolve() if exclude else None
    for name in glob.iglob(os.path.expanduser(pattern), recursive=True):
        path = Path(name)
        if path.name.startswith(".") or not path.is_file():
            continue
        resolved = path.resolve()
        if exclude_resolved and resolved.is_relative_to(exclude_resolved):
            continue
        yield resolved


# The input's content in a rerun key: XXH3-128, not sha256. The key only decides whether
# an output is already done (an accidental collision of 128 bits will not happen; nobody
# gains by forging one for their own batch), and it is a whole file's hash per input,
# at 0.25 ms for a 6-MB JPEG against 3.4 ms for sha256 with the CPU's SHA instructions:
# 5 % of a 24-MP thumbnail's CPU. A photo's identity in the gallery (the rows, the
# publish) stays its sha256 (galleryflow.core.fsutil).
DIGEST = "xxh3-128"


def content_digest(data: bytes | memoryview) -> str:
    """The content digest of a file's bytes already read."""
    return f"{DIGEST}:{xxhash.xxh3_128_hexdigest(data)}"


def content_digest_file(path: Path) -> str:
    """The content digest of a file, read as a stream (a video, a very large image)."""
    digest = xxhash.xxh3_128()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return f"{DIGEST}:{digest.hexdigest()}"


def cache_key(input_digest: str, operation: str, params: dict[str, Any], version: str) -> str:
    """Content + parameters + code version: equal keys make equal outputs."""
    canonical = json.dumps({"content": input_digest, "op": operation, "params": params,
                            "version": version}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


# Output-side errno values that are the folder's fault, not one file's, in plain words.
_FOLDER_FAULTS = {
    errno.ENOSPC: "Disk full: no space left on the file system of the output folder {folder}",
    errno.EDQUOT: "Disk quota exceeded on the output folder {folder}",
    errno.EROFS: "Output folder {folder} is on a read-only file system",
    errno.EACCES: "No permission to write in the output folder {folder}",
    errno.EPERM: "No permission to write in the output folder {folder}",
    errno.ENOTDIR: "Output folder {folder} is not a folder (a file is in the way)",
    errno.EEXIST: "Output folder {folder} is not a folder (a file is in the way)",
}


class OutputError(OSError):
    """The output folder cannot take the job's files: the job stops, naming the folder."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(errno_, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def folder_fault(exc: OSError, folder: Path) -> OutputError | None:
    """``exc``, raised while writing under ``folder``, as the folder's fault (or None
    when it is some other error, which stays the one file's)."""
    template = _FOLDER_FAULTS.get(exc.errno or 0)
    if template is None:
        return None
    return OutputError(template.format(folder=folder), exc.errno)


class OutputClaim(BaseModel):
    """The record behind one output name."""

    input: str
    output: str
    key: str | None = None
    size: int | None = None
    job: str | None = None  # the job that last wrote the output


class OutputRegistry:
    """Claims output names under one output directory (safe across threads and processes)."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir.resolve()
        self.claims_dir = self.output_dir / STATE_DIR / "claims"

    def _claim_file(self, output: Path) -> Path:
        rel = output.relative_to(self.output_dir).as_posix()
        return self.claims_dir / (hashlib.sha1(rel.encode()).hexdigest() + ".json")

    def desired(self, source: Path, base: Path, suffix: str) -> Path:
        try:
            rel = source.relative_to(base)
        except ValueError:
            rel = Path(source.name)
        return (self.output_dir / rel).with_suffix(suffix)

    def claim(self, source: Path, desired: Path, max_tries: int = 1000) -> tuple[Path, OutputClaim]:
        """The output path for ``source``: ``desired`` if free or already ours, else
        ``name-1.ext``, ``name-2.ext``… Never a path that exists and is not ours."""
        try:
            return self._claim(source, desired, max_tries)
        except OSError as exc:
            raise folder_fault(exc, self.output_dir) or exc

    def _claim(self, source: Path, desired: Path, max_tries: int) -> tuple[Path, OutputClaim]:
        self.claims_dir.mkdir(parents=True, exist_ok=True)
        source_str = str(source)
        for n in range(max_tries):
            candidate = desired if n == 0 else desired.with_name(f"{desired.stem}-{n}{desired.suffix}")
            record = self.read(candidate)
            if record is not None:
                if record.input == source_str:
                    return candidate, record
                continue  # another input owns this name
            if candidate.exists() or candidate.resolve() == source:
                continue  # an input or a file that is not ours: never overwrite it
            record = OutputClaim(input=source_str, output=str(candidate))
            if self._create(candidate, record):
                return candidate, record
        raise FileExistsError(f"no free output name for {source.name} after {max_tries} tries")

    def _create(self, output: Path, record: OutputClaim) -> bool:
        target = self._claim_file(output)
        fd, tmp = tempfile.mkstemp(prefix=".claim.", suffix=".part", dir=self.claims_dir)
        try:
            os.fchmod(fd, default_file_mode())  # mkstemp's 0600 otherwise
            with os.fdopen(fd, "w") as handle:
                handle.write(record.model_dump_json())
            os.link(tmp, target)  # atomic, and fails when the name is taken
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def read(self, output: Path) -> OutputClaim | None:
        try:
            return OutputClaim.model_validate_json(self._claim_file(output).read_text())
        except FileNotFoundError:
            return None

    def complete(self, output: Path, record: OutputClaim, key: str) -> bool:
        """True when ``output`` is the finished result of ``key`` (a rerun can skip it)."""
        if record.key != key or record.size is None:
            return False
        try:
            return output.stat().st_size == record.size
        except FileNotFoundError:
            return False

    def record_done(self, output: Path, record: OutputClaim, key: str, job: str | None = None) -> None:
        record = record.model_copy(update={"key": key, "size": output.stat().st_size, "job": job})
        try:
            atomic_write_text(self._claim_file(output), record.model_dump_json())
        except OSError as exc:
            raise folder_fault(exc, self.output_dir) or exc

    def write(self, output: Path, data: bytes) -> None:
        """``data`` to ``output``, atomically (see :func:`write_output`)."""
        try:
            write_output(output, data)
        except OSError as exc:
            raise folder_fault(exc, self.output_dir) or exc

    def finished_by(self, job: str) -> list[OutputClaim]:
        """The outputs ``job`` finished that are on disk, as their claims say."""
        found: list[OutputClaim] = []
        try:
            entries = list(self.claims_dir.glob("*.json"))
        except OSError:
            return found
        for entry in entries:
            try:
                claim = OutputClaim.model_validate_json(entry.read_text())
            except (OSError, ValueError):
                continue
            if claim.job == job and claim.size is not None:
                try:
                    if Path(claim.output).stat().st_size == claim.size:
                        found.append(claim)
                except OSError:
                    pass
        return found


def _write_all(handle, data: bytes) -> None:  # type: ignore[no-untyped-def]
    """Write ``data`` through ``handle`` in blocks (a full disk stops it part-way)."""
    view = memoryview(data)
    for start in range(0, len(view), 1 << 20):
        handle.write(view[start:start + (1 << 20)])


def write_output(output: Path, data: bytes) -> None:
    """Write an output file atomically: a hidden temporary name beside it, renamed into
    place once complete, with the umask's mode. Any error (a full disk part-way
    through) removes the temporary file: no partial file is ever left."""
    with atomic_path(output) as tmp:
        with open(tmp, "wb") as handle:
            _write_all(handle, data)
