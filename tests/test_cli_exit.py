"""The `galleryflow` console script: its exit skips the interpreter's teardown, and keeps
every exit status and every line of output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = "from galleryflow.app.warm import main; main()"  # what the console script runs


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "GALLERYFLOW_"))}
    env.update(GALLERYFLOW_HOME=str(tmp_path / "home"), COLUMNS="120",
               GALLERYFLOW_RUNTIME_DIR=str(tmp_path / "runtime"))
    return subprocess.run([sys.executable, "-c", SCRIPT, *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_console_script_is_main() -> None:
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "galleryflow"]
    # The warm-process client first (galleryflow.app.warm), which starts everything
    # but a batch command with a warm process to take it cold, through cli.main.
    assert script.value == "galleryflow.app.warm:main"


@pytest.mark.parametrize(("args", "status", "stream", "text"), [
    (("--help",), 0, "stdout", "Photo sets to a published web gallery"),
    (("no-such-command",), 2, "stderr", "No such command"),
    (("run",), 2, "stderr", "Missing argument"),
])
def test_exit_status_and_output_survive_the_quick_exit(tmp_path: Path, args: tuple[str, ...],
                                                         status: int, stream: str, text: str) -> None:
    done = _cli(tmp_path, *args)
    assert done.returncode == status, done.stderr
    assert text in getattr(done, stream)


def test_exit_handlers_run_before_the_quick_exit(tmp_path: Path) -> None:
    marker = tmp_path / "atexit-ran"
    script = ("import atexit, pathlib, sys\n"
              f"atexit.register(lambda: pathlib.Path({str(marker)!r}).write_text('yes'))\n"
              "sys.argv = ['galleryflow', '--help']\n" + SCRIPT)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "GALLERYFLOW_HOME": str(tmp_path / "h")})
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "yes"


@pytest.mark.parametrize(("exit_with", "status", "said"), [("3", 3, ""), ("None", 0, ""),
                                                          ("'boom'", 1, "boom")])
def test_every_kind_of_exit_status_is_kept(tmp_path: Path, exit_with: str, status: int,
                                           said: str) -> None:
    script = ("import sys\n"
              "import galleryflow.app.cli as cli\n"
              "def app():\n"
              "    print('last line')\n"
              f"    sys.exit({exit_with})\n"
              "cli.app = app\n"
              "cli.main()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "GALLERYFLOW_HOME": str(tmp_path / "h")})
    assert done.returncode == status
    assert done.stdout == "last line\n"
    assert said in done.stderr


def test_a_command_that_used_the_shared_work_pool_still_exits(tmp_path: Path) -> None:
    """The pool's idle threads (galleryflow.core.workers) are not daemons: the quick exit,
    which waits for such threads, stops them first (the demo once finished its work and
    then waited for them forever)."""
    script = ("import sys\n"
              "import galleryflow.app.cli as cli\n"
              "from galleryflow.core.workers import map_all\n"
              "def app():\n"
              "    print(sum(map_all(lambda i: i * i, range(10), 3)))\n"
              "cli.app = app\n"
              "cli.main()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "GALLERYFLOW_HOME": str(tmp_path / "h")})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "285\n"
