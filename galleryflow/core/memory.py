"""Keep freed image memory for the next photo instead of handing it back to the system.

Every photo a run or batch job handles allocates the same few large buffers: the
file's bytes (~6 MB for a 24-MP JPEG), the decoded pixels (24 MB at 1/2 scale), the
resized web image (11 MB), libjpeg's work arrays. glibc's malloc serves allocations
this large with fresh ``mmap`` pages, or trims them off its heap once freed (its
dynamic threshold stops at 32 MB, and the trim threshold follows it), so the next
photo's buffers are new pages again, each a zeroed 4-KB page. Measured on 24-MP
photos (the publish's decode → Lanczos → two progressive JPEGs, two threads): ~14,000
page faults and ~25 ms of system time a photo; with the thresholds below ~1,350 faults
and 3-6 ms, and the photo's web images ~15 % faster.

What it costs: freed memory stays with the process, up to the peak it reached (each
of glibc's per-thread arenas keeps its own: a few photos' buffers), until the process
ends. Every CLI command sets it (a run, a batch job: short-lived), as do the batch
worker and importing the flows (a deployment's flow run); a long-lived one (``watch``,
a Prefect worker serving the deployments) keeps its peak between runs instead of
handing it back. The warm process and the Prefect server do not set it.

Why hand-written: no library tunes the allocator; ``mallopt`` is glibc's own,
documented interface (``GLIBC_TUNABLES`` is the same at process start, which the
cold command has passed). Elsewhere (musl, macOS) this does nothing. A user who set
glibc's malloc tunables or ``MALLOC_*_`` variables keeps them.
"""

from __future__ import annotations

import ctypes
import os

# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

# Buffers below this come from the heap (reused) rather than from their own mmap:
# above any per-photo buffer of a 24-MP photo at the web and model sizes; a full
# decode of a very large image (~480 MB for 120 MP) still gets its own mapping.
MMAP_THRESHOLD = 256 * 1024 * 1024
# Free memory at the top of a heap is handed back only above this.
TRIM_THRESHOLD = 512 * 1024 * 1024

_done: bool | None = None


def _user_tuned() -> bool:
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return True
    return any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))


def reuse_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process (once; inherited by a
    fork). True when they are set (now or before), False where this does nothing."""
    global _done
    if _done is not None:
        return _done
    _done = False
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""  # "glibc 2.36"; absent elsewhere
    except (AttributeError, ValueError, OSError):
        libc = ""
    if not libc.startswith("glibc ") or _user_tuned():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
