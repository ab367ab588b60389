"""Everything checked before a batch job is accepted, so that a caller (the CLI, an AI
assistant over MCP) hears "no" at once, in words that name the problem — never
``pending`` first and a Python error later.

:func:`prepare` checks, in order: the parameters (preset, operation, values), the
glob (its syntax, its input folder, that it matches files), the output folder
(exists or can be created, is a folder, is writable, is not the input folder) and
the free disk for the estimated outputs. Nothing is written: a refused job leaves no
output folder behind. Any fault raises :class:`JobRefused`.
"""

from __future__ import annotations

import errno
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from galleryflow.batch.ops import estimate_output_bytes, check_pixels, load_font
from galleryflow.batch.outputs import folder_fault, glob_base, iter_inputs
from galleryflow.batch.presets import BatchRequest, PresetError, ResolvedJob, resolve
from galleryflow.core.fsutil import free_bytes
from galleryflow.core.settings import Settings, get_settings
from galleryflow.imaging import media

_WILDCARDS = set("*?[")


class JobRefused(ValueError):
    """The job cannot run as asked; the message says why, naming the path or value."""


@dataclass(frozen=True)
class Prepared:
    """A job that passed every check: what will run, and on what."""

    job: ResolvedJob
    input_pattern: str  # absolute
    base_dir: Path  # the glob's fixed folder: outputs keep the paths below it
    output_directory: Path  # absolute
    total: int
    estimated_bytes: int


def glob_problem(pattern: str) -> str | None:
    """What is wrong with a glob's syntax, or None."""
    if not pattern.strip():
        return "the input pattern is empty: give a glob such as 'photos/*.jpg'"
    if "\0" in pattern:
        return "the input pattern contains a NUL character"
    for part in Path(pattern).parts:
        if "**" in part and part != "**":
            return (f"bad glob {pattern!r}: '**' must be a whole folder level "
                    f"('photos/**/*.jpg'), not part of a name ({part!r})")
        depth = 0
        for char in part:
            if char == "[":
                depth += 1
            elif char == "]" and depth:
                depth -= 1
        if depth:
            return (f"bad glob {pattern!r}: '[' opens a set of characters that is never "
                    "closed with ']' (to match a literal '[', write '[[]')")
    if pattern.endswith(("/", os.sep)):
        return (f"bad glob {pattern!r}: it names a folder, not files; add a file pattern, "
                f"e.g. {pattern.rstrip('/' + os.sep) + '/*.jpg'!r}")
    return None


def absolute(path: str) -> str:
    """A glob or folder made absolute (``~`` expanded) against this process's working
    folder, so that a job run by another process finds the same files."""
    expanded = os.path.expanduser(path)
    return expanded if os.path.isabs(expanded) else os.path.join(os.getcwd(), expanded)


def check_input(pattern: str) -> Path:
    """The glob's input folder, checked (``pattern`` absolute, its syntax checked by
    :func:`glob_problem`); raises :class:`JobRefused`."""
    if not _WILDCARDS & set(pattern):
        path = Path(pattern)
        if path.is_dir():
            raise JobRefused(f"{pattern!r} is a folder, not a file pattern: use "
                             f"{str(path / '*')!r} for every file in it")
    base = glob_base(pattern)
    if not base.exists():
        raise JobRefused(f"input folder {base} does not exist")
    if not base.is_dir():
        raise JobRefused(f"input folder {base} is not a folder")
    if not os.access(base, os.R_OK | os.X_OK):
        raise JobRefused(f"no permission to read the input folder {base}")
    return base


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def check_output(out: Path, base: Path) -> Path:
    """The output folder: a folder (or creatable), writable, not the input folder.
    Returns the folder that exists (``out`` or its nearest existing parent). Creates
    nothing that stays."""
    if out == base:
        raise JobRefused(f"the output folder {out} is the input folder: choose another "
                         "(outputs would be mixed with the originals)")
    existing = _nearest_existing(out)
    if not existing.is_dir():
        what = "is a file" if existing == out else f"cannot be created: {existing} is a file"
        raise JobRefused(f"output folder {out} is not a folder ({what})")
    try:
        fd, probe = tempfile.mkstemp(prefix=".galleryflow-write-check-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        fault = folder_fault(exc, out)
        if fault is not None and exc.errno in (errno.EACCES, errno.EPERM) and existing != out:
            raise JobRefused(f"output folder {out} cannot be created: no permission to "
                             f"write in {existing}") from None
        if fault is not None and exc.errno == errno.EROFS and existing != out:
            raise JobRefused(f"output folder {out} cannot be created: {existing} is on a "
                             "read-only file system") from None
        raise JobRefused(str(fault) if fault else f"output folder {out}: {exc.strerror or exc}") \
            from None
    return existing


def estimate(pattern: str, job: ResolvedJob, out: Path, max_pixels: int) -> tuple[int, int]:
    """(files, estimated output bytes): one streaming pass over headers only."""
    total = estimated = 0
    for path in iter_inputs(pattern, exclude=out):
        total += 1
        try:
            probe = media.probe(path)
            check_pixels(probe, max_pixels)
            estimated += estimate_output_bytes(probe, job.operation, job.params)
        except Exception:
            pass  # its fault is reported when it is processed
    return total, estimated


def check_disk(out: Path, needed: int, headroom: int) -> None:
    free = free_bytes(out)
    if free < needed + headroom:
        raise JobRefused(
            f"Not enough free disk on {out}: about {needed / 1e6:.0f} MB needed for the "
            f"outputs plus {headroom / 1e6:.0f} MB kept free, {free / 1e6:.0f} MB available")


def resolve_request(request: BatchRequest, settings: Settings) -> ResolvedJob:
    """The parameters, resolved and checked (font, logo); raises :class:`JobRefused`."""
    try:
        job = resolve(request.operation, request.preset, request.parameters, settings)
        if job.params.watermark_text:
            load_font(job.params.watermark_font, job.params.watermark_size or 24)
    except PresetError as exc:
        raise JobRefused(str(exc)) from None
    return job


def prepare(request: BatchRequest, settings: Settings | None = None) -> Prepared:
    """Check a request completely; raises :class:`JobRefused` naming the first problem."""
    settings = settings or get_settings()
    job = resolve_request(request, settings)
    problem = glob_problem(request.input_pattern)
    if problem:
        raise JobRefused(problem)
    pattern = absolute(request.input_pattern)
    base = check_input(pattern)
    out = Path(absolute(request.output_directory.strip() or ".")).resolve()
    check_output(out, base)
    max_pixels = settings.validation.max_pixels
    total, estimated = estimate(pattern, job, out, max_pixels)
    if total == 0:
        raise JobRefused(f"No files match {request.input_pattern!r} (in {base})")
    check_disk(out, estimated, settings.batch.disk_headroom_bytes)
    return Prepared(job=job, input_pattern=pattern, base_dir=base, output_directory=out,
                    total=total, estimated_bytes=estimated)

