"""Real services for the tests, started privately on loopback.

Each service follows the same rule (DEVELOPERS.md):

1. an environment variable names a running service → use it;
2. otherwise the server binary is installed → start a private one on a free
   loopback port in a temporary directory, and tear it down afterwards;
3. otherwise skip with a loud reason, or fail when
   ``GALLERYFLOW_REQUIRE_SERVICES=1`` (CI sets it: a skipped check is not a pass).
"""

from __future__ import annotations

import os
import socket
import subprocess

import pytest


def require_services() -> bool:
    return os.environ.get("GALLERYFLOW_REQUIRE_SERVICES", "") not in ("", "0", "false")


def unavailable(reason: str) -> None:
    """Skip (or, under GALLERYFLOW_REQUIRE_SERVICES, fail) because a service is missing."""
    message = f"SERVICE UNAVAILABLE: {reason}"
    if require_services():
        pytest.fail(message + " (GALLERYFLOW_REQUIRE_SERVICES is set)", pytrace=False)
    pytest.skip(message)  # a failure instead when GALLERYFLOW_REQUIRE_SERVICES is set (above)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def stop_process(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Stop a private server: SIGTERM, then SIGKILL if it has not exited in time."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
