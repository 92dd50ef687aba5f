"""Progress for the CLI's long commands: a rich bar on a terminal, one plain line per change elsewhere.

A bar redraws itself in place; in a pipe or a log file those redraws become a run-on line mixed
with whatever else is printed, so there each update is its own line, whole and unwrapped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class TaskState:
    description: str = ""
    completed: float = 0
    total: float | None = None
    fields: dict = field(default_factory=dict)


class LineProgress:
    """The part of rich.progress.Progress the CLI uses (add_task, update, `with`), as plain lines."""

    def __init__(self, console, render: Callable[[TaskState], str]):
        self.console = console
        self.render = render
        self.tasks: list[TaskState] = []
        self._last = ""

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *_exc) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, **fields) -> int:
        self.tasks.append(TaskState(description, 0, total, fields))
        return len(self.tasks) - 1

    def update(self, task_id: int, *, description: str | None = None, completed: float | None = None,
               total: float | None = None, **fields) -> None:
        task = self.tasks[task_id]
        task.description = task.description if description is None else description
        task.completed = task.completed if completed is None else completed
        task.total = task.total if total is None else total
        task.fields.update(fields)
        line = self.render(task).strip()
        if line and line != self._last:  # an update that changes nothing shown prints nothing
            self._last = line
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)


def progress_for(console, render: Callable[[TaskState], str], *columns):
    """rich's Progress with `columns` when `console` is a terminal, else a LineProgress using `render`."""
    if console.is_terminal:
        from rich.progress import Progress

        return Progress(*columns, console=console)
    return LineProgress(console, render)
