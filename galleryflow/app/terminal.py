"""The terminal side of long work: a console and one progress bar per stage."""

from __future__ import annotations

import weakref
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from galleryflow.core import progress as stage_progress


_consoles: "weakref.WeakSet[Console]" = weakref.WeakSet()


def terminal_console(stderr: bool = False) -> Console:
    # Outside a terminal (CI logs, pipes) rich would assume 80 columns and fold tables.
    probe = Console(stderr=stderr)
    console = Console(stderr=stderr, width=None if probe.is_terminal else 160)
    _consoles.add(console)
    return console


_consoles: "weakref.WeakSet[Console]" = weakref.WeakSet()


def refresh_consoles() -> None:
    """Every console made here looks at its stream again (terminal or not, width,
    colours): a warm process (:mod:`galleryflow.app.warm`) made them before it was
    given the terminal of the command it runs."""
    for console in list(_consoles):
        probe = Console(stderr=console.stderr)
        console.__init__(stderr=console.stderr,  # type: ignore[misc]
                         width=None if probe.is_terminal else 160)


class ProgressBars:
    """A rich progress bar per stage, fed by :mod:`galleryflow.core.progress` listeners.

    Listeners receive deltas (newly done, newly added to the total), because a
    stage runs as several chunks, each reporting its own share.
    """

    def __init__(self, console: Console | None = None) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console or terminal_console(), transient=False,
        )
        self.tasks: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, added: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=0)
        task_id = self.tasks[stage]
        if added:
            total = self.progress.tasks[self.progress.task_ids.index(task_id)].total or 0
            self.progress.update(task_id, total=total + added)
        if done:
            self.progress.advance(task_id, done)

    def __enter__(self) -> "ProgressBars":
        stage_progress.add_listener(self)
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()
        stage_progress.remove_listener(self)
