"""The ``galleryflow`` console script, and warm processes that run commands at once.

Much of what a short command costs is Python importing what it needs: ~1 s of CPU
for ``galleryflow batch process`` on a 2-core machine (typer, pydantic-settings,
Pillow, SQLAlchemy: more than the work on 16 photos), ~3 s for ``galleryflow run``
(Prefect and every stage: more than the flow run on one photo). So, like
Mercurial's ``chg`` command server, the first such command leaves a process behind
with those imports done (:func:`serve`, one per user, kind and installed code, on a
Unix socket in a private folder), and the next one is a small client (:func:`main`,
standard library only) that hands it the command:

- the client sends its arguments, working directory, environment and umask, and
  passes its own stdin, stdout and stderr (``SCM_RIGHTS``): the command reads and
  writes the user's terminal itself (colours, width, progress bars, the review
  gate's prompt);
- the service forks a child per command, which takes those (settings are read
  afresh from that environment and folder: any home, any ``galleryflow.toml``;
  Prefect's settings too, :func:`galleryflow.core.prefect_env.configure_prefect_env`)
  and runs the very same typer command as a cold start would; its exit status
  comes back to the client, which exits with it;
- Ctrl-C, ``kill`` and a closing terminal reach the command: the client forwards
  SIGINT, SIGTERM, SIGHUP and SIGQUIT (Ctrl-Z stops and resumes it too), and a
  client that dies unannounced (SIGKILL) is seen by the service, which hangs the
  command up (SIGHUP), as a closing terminal would. A batch job runs in a worker
  of its own session either way (``galleryflow.app.batch_jobs``) and outlives
  its command, warm or cold; a run killed with its command is recovered as ever;
- the service is for this user only: its folder is the user's own and private
  (0700, checked), and it answers only peers of the same uid (``SO_PEERCRED``). Its
  socket is named after the installed code (interpreter, site-packages, every
  galleryflow source file's size and time): code that changed is never served by
  an old process, which idles out;
- it stops after ``ops.warm_minutes`` without a command (default 10; 0: no warm
  process is ever started, and one already running stops after the command it is
  serving), on SIGTERM, or when its socket is gone. Nothing else goes wrong when it
  is not there, or dies: the command starts cold, as before, and starts a new one
  on its way out.

Two kinds, because a run's imports weigh ~300 MB and ~3 s that a batch user need
not pay: ``batch`` (``batch process``, ``batch status``) and ``run``. Nothing a
service loads may start a thread (checked): a fork keeps only the forking one.
Other commands start cold, as ever.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Nothing else at module level: the client side must cost no more than an interpreter.

# The commands handed over, and the kind of warm process each needs: the batch
# commands' imports (~1 s of CPU) or a run's (Prefect and every stage: ~3 s).
KINDS = {("batch", "process"): "batch", ("batch", "status"): "batch", ("run",): "run"}
OFF = "GALLERYFLOW_OPS__WARM_MINUTES"  # "0" in the environment: always start cold
RUNTIME = "GALLERYFLOW_RUNTIME_DIR"  # where the socket lives (tests use their own)
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_HEADER = struct.Struct("!I")
ANSWER_SECONDS = 20.0  # for a warm process to fork the command (it takes milliseconds)


# ---------------------------------------------------------------- where it lives

def runtime_dir(create: bool = False) -> Path | None:
    """The user's private folder for the socket; None if there is none that is safe."""
    chosen = os.environ.get(RUNTIME)
    if chosen:
        folder = Path(chosen)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        folder = Path(os.environ["XDG_RUNTIME_DIR"]) / "galleryflow"
    else:
        folder = Path("/tmp") / f"galleryflow-{os.getuid()}"
    if create:
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            return None
    try:
        st = os.lstat(folder)
    except OSError:
        return None
    import stat

    # Someone else's folder, a link, or one others may write to: not ours to trust.
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return folder


def code_fingerprint(package: Path | None = None) -> str:
    """Names the installed code: the interpreter, its site-packages (a package added,
    removed or upgraded changes that folder), and every galleryflow source file."""
    import hashlib

    package = package or Path(__file__).resolve().parents[1]
    # The interpreter's real file and the environment's prefix: `python` and `python3`
    # of one venv are one interpreter; two venvs of one Python are not one install.
    digest = hashlib.sha256(
        f"{os.path.realpath(sys.executable)}\0{sys.prefix}\0{package}\0".encode())
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    try:
        digest.update(str(os.stat(Path(sys.prefix, "lib", version, "site-packages"))
                          .st_mtime_ns).encode())
    except OSError:
        pass
    stack = [str(package)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        stack.append(entry.path)
                elif entry.name.endswith((".py", ".txt", ".html", ".ini", ".mako")):
                    st = entry.stat(follow_symlinks=False)
                    digest.update(f"{entry.path}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:20]


def socket_path(kind: str, create: bool = False) -> Path | None:
    folder = runtime_dir(create)
    return None if folder is None else folder / f"{kind}-{code_fingerprint()}.sock"


# A Unix socket's address holds at most 107 bytes on Linux (103 on the BSDs and
# macOS); a runtime folder deep enough (a long $XDG_RUNTIME_DIR or
# GALLERYFLOW_RUNTIME_DIR, a test's tmp_path) makes bind() and connect() fail with
# "AF_UNIX path too long".
_SUN_PATH_MAX = 103


@contextmanager
def _address(path: Path) -> Iterator[str | None]:
    """An address for the socket file ``path`` that fits: the path itself, or the same
    file reached through its folder's descriptor (``/proc/self/fd/N/name``: Linux
    resolves the folder from the open descriptor, so the address stays short however
    deep the folder is). None where neither fits: that command simply starts cold."""
    name = str(path)
    if len(os.fsencode(name)) <= _SUN_PATH_MAX:
        yield name
        return
    try:
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield None
        return
    try:
        short = f"/proc/self/fd/{fd}/{path.name}"
        yield short if os.path.isdir(f"/proc/self/fd/{fd}") and len(short) <= _SUN_PATH_MAX else None
    finally:
        os.close(fd)


def _connect(conn: socket.socket, path: Path) -> None:
    """``conn.connect`` to the socket file ``path`` (OSError when it cannot)."""
    with _address(path) as address:
        if address is None:
            raise OSError(f"no usable address for {path}")
        conn.connect(address)


def kind_of(argv: list[str]) -> str | None:
    """The kind of warm process that runs ``argv``; None: it starts cold."""
    if "--help" in argv or os.environ.get(OFF, "").strip() in ("0", "0.0"):
        return None
    return KINDS.get(tuple(argv[:2])) or KINDS.get(tuple(argv[:1]))


# ---------------------------------------------------------------- the client

def main() -> None:  # pragma: no cover - the console script; tests run both sides
    """``galleryflow``: ``run`` and the batch commands go to a warm process when there
    is one; everything else (and those, when there is none) starts cold."""
    argv = sys.argv[1:]
    kind = kind_of(argv)
    if kind is not None:
        code = run_warm(argv, socket_path(kind))
        if code is not None:
            os._exit(code)
    from galleryflow.app.cli import run_app

    code = run_app()  # cold, then the exit handlers (see galleryflow.app.cli.main)
    if kind is not None and code in (0, 3):  # ran (3: a batch job's partial); not a typo
        start_service(kind)  # the next such command finds it warm
    os._exit(code)


def run_warm(argv: list[str], path: Path | None) -> int | None:
    """Run ``argv`` in the warm process at ``path``: its exit status, or None when
    there is none to run it (nothing was run: start cold)."""
    if path is None:
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _connect(conn, path)
        request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                              "umask": _umask()}).encode()
        socket.send_fds(conn, [_HEADER.pack(len(request)) + request], [0, 1, 2])
        conn.settimeout(ANSWER_SECONDS)
        reader = conn.makefile("rb")
        first = reader.readline()
    except TimeoutError:
        _drop_hung(conn, path)
        return None
    except OSError:
        conn.close()
        return None  # no service, a stale socket, or it died before it forked
    if not first.startswith(b"P "):
        conn.close()
        return None
    conn.settimeout(None)
    child = int(first.split()[1])
    _forward_signals(child)
    try:
        line = reader.readline()
    finally:
        for signum in (*FORWARDED, signal.SIGTSTP, signal.SIGCONT):
            signal.signal(signum, signal.SIG_DFL)
        conn.close()
    kind, _, value = line.decode(errors="replace").partition(" ")
    if kind == "X":
        return int(value)
    if kind == "K":  # the command was killed by a signal: the shell's way to say so
        return 128 + int(value)
    print("galleryflow: the command's process ended without a word "
          f"(its service's log: {path.with_suffix('.log')})", file=sys.stderr)
    return 1


def _drop_hung(conn: socket.socket, path: Path) -> None:
    """A warm process that took the command but never forked for it (stopped, stuck):
    it is killed and its socket removed, so this command (cold) and the next ones
    do not wait on it. Closing first makes a child it forks after all fail to
    announce itself, and a child that cannot announce itself runs nothing."""
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid = struct.unpack("3i", creds)[0]
    except OSError:
        pid = 0
    conn.close()
    if pid > 0:
        _signal(pid, signal.SIGKILL)
    try:
        path.unlink()
    except OSError:
        pass
    print(f"galleryflow: the warm process at {path} did not answer in {ANSWER_SECONDS:g} s: "
          "stopped; starting cold", file=sys.stderr)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _forward_signals(child: int) -> None:
    def forward(signum: int, _frame: object) -> None:
        _signal(child, signum)

    def stop(_signum: int, _frame: object) -> None:  # Ctrl-Z: the command stops with us
        _signal(child, signal.SIGSTOP)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)

    def resume(_signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTSTP, stop)
        _signal(child, signal.SIGCONT)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    signal.signal(signal.SIGTSTP, stop)
    signal.signal(signal.SIGCONT, resume)


def start_service(kind: str) -> None:
    """Leave a warm process of ``kind`` behind for the next such command (this
    command's settings say for how long; none when they say 0, or one is there)."""
    try:
        from galleryflow.core.settings import get_settings

        minutes = get_settings().ops.warm_minutes
        path = socket_path(kind, create=True)
        if minutes <= 0 or path is None or answers(path):
            return
        import subprocess

        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        source = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = source  # this very code, whatever the folder it starts in
        with open(path.with_suffix(".log"), "ab") as log:
            subprocess.Popen([sys.executable, "-m", "galleryflow.app.warm", "serve", kind,
                              str(path), str(minutes)], cwd="/", stdin=subprocess.DEVNULL,
                             stdout=log, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True, close_fds=True)
    except Exception:  # noqa: BLE001 - a convenience: the next command just starts cold
        pass


def answers(path: Path) -> bool:
    """Whether a warm process listens at ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _connect(probe, path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


# ---------------------------------------------------------------- the service

def serve(kind: str, path: Path, minutes: float) -> None:
    """Import what the commands of ``kind`` need, then fork a child per command until
    ``minutes`` pass without one (or SIGTERM, or the socket is gone)."""
    import fcntl

    lock = open(path.with_suffix(".lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another one is starting or serving
    if answers(path):
        return
    _preload(kind)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path.unlink(missing_ok=True)  # a dead service's socket
    with _address(path) as address:
        if address is None:
            print(f"{time.strftime('%F %T')} no warm process: the socket's path is too long "
                  f"for a Unix socket address ({path})", flush=True)
            return
        listener.bind(address)
    os.chmod(path, 0o600)
    listener.listen(16)
    bound = os.stat(path).st_ino
    print(f"{time.strftime('%F %T')} serving {kind} commands at {path} (pid {os.getpid()}, "
          f"idle limit {minutes:g} min)", flush=True)
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    children: dict[int, socket.socket] = {}  # command pid → its client's connection
    hung_up: set[int] = set()  # commands told their client is gone (no longer watched)
    idle_since = time.monotonic()
    try:
        while not stopping:
            watched = [c for p, c in children.items() if p not in hung_up]
            ready, _, _ = select.select([listener, *watched], [], [], 1.0)
            for conn in ready:
                if conn is listener:
                    child = _accept(listener, children)
                    if child is not None:
                        children[child[0]] = child[1]
                elif not _peek(conn):  # the client is gone: hang its command up, once
                    pid = next(p for p, c in children.items() if c is conn)
                    hung_up.add(pid)
                    _signal(pid, signal.SIGHUP)
                    _signal(pid, signal.SIGCONT)  # a command stopped by Ctrl-Z dies too
            _reap(children)
            hung_up &= children.keys()
            if children:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > minutes * 60:
                print(f"{time.strftime('%F %T')} idle for {minutes:g} min: stopping", flush=True)
                break
            try:
                if os.stat(path).st_ino != bound:
                    break
            except FileNotFoundError:
                break
    finally:
        try:
            if os.stat(path).st_ino == bound:
                path.unlink()
        except FileNotFoundError:
            pass
        listener.close()


def _preload(kind: str) -> None:
    """What a command of ``kind`` imports, done once here (a child inherits it by
    fork). Nothing here may start a thread: a fork keeps only the one that forks."""
    load_for(kind)
    import threading

    if threading.active_count() != 1:
        raise RuntimeError(f"a thread was started while loading: {threading.enumerate()}")
    # Everything loaded goes to the collector's permanent generation, which no
    # collection scans: a forked command's first full collection went through all of
    # it (~345,000 objects after a run's imports: 0.16-0.27 s of CPU in every run,
    # on its single-threaded start) and wrote to each object's header, copying the
    # service's pages into the child. This is the use Python's gc.freeze documents
    # (fork without exec). What the service allocates later is small and collected.
    gc.freeze()


def load_for(kind: str) -> None:
    """Import and set up once what a command of ``kind`` would otherwise load on its
    way: the warm service's preload (:func:`_preload`), and the in-process benches'
    start, so that they time a run as a warm command's child starts it."""
    import io

    import sqlalchemy
    from PIL import Image
    from rich.console import Console
    from sqlalchemy.orm import configure_mappers

    import galleryflow.app.batch_jobs  # noqa: F401
    import galleryflow.app.batch_worker  # noqa: F401
    import galleryflow.app.cli  # typer, rich, settings, every command
    import galleryflow.batch.ops  # noqa: F401
    import galleryflow.batch.runner  # noqa: F401
    import galleryflow.batch.status  # noqa: F401
    import galleryflow.core.liveness  # noqa: F401
    from galleryflow.app.terminal import ProgressBars
    from galleryflow.db.engine import quick_head_revision

    # What each command would otherwise do for the first time itself (measured, with
    # strace, at ~0.1 s of a warm command's 0.2): typer's click command and its lazy
    # modules, rich's markup and progress rendering, SQLAlchemy's SQLite dialect and
    # mapper set-up, the migrations' head, every Pillow format plugin.
    galleryflow.app.cli.command()  # typer's click command, made once for every child
    scratch = Console(file=io.StringIO(), force_terminal=True, width=80)
    with ProgressBars(scratch) as bars:
        bars("warm-up :camera:", 1, 1)
    configure_mappers()
    sqlalchemy.create_engine("sqlite://").dispose()
    quick_head_revision()
    Image.init()
    if kind == "run":
        import importlib

        import flows.process_sets  # noqa: F401 - Prefect, every stage, the gate, publish
        import flows.review_publish  # noqa: F401
        import galleryflow.app.local_server  # noqa: F401
        import galleryflow.review.answer  # noqa: F401
        from galleryflow.captioning.guardrails import preload

        # What each run's child still imported on its way (listed from sys.modules
        # before and after a 48-photo run: ~190 modules, ~0.2 s of one core at the
        # flow's start and first tasks): Prefect's task engine, the fastapi encoders
        # its parameter serialisation imports, the MySQL dialect of the site's table,
        # the image plugins a set's files need.
        for name in ("prefect.task_engine", "prefect.concurrency.sync",
                     "prefect.utilities.visualization", "fastapi.encoders",
                     "sqlalchemy.dialects.mysql", "PIL.JpegImagePlugin", "PIL.PngImagePlugin",
                     "PIL.TiffImagePlugin", "PIL.IptcImagePlugin", "_strptime"):
            importlib.import_module(name)
        preload()  # the guardrails' data: the gazetteer, the noun lemmas, emoji
        from galleryflow.core.tls import tls_context

        tls_context()  # the health check's and the Ollama client's CA bundle, loaded once
        _warm_image_work()


def _warm_image_work() -> None:
    """Take one tiny JPEG through what a run does to each photo (scaled decode, reduce,
    JPEG encode, the scoring statistics and pHash) so that the lazy set-ups on the way
    happen here once and not in every command's first photo: numpy's first median and
    float conversion alone took ~13 ms of a run's first scoring chunk."""
    import io

    from PIL import Image

    from galleryflow.core.fsutil import HASHES
    from galleryflow.imaging.decode import DECODES, open_reduced
    from galleryflow.imaging.geometry import reduce
    from galleryflow.imaging.stats import image_stats, phash

    source = io.BytesIO()
    Image.linear_gradient("L").resize((96, 64)).convert("RGB").save(source, "JPEG", quality=85)
    image = open_reduced(io.BytesIO(source.getvalue()), 48)
    small = reduce(image, 32, copy=True)
    image_stats(small)
    phash(small)
    small.save(io.BytesIO(), "JPEG", quality=85, optimize=True, progressive=True)
    DECODES.reset()  # the tallies count a run's photos only (bench/)
    HASHES.reset()


def _peek(conn: socket.socket) -> bool:
    """False once the client has closed its end (nothing else is ever sent)."""
    try:
        return bool(conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return True
    except OSError:
        return False


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError:  # gone already (or, reused, no longer ours)
        pass


def _reap(children: dict[int, socket.socket]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        if os.WIFSIGNALED(status):  # it said nothing itself
            try:
                conn.sendall(f"K {os.WTERMSIG(status)}\n".encode())
            except OSError:
                pass
        conn.close()


def _accept(listener: socket.socket, children: dict[int, socket.socket]
            ) -> tuple[int, socket.socket] | None:
    conn, _ = listener.accept()
    fds: list[int] = []
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        if struct.unpack("3i", creds)[1] != os.getuid():
            raise PermissionError("another user")
        conn.settimeout(5.0)
        data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        if not data and not fds:  # a probe (is anyone there?), not a command
            conn.close()
            return None
        if len(fds) != 3 or len(data) < _HEADER.size:
            raise ValueError("not a galleryflow client")
        (size,) = _HEADER.unpack_from(data)
        data = data[_HEADER.size:]
        while len(data) < size:
            more = conn.recv(size - len(data))
            if not more:
                raise ValueError("the client left")
            data += more
        request = json.loads(data)
        pid = os.fork()
    except Exception as exc:  # noqa: BLE001 - that client is refused; the service goes on
        print(f"{time.strftime('%F %T')} refused a client: {exc}", flush=True)
        for fd in fds:
            os.close(fd)
        conn.close()
        return None
    if pid == 0:
        listener.close()
        for other in children.values():
            other.close()
        _command(conn, fds, request)  # never returns
    for fd in fds:
        os.close(fd)
    print(f"{time.strftime('%F %T')} pid {pid}: galleryflow {' '.join(request['argv'][:2])}",
          flush=True)
    return pid, conn


def _command(conn: socket.socket, fds: list[int], request: dict[str, Any]) -> None:
    """The forked child: become the client's command, run it, say how it ended."""
    code = 1
    try:
        # First: the client runs the command cold unless it hears this (nothing ran yet).
        conn.sendall(f"P {os.getpid()}\n".encode())
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        conn.settimeout(None)
        os.chdir(request["cwd"])
        os.umask(int(request["umask"]))
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["galleryflow", *request["argv"]]
        for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
            stream.reconfigure(line_buffering=os.isatty(fd))  # as Python picks at start
        code = _run()
    except BaseException:  # noqa: BLE001 - on the user's terminal, as a cold start would
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        try:
            conn.sendall(f"X {code}\n".encode())
        finally:
            os._exit(code)


def _run() -> int:
    """The command, as ``galleryflow.app.cli.main`` runs it cold, in this environment."""
    from galleryflow.app import terminal
    from galleryflow.app.cli import run_app
    from galleryflow.core.prefect_env import configure_prefect_env
    from galleryflow.core.settings import get_settings, reset_settings

    configure_prefect_env()  # what importing galleryflow does in a cold start
    reset_settings()
    terminal.refresh_consoles()  # this terminal's width and colours, not the service's
    if get_settings().ops.warm_minutes <= 0:
        _signal(os.getppid(), signal.SIGTERM)  # no warm process wanted: this one is the last
    return run_app()  # sys.argv is the client's


if __name__ == "__main__":  # pragma: no cover - started by start_service
    if sys.argv[1:2] == ["serve"] and len(sys.argv) == 5 and sys.argv[2] in set(KINDS.values()):
        serve(sys.argv[2], Path(sys.argv[3]), float(sys.argv[4]))
    else:
        print("usage: python -m galleryflow.app.warm serve batch|run SOCKET MINUTES",
              file=sys.stderr)
        sys.exit(2)
