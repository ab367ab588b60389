"""A worker process reuses its photos' freed buffers instead of faulting in new pages.

:mod:`galleryflow.core.memory` sets glibc's mmap and trim thresholds in the processes
that do image work (a CLI command, a batch worker, a deployment's flow run). What is
checked is the behaviour it is for, counted by the kernel: a 40-MB buffer (a decoded
24-MP photo at 1/2 scale is 24 MB) allocated, written and freed five times costs
~10,000 page faults each time without it, and none after the first with it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from galleryflow.core import memory

BUFFER_PAGES = (40 << 20) // 4096

_SCRIPT = textwrap.dedent("""
    import resource, sys
    from galleryflow.core import memory

    if sys.argv[1] == "tuned":
        print("set" if memory.reuse_freed_memory() else "unset")
    elif sys.argv[1] == "flows":
        import flows  # a deployment's flow run imports the flows first
        print("set" if memory._done else "unset")
    else:
        print("untouched")

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def photo():
        buf = bytearray(40 << 20)
        buf[::4096] = b"\\x01" * len(range(0, len(buf), 4096))  # every page written
        del buf

    photo()  # the first photo's pages are new either way
    before = faults()
    for _ in range(5):
        photo()
    print(faults() - before)
""")


def _run(mode: str, **env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items()
             if k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], env={**clean, **env},
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0], int(out[1])


def _glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc ")
    except (AttributeError, ValueError, OSError):
        return False


def test_freed_photo_buffers_are_reused_instead_of_faulted_in_again() -> None:
    state, untuned = _run("default")
    assert state == "untouched"
    if not _glibc():  # nothing to tune there, and nothing is claimed
        assert _run("tuned")[0] == "unset"
        return
    # glibc's own behaviour, which this module exists for: each photo's pages are new.
    assert untuned >= 5 * BUFFER_PAGES * 0.9, untuned
    state, tuned = _run("tuned")
    assert state == "set"
    assert tuned < BUFFER_PAGES // 10, f"{tuned} page faults for five reused buffers"


def test_importing_the_flows_sets_it_for_a_deployment_run() -> None:
    state, faults = _run("flows")
    assert state == ("set" if _glibc() else "unset")
    if _glibc():
        assert faults < BUFFER_PAGES // 10, faults


def test_a_user_who_tuned_malloc_keeps_their_settings() -> None:
    threshold = "glibc.malloc.mmap_threshold=1048576"
    state, faults = _run("tuned", GLIBC_TUNABLES=threshold)
    assert state == "unset"
    if _glibc():  # their 1-MB threshold stands: every photo maps new pages again
        assert faults >= 5 * BUFFER_PAGES * 0.9, faults
    assert _run("tuned", MALLOC_TRIM_THRESHOLD_="131072")[0] == "unset"


def test_it_is_done_once_per_process() -> None:
    first = memory.reuse_freed_memory()
    assert memory.reuse_freed_memory() is first
