"""A MariaDB server for the tests: ``GALLERYFLOW_TEST_MYSQL_URL`` or a private one.

The private server lives in a temporary data directory on a free loopback port
(no socket shared with the machine's own server) and is stopped at the end of
the test session. Each test that asks for a database gets a fresh, uniquely
named one, so parallel runs never see each other's tables.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.services import free_port, stop_process, unavailable, wait_for_port

ENV_URL = "GALLERYFLOW_TEST_MYSQL_URL"


def _binary(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
        if found:
            return found
    return None


@contextmanager
def private_mariadb() -> Iterator[str]:
    """Start a throw-away mariadbd; yield a server URL (no database part)."""
    server = _binary("mariadbd", "mysqld")
    install = _binary("mariadb-install-db", "mysql_install_db")
    if not server or not install:
        unavailable(
            f"MariaDB is not installed (no mariadbd / mariadb-install-db) and {ENV_URL} is not set; "
            "install the Debian package mariadb-server"
        )
    root = Path(tempfile.mkdtemp(prefix="gf-mariadb-"))
    datadir, sock = root / "data", root / "mysqld.sock"
    port = free_port()
    user = ["--user=root"] if os.geteuid() == 0 else []
    subprocess.run(
        [install, "--no-defaults", f"--datadir={datadir}", "--auth-root-authentication-method=normal",
         "--skip-test-db", *user],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(
        [server, "--no-defaults", f"--datadir={datadir}", f"--socket={sock}",
         f"--port={port}", "--bind-address=127.0.0.1", "--skip-name-resolve",
         "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M",
         "--skip-log-bin", f"--pid-file={root / 'mysqld.pid'}", *user],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        if not wait_for_port(port, timeout=60):
            log.flush()
            raise RuntimeError(f"private MariaDB did not start: {(root / 'server.log').read_text()[-2000:]}")
        yield f"mysql+pymysql://root@127.0.0.1:{port}"
    finally:
        stop_process(proc)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def mariadb_server() -> Iterator[str]:
    url = os.environ.get(ENV_URL)
    if url:
        yield url.rsplit("/", 1)[0] if url.count("/") > 2 else url
        return
    with private_mariadb() as server_url:
        yield server_url


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """Create a uniquely named database; yield its URL; drop it afterwards."""
    import pymysql

    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    name = f"gf_test_{uuid.uuid4().hex[:10]}"
    connect = dict(host=url.host, port=url.port or 3306, user=url.username,
                   password=url.password or "", charset="utf8mb4")
    deadline = time.monotonic() + 20
    while True:
        try:
            conn = pymysql.connect(**connect)
            break
        except pymysql.err.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    with conn:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    try:
        yield str(url.set(database=name).render_as_string(hide_password=False)) + "?charset=utf8mb4"
    finally:
        with pymysql.connect(**connect) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
