"""Progress of long commands: a bar on a terminal, whole plain lines in a pipe or a file."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from engine.progress import LineProgress, progress_for


def _line(task) -> str:
    return f"{task.description} {task.completed}/{task.total or '?'} {task.fields['info']}"


def test_a_pipe_gets_one_whole_line_per_change():
    out = io.StringIO()
    console = Console(file=out, width=40)  # not a terminal, and narrower than the lines
    progress = progress_for(console, _line, TextColumn("{task.description}"), BarColumn())
    assert isinstance(progress, LineProgress)
    with progress:
        task = progress.add_task("starting", total=None, info="")
        progress.update(task, description="loading the base model and its tokenizer from the cache")
        progress.update(task, description="training", total=60, completed=0)
        progress.update(task, completed=12, info="loss 0.0338  170 tok/s")
        progress.update(task, completed=12, info="loss 0.0338  170 tok/s")  # nothing new: no line
        console.print("scorecard written to /some/long/path/of/the/run/scorecard.json", soft_wrap=True)
    assert out.getvalue().splitlines() == [
        "loading the base model and its tokenizer from the cache 0/?",
        "training 0/60",
        "training 12/60 loss 0.0338  170 tok/s",
        "scorecard written to /some/long/path/of/the/run/scorecard.json",
    ]


def test_a_terminal_gets_rich_s_bar():
    console = Console(file=io.StringIO(), force_terminal=True)
    assert isinstance(progress_for(console, _line, TextColumn("{task.description}")), Progress)
