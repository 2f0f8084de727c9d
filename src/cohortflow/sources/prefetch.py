"""Poll the batch API on a thread of its own, so that no tick ever waits on HTTP.

The thread reads ahead from the last cursor it fetched to; a tick takes every
read that is ready (in order) and commits them with the last one's cursor.
If that commit fails, :meth:`BatchPrefetcher.rewind` puts the thread back on
the committed cursor: reads are never skipped, and re-reads are harmless
because the cursor de-duplicates them.
"""

from __future__ import annotations

import logging
import threading
import time

from cohortflow.errors import CohortflowError, SourceUnavailable
from cohortflow.retry import Backoff
from cohortflow.sources.batches import BatchApi, BatchesCursor, BatchesRead

log = logging.getLogger(__name__)


class BatchPrefetcher:
    """A background reader of the batch API with an in-order queue of reads."""

    def __init__(self, api: BatchApi, interval: float) -> None:
        self.api = api
        self.interval = interval
        self.backoff = Backoff()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._ready: list[BatchesRead] = []
        self._cursor = BatchesCursor()
        self._generation = 0
        self._quiet = False
        self._error: CohortflowError | None = None
        self._thread: threading.Thread | None = None

    def start(self, cursor: BatchesCursor) -> None:
        """Begin polling from the committed cursor."""
        self.rewind(cursor)
        self._thread = threading.Thread(target=self._run, name="batch-prefetch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (it finishes the request in flight)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.api.client.timeout.read or 10)

    def rewind(self, cursor: BatchesCursor) -> None:
        """Drop reads not yet committed and poll again from ``cursor``."""
        with self._lock:
            self._ready.clear()
            self._cursor = cursor
            self._generation += 1
            self._quiet = False
            self._error = None
        self._wake.set()

    def take(self) -> BatchesRead | None:
        """Every ready read, merged in order; re-raises a terminal error of the thread."""
        with self._lock:
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            reads, self._ready = self._ready, []
        if not reads:
            return None
        batches = [b for read in reads for b in read.batches]
        rejects = [r for read in reads for r in read.rejects]
        return BatchesRead(batches, rejects, reads[-1].cursor)

    @property
    def settled(self) -> bool:
        """True when the latest poll found nothing new and every read has been taken."""
        with self._lock:
            return self._quiet and not self._ready and self.backoff.failures == 0

    def _run(self) -> None:
        while not self._stop.is_set():
            delay = self._poll_once()
            self._wake.wait(delay)
            self._wake.clear()

    def _poll_once(self) -> float:
        now = time.monotonic()
        if not self.backoff.ready(now):
            return self.backoff.next_at - now
        with self._lock:
            cursor, generation = self._cursor, self._generation
        try:
            read = self.api.read(cursor)
        except SourceUnavailable as exc:
            self.backoff.failed(time.monotonic(), str(exc))
            log.warning("%s (retry %d)", exc, self.backoff.failures)
            return self.backoff.next_at - time.monotonic()
        except CohortflowError as exc:
            with self._lock:
                self._error = exc
            return self.interval
        self.backoff.succeeded()
        fresh = bool(read.batches or read.rejects or read.cursor != cursor)
        with self._lock:
            if generation == self._generation:
                self._quiet = not fresh
                if fresh:
                    self._ready.append(read)
                    self._cursor = read.cursor
        return 0.0 if fresh else self.interval
