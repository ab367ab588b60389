"""Is the process that claimed a piece of work still alive?

An owner is ``host:pid:start-time``. The start time (psutil's ``create_time``)
guards against pid reuse: a new process that got the same pid after the owner
died is not the owner. Only the host that wrote an owner can answer for it;
readers elsewhere get ``None`` and must fall back to a heartbeat's age.
"""

from __future__ import annotations

import os
import socket

import psutil


def current_owner() -> str:
    """This process as an owner string (not cached: a forked child is another owner)."""
    return owner_of(os.getpid())


def owner_of(pid: int) -> str:
    """A process of this host (a child just started to do the work) as an owner string."""
    return f"{socket.gethostname()}:{pid}:{psutil.Process(pid).create_time():.2f}"


def owner_alive(owner: str | None) -> bool | None:
    """True or False for an owner on this host; None when it cannot be known here."""
    if not owner:
        return None
    try:
        host, pid_text, started_text = owner.rsplit(":", 2)
        pid, started = int(pid_text), float(started_text)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    try:
        process = psutil.Process(pid)
        same = abs(process.create_time() - started) < 0.05  # not a new process on a reused pid
        return same and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # it exists; we may not look at it
