"""Pushing commits to open pages: one cheap watcher, many server-sent-event streams.

While at least one page listens, a single task asks the warehouse every
:data:`POLL_SECONDS` for its commit marker (the newest ``pipeline_state``
``updated_at``: one indexed read, in its own short transaction). When the
marker moves, every listener wakes up, re-reads its own view and pushes it
if it changed. Pages never poll: they hold one ``EventSource`` open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from typing import Any

from starlette.concurrency import run_in_threadpool

from cohortflow.dashboard import queries
from cohortflow.dashboard.reader import Reader
from cohortflow.errors import WarehouseError
from cohortflow.warehouse import Warehouse

log = logging.getLogger(__name__)
POLL_SECONDS = 0.2
REOPEN_EVERY = 50  # polls between two reconnects of the watcher


class CommitWatcher:
    """Wakes listeners when the warehouse commit marker moves."""

    def __init__(self, reader: Reader, poll_seconds: float = POLL_SECONDS) -> None:
        self.reader = reader
        self.poll_seconds = poll_seconds
        self.marker: Any = None
        self._changed = asyncio.Event()
        self._listeners = 0
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._conn: Warehouse | None = None
        self._polls = 0

    async def changes(self) -> AsyncIterator[None]:
        """Yield once at once, then after every commit, for as long as the caller listens."""
        self._listeners += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._watch())
        try:
            event = self._changed  # taken before the caller reads: a commit during its read is not missed
            yield
            while True:
                await event.wait()
                event = self._changed
                yield
        finally:
            self._listeners -= 1

    async def _watch(self) -> None:
        while self._listeners > 0:
            marker = await run_in_threadpool(self._read_marker)
            if marker != self.marker:
                self.marker = marker
                changed, self._changed = self._changed, asyncio.Event()
                changed.set()  # wakes everyone waiting on the old event; later waits use the new one
            await asyncio.sleep(self.poll_seconds)
        await run_in_threadpool(self.close)

    def close(self) -> None:
        """Close the watcher's connection (reopened when someone listens again)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            _close_quietly(conn)

    def _read_marker(self) -> Any:
        # One connection kept for the watcher: in autocommit each read ends with its statement,
        # so holding it open pins nothing, and polling skips a connect and schema load each time.
        self._polls += 1
        if self._polls % REOPEN_EVERY == 0:
            self.close()  # follows a warehouse file that was replaced (bin/reset, a rebuild)
        try:
            self._conn = self._conn or Warehouse(self.reader.backend)
            marker = queries.version(self._conn)
        except WarehouseError as exc:
            if not self._failing:
                log.warning("cannot read the warehouse for live updates: %s", exc)
            self._failing = True
            self.close()
            return self.marker
        if self._failing:
            log.info("reading the warehouse again")
        self._failing = False
        return marker


def _close_quietly(warehouse: Warehouse) -> None:
    with suppress(Exception):
        warehouse.close()


async def view_stream(watcher: CommitWatcher, read: Callable[[], str]) -> AsyncIterator[dict[str, str]]:
    """Server-sent events of ``read()`` (a JSON text): now, then whenever a commit changed it."""
    last = None
    async for _ in watcher.changes():
        try:
            payload = await run_in_threadpool(read)
        except WarehouseError:
            continue  # logged by the watcher; the page keeps its last view
        if payload != last:
            last = payload
            yield {"event": "view", "data": payload}
