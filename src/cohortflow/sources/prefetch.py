"""Poll the batch API on a thread of its own, so that no tick ever waits on HTTP.

The thread reads ahead from the last cursor it fetched to; a tick takes every
read that is ready (in order) and commits them with the last one's cursor.
If that commit fails, :meth:`BatchPrefetcher.rewind` puts the thread back on
the committed cursor: reads are never skipped, and re-reads are harmless
because the cursor de-duplicates them.

Every ``reconcile_every`` seconds the thread also lists the whole API from the
start, a few pages after each poll (``listing_budget`` seconds' worth, then
as long a pause), so a long listing never delays the polls by more than that
nor takes more than half of the API's time; a tick takes the
finished listing with the reads and the warehouse reconciles it. Re-applying a listing is a no-op
(``listed_at``), so a rewind may hand the last one back.

Failures are retried with :class:`Backoff` (a ``Retry-After`` is honoured) and
logged once per change of state plus a periodic reminder; :meth:`health` is
what ``cohortflow status`` shows.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from cohortflow.errors import CohortflowError, SourceLimit, SourceThrottled, SourceUnavailable
from cohortflow.health import SourceHealth
from cohortflow.retry import Backoff, StateLog
from cohortflow.sources.batches import BatchApi, BatchesCursor, BatchesRead, BatchListing, BatchWalk

log = logging.getLogger(__name__)


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


#: Polls in a row that found nothing new before the poller slows to its idle period.
QUIET_POLLS = 10


class BatchPrefetcher:
    """A background reader of the batch API with an in-order queue of reads and listings."""

    def __init__(
        self,
        api: BatchApi,
        interval: float,
        reconcile_every: float = 60.0,
        listing_budget: float = 0.1,
        idle_interval: float | None = None,
    ) -> None:
        self.api = api
        self.interval = interval
        self.idle_interval = max(interval, idle_interval or interval)
        """Poll period once QUIET_POLLS polls in a row found nothing new (most of an idle pipeline's CPU)."""
        self._quiet_polls = 0
        self.reconcile_every = reconcile_every
        self.listing_budget = listing_budget
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
        self._walk: BatchWalk | None = None
        self._listing: BatchListing | None = None
        self._taken_listing: BatchListing | None = None
        self._listings_taken = 0
        self._next_listing = 0.0
        self._health = SourceHealth()
        self._states = StateLog(log)

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
        """Drop reads not yet committed and poll again from ``cursor``; hand the last listing back."""
        with self._lock:
            self._ready.clear()
            self._cursor = cursor
            self._generation += 1
            self._quiet = False
            self._error = None
            if self._listing is None:
                self._listing = self._taken_listing
        self._wake.set()

    def take(self) -> BatchesRead | None:
        """Every ready read, merged in order, with a listing if one is ready.

        Re-raises a terminal error of the thread.
        """
        with self._lock:
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            reads, self._ready = self._ready, []
            listing, self._listing = self._listing, None
            if listing is not None:
                self._taken_listing = listing
                self._listings_taken += 1
            cursor = self._cursor
        if not reads and listing is None:
            return None
        batches = [b for read in reads for b in read.batches]
        rejects = [r for read in reads for r in read.rejects]
        return BatchesRead(batches, rejects, reads[-1].cursor if reads else cursor, listing=listing)

    @property
    def settled(self) -> bool:
        """True when the latest poll found nothing new, a listing was taken, and nothing waits."""
        with self._lock:
            idle = self._quiet and not self._ready and self._listing is None
            return idle and self._listings_taken > 0 and self.backoff.failures == 0

    def health(self) -> SourceHealth:
        """The source's current health, for ``status``."""
        with self._lock:
            return self._health

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
            fresh = self._publish(read, cursor, generation)
            listing = self._list_if_due(now)
        except SourceUnavailable as exc:
            self._failed(exc)
            return max(0.0, self.backoff.next_at - time.monotonic())
        except CohortflowError as exc:
            with self._lock:
                self._error = exc
            return self.interval
        self._succeeded(read.limit)
        self._quiet_polls = 0 if fresh else self._quiet_polls + 1
        if fresh:
            return 0.0
        # A listing under way goes on soon, but leaves the API as much idle time as it takes.
        if listing:
            return self.listing_budget
        return self.idle_interval if self._quiet_polls >= QUIET_POLLS else self.interval

    def _publish(self, read: BatchesRead, cursor: BatchesCursor, generation: int) -> bool:
        fresh = bool(read.batches or read.rejects or read.cursor != cursor)
        with self._lock:
            if generation == self._generation:
                self._quiet = not fresh
                if fresh:
                    self._ready.append(read)
                    self._cursor = read.cursor
        return fresh

    def _list_if_due(self, now: float) -> bool:
        """Go on with the full listing for up to ``listing_budget`` seconds; True while it is unfinished."""
        if self._walk is None and now >= self._next_listing:
            self._walk = self.api.walk(BatchesCursor())
            self._next_listing = now + self.reconcile_every
        walk = self._walk
        if walk is None:
            return False
        until = time.monotonic() + self.listing_budget
        while not walk.done and time.monotonic() < until:
            walk.step()
        if not walk.done:
            return True
        self._walk = None
        with self._lock:
            self._listing = walk.listing()
        return False

    def _failed(self, exc: SourceUnavailable) -> None:
        wait = exc.retry_after if isinstance(exc, SourceThrottled) else 0.0
        self.backoff.failed(time.monotonic(), str(exc), not_before=wait)
        with self._lock:
            old = self._health
            since = old.since if old.state == "failing" else _utc_now()
            self._health = SourceHealth("failing", since, str(exc), self.backoff.failures, old.limit)
        failures = self.backoff.failures
        self._states.report("failing", f"{exc} (retrying with backoff; {failures} failures so far)")

    def _succeeded(self, limit: SourceLimit | None) -> None:
        self.backoff.succeeded()
        with self._lock:
            old = self._health
            if limit is not None:
                since = old.since if old.state == "limit" else _utc_now()
                self._health = SourceHealth("limit", since, limit=str(limit))
            else:
                self._health = SourceHealth(limit=old.limit)
        if limit is not None:
            self._states.report("limit", str(limit))
        else:
            self._states.report(None, f"batch API `{self.api.url}` is read normally again")
