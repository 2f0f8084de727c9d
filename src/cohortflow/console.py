"""Terminal views: the backfill progress bar, an observer of the engine's commits."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from cohortflow.state import Cursors, OnCommit, TickStats


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


@contextmanager
def backfill_progress(log_path: Path) -> Iterator[OnCommit]:
    """A progress bar over the log's bytes; yields the ``on_commit`` callback that advances it."""
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress("[progress.description]{task.description}", *columns, transient=True) as bar:
        task = bar.add_task(str(log_path), total=_size(log_path))

        def advance(_: TickStats, cursors: Cursors) -> None:
            size = _size(log_path)
            bar.update(task, completed=cursors.log.offset, total=max(size, cursors.log.offset))

        yield advance
