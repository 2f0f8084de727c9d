"""The batch HTTP API, followed by a ``(created_at, id)`` cursor, and listed in full.

The upstream truncates ``after`` to whole seconds, so pages overlap and
repeat records: we ask from our cursor, drop what we have seen (older
records, and ids at the cursor's exact instant that we already took), and
follow pages while a full page (100) comes back.

No single answer is taken for a reset or for data loss: a full page with
nothing new is either the upstream's limit (more than 100 batches in one
whole second: reported as a :class:`SourceLimit`, then skipped past) or a
stale page (retried). Records missed, malformed once, renamed or no longer
served are found by a periodic :meth:`BatchApi.listing` from the start,
which the warehouse reconciles (``cohortflow.warehouse.reconcile``).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from cohortflow.contract import BATCH_PAGE_LIMIT, format_after, format_timestamp, parse_timestamp
from cohortflow.errors import SourceLimit, SourceUnavailable
from cohortflow.records import BatchRecord
from cohortflow.sources.batch_http import get_page, validate_url

REJECT_MEMORY = 100


@dataclass(frozen=True)
class BatchesCursor:
    """The newest batch instant taken, the ids taken at it, and recent rejects' hashes."""

    created_at: str | None = None
    boundary_ids: tuple[int, ...] = ()
    rejected: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (lists, not tuples: it must equal itself after a JSON round trip)."""
        return {
            "created_at": self.created_at,
            "boundary_ids": list(self.boundary_ids),
            "rejected": list(self.rejected),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> BatchesCursor:
        """Rebuild from pipeline_state (None means: from the start)."""
        if not data:
            return cls()
        return cls(data["created_at"], tuple(data["boundary_ids"]), tuple(data.get("rejected", ())))

    def is_new(self, batch: BatchRecord) -> bool:
        """Whether the batch comes after this cursor."""
        if self.created_at is None or batch.created_at > self.created_at:
            return True
        return batch.created_at == self.created_at and batch.id not in self.boundary_ids

    def advance(self, batch: BatchRecord) -> BatchesCursor:
        """The cursor once ``batch`` (the newest so far) is taken."""
        if batch.created_at == self.created_at:
            return BatchesCursor(batch.created_at, (*self.boundary_ids, batch.id), self.rejected)
        return BatchesCursor(batch.created_at, (batch.id,), self.rejected)


@dataclass(frozen=True)
class BatchListing:
    """Every valid batch one full listing found, and how far it reached.

    ``reach`` is the newest ``created_at`` listed: only batches up to it can be
    said to be absent from this listing. ``listed_at`` (UTC, when it ended)
    makes applying it twice a no-op.
    """

    records: list[BatchRecord]
    reach: str | None
    listed_at: str
    rejects: int = 0


@dataclass(frozen=True)
class BatchesRead:
    """New batches in creation order, bad records, the cursor past them, and what limited the read."""

    batches: list[BatchRecord]
    rejects: list[tuple[str, str, str]]
    cursor: BatchesCursor
    limit: SourceLimit | None = None
    listing: BatchListing | None = None


class BatchApi:
    """``GET <url>?after=...`` with paging, de-duplication and the whole-second limit."""

    def __init__(self, url: str, timeout: float = 5.0, client: httpx.Client | None = None) -> None:
        self.url = validate_url(url)
        self.client = client or httpx.Client(timeout=timeout)

    def close(self) -> None:
        """Close the HTTP client."""
        self.client.close()

    def __enter__(self) -> BatchApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, cursor: BatchesCursor) -> BatchesRead:
        """Every batch after the cursor, following pages."""
        walk = self.walk(cursor)
        while not walk.done:
            walk.step()
        return walk.read()

    def walk(self, cursor: BatchesCursor) -> BatchWalk:
        """A paging walk from ``cursor`` that fetches one page per :meth:`BatchWalk.step`."""
        return BatchWalk(self, cursor)

    def listing(self, pause: float = 0.0) -> BatchListing:
        """Every batch the API serves now, paged from the start (``pause`` seconds between pages)."""
        walk = self.walk(BatchesCursor())
        while not walk.done:
            walk.step()
            time.sleep(pause)
        return walk.listing()

    def _limit(self, second: str) -> SourceLimit:
        msg = (
            f"`{self.url}` serves more than {BATCH_PAGE_LIMIT} batches created within the second "
            f"{second}: its whole-second `after` cannot page past them, so the batches of that second "
            f"after the first {BATCH_PAGE_LIMIT} it serves cannot be read; reading on from the next second"
        )
        return SourceLimit(msg, hint="a limit of the upstream API: ask its owners for finer paging")

    def _stale(self, cursor: BatchesCursor, page: list[Any]) -> SourceUnavailable:
        msg = (
            f"batch API `{self.url}` answered a full page of {len(page)} batches with nothing newer "
            f"than {cursor.created_at} (a stale or backwards page); asking again later"
        )
        return SourceUnavailable(msg)

    def _take(
        self, cursor: BatchesCursor, page: list[Any]
    ) -> tuple[list[BatchRecord], list[tuple[str, str, str]], BatchesCursor]:
        fresh: list[BatchRecord] = []
        rejects: list[tuple[str, str, str]] = []
        records: list[BatchRecord] = []
        for item in page:
            record, reason = _validate(item)
            if record is not None:
                records.append(record)
                continue
            raw = json.dumps(item, sort_keys=True, ensure_ascii=False)
            digest = hashlib.sha1(raw.encode()).hexdigest()[:16]
            if digest not in cursor.rejected:
                rejects.append((f"{self.url}#{digest}", raw, reason))
                remembered = (*cursor.rejected, digest)[-REJECT_MEMORY:]
                cursor = BatchesCursor(cursor.created_at, cursor.boundary_ids, remembered)
        for record in sorted(records, key=lambda r: (r.created_at, r.id)):
            if cursor.is_new(record):
                fresh.append(record)
                cursor = cursor.advance(record)
        return fresh, rejects, cursor

    def _get(self, after: str | None) -> list[Any]:
        # Milliseconds, truncated: never later than the instant, so nothing after it is skipped.
        params = {} if after is None else {"after": format_after(parse_timestamp(after))}
        return get_page(self.client, self.url, params)


class BatchWalk:
    """Paging from a cursor, one page per step, so a long listing can be spread over polls.

    A step that raises leaves the walk where it was: the next step asks again.
    """

    def __init__(self, api: BatchApi, cursor: BatchesCursor) -> None:
        self.api = api
        self.cursor = cursor
        self.batches: list[BatchRecord] = []
        self.rejects: list[tuple[str, str, str]] = []
        self.limit: SourceLimit | None = None
        self.done = False
        self._skip_to: str | None = None

    def step(self) -> None:
        """Fetch the next page; ``done`` once a short page came."""
        page = self.api._get(self._skip_to or self.cursor.created_at)
        fresh, bad, cursor = self.api._take(self.cursor, page)
        if len(page) >= BATCH_PAGE_LIMIT and not fresh:
            second = None if self._skip_to else _one_second(page)
            if second is None:
                raise self.api._stale(cursor, page)
            self.limit, self._skip_to = self.api._limit(second), _next_second(second)
        elif fresh:
            self._skip_to = None
        self.batches += fresh
        self.rejects += bad
        self.cursor = cursor
        self.done = len(page) < BATCH_PAGE_LIMIT

    def read(self) -> BatchesRead:
        """What the walk found, as an incremental read."""
        return BatchesRead(self.batches, self.rejects, self.cursor, self.limit)

    def listing(self) -> BatchListing:
        """What the walk found, as a full listing (when it started from the beginning)."""
        listed_at = datetime.now(UTC).isoformat(timespec="microseconds")
        return BatchListing(self.batches, self.cursor.created_at, listed_at, len(self.rejects))


def _one_second(page: list[Any]) -> str | None:
    """The whole second every valid record of a full page shares, if they all share one."""
    seconds = {record.created_at[:19] for record in (_validate(item)[0] for item in page) if record}
    return seconds.pop() if len(seconds) == 1 else None


def _next_second(second: str) -> str:
    """``created_at`` of the next whole second (the API returns what comes after it)."""
    return format_timestamp(parse_timestamp(second) + timedelta(seconds=1))


def _validate(item: Any) -> tuple[BatchRecord | None, str]:
    if not isinstance(item, dict):
        return None, "not_an_object"
    batch_id, name, created_at = item.get("id"), item.get("name"), item.get("created_at")
    if not isinstance(batch_id, int) or isinstance(batch_id, bool) or batch_id < 1:
        return None, "bad_id"
    if not isinstance(name, str) or not name:
        return None, "bad_name"
    try:
        when = format_timestamp(parse_timestamp(str(created_at)))
    except ValueError:
        return None, "bad_created_at"
    return BatchRecord(batch_id, name, when), ""
