"""Run a check as an unprivileged user, so permission faults can be tested as root.

Root reads any file whatever its mode, and CI runs as root. ``as_nobody`` forks;
the child drops to ``nobody`` and runs the function; its ``str`` result comes back
through a pipe. Call the code under test once *before* (as root) so every module
and Pillow plugin it needs is already imported: ``nobody`` cannot read the
interpreter's files under /root.
"""

from __future__ import annotations

import os
from collections.abc import Callable

NOBODY = 65534


def as_nobody(fn: Callable[[], str]) -> str:
    if os.geteuid() != 0:
        return fn()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        status = 1
        try:
            os.close(read_end)
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(write_end, fn().encode())
            status = 0
        except BaseException as exc:  # report the failure to the parent
            os.write(write_end, f"child failed: {exc!r}".encode())
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        answer = reader.read()
    os.waitpid(pid, 0)
    return answer
