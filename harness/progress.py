"""Progress that shows on a terminal and in logs: rich bars on a terminal, plain lines when piped.

rich draws nothing until the end when its console is not a terminal (CI logs, ``ray job logs``,
``| tee``); :class:`LineProgress` prints one line per task at most every ``every_s`` seconds (and at
the end), with the same ``add_task``/``update`` calls as ``rich.progress.Progress``.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float = 0
    visible: bool = True
    fields: dict[str, Any] = field(default_factory=dict)
    printed_at: float = 0.0
    printed: tuple | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


class LineProgress:
    """``rich.progress.Progress``'s task calls, printed as plain lines."""

    def __init__(self, console: Console, every_s: float = 10.0) -> None:
        self.console, self.every_s = console, every_s
        self.tasks: list[_Task] = []
        self.start = time.monotonic()

    def add_task(self, description: str, total: float | None = None, visible: bool = True, **fields: Any) -> int:
        self.tasks.append(_Task(description, total, visible=visible, fields=fields))
        return len(self.tasks) - 1

    def update(self, task_id: int, *, total: float | None = None, completed: float | None = None, advance: float | None = None, visible: bool | None = None, **fields: Any) -> None:
        t = self.tasks[task_id]
        t.total = t.total if total is None else total
        t.completed = t.completed if completed is None else completed
        t.completed += advance or 0
        t.visible = t.visible if visible is None else visible
        t.fields.update(fields)
        done = t.total is not None and t.completed >= t.total
        if t.visible and (done or time.monotonic() - t.printed_at >= self.every_s):
            self._print(t)

    def advance(self, task_id: int, amount: float = 1) -> None:
        self.update(task_id, advance=amount)

    def _print(self, t: _Task) -> None:
        state = (t.completed, t.total, tuple(sorted(t.fields.items())))
        if state == t.printed:
            return
        t.printed, t.printed_at = state, time.monotonic()
        of = f"/{t.total:g}" if t.total else ""
        share = f" ({100 * t.completed / t.total:.0f} %)" if t.total else ""
        extra = "".join(f"  {v}" for v in t.fields.values() if v)
        self.console.print(f"{t.description}: {t.completed:g}{of}{share}{extra}  {time.monotonic() - self.start:.0f} s", markup=True, highlight=False)

    def close(self) -> None:
        for t in self.tasks:
            if t.visible and t.printed is not None:
                self._print(t)


@contextmanager
def progress(console: Console, *columns: Any) -> Iterator[Progress | LineProgress]:
    """A rich progress display on a terminal (``columns``, or description/bar/count/time), else plain lines."""
    if console.is_terminal:
        with Progress(*(columns or (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())), console=console, transient=True) as bar:
            yield bar
    else:
        lines = LineProgress(console)
        try:
            yield lines
        finally:
            lines.close()
