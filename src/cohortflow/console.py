"""Terminal views: the backfill progress bar."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

if TYPE_CHECKING:
    from cohortflow.engines.embedded import Cursors, EmbeddedEngine, TickStats


class BackfillProgress:
    """Run an engine with a progress bar over the log's bytes (for `run --once` on a terminal)."""

    def __init__(self, engine: EmbeddedEngine) -> None:
        self.engine = engine

    def run(self, stop: threading.Event | None = None) -> TickStats:
        """Run the engine, advancing the bar at every commit."""
        columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
        with Progress("[progress.description]{task.description}", *columns, transient=True) as bar:
            task = bar.add_task(self.engine.log.name, total=self.engine.log.size())

            def advance(_: TickStats, cursors: Cursors) -> None:
                size = self.engine.log.size()
                bar.update(task, completed=cursors.log.offset, total=max(size, cursors.log.offset))

            self.engine.on_commit = advance
            return self.engine.run(stop)
