"""Progress bars for long work: rich on a terminal, silent in logs and CI."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator


def _enabled() -> bool:
    if os.environ.get("PIT_PROGRESS") in ("0", "false"):
        return False
    return os.environ.get("PIT_PROGRESS") in ("1", "true") or sys.stderr.isatty()


@contextlib.contextmanager
def bar(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """Yield an `advance(n)` callable; a no-op where no terminal watches."""
    if not _enabled() or total <= 0:
        yield lambda n=1: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)
