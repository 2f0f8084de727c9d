"""The batch HTTP API, followed by a ``(created_at, id)`` cursor.

The upstream truncates ``after`` to whole seconds, so pages overlap and
repeat records: we ask from just before our cursor, drop what we have seen
(older records, and ids at the cursor's exact instant that we already took),
and follow pages while a full page (100) comes back. The records at the
cursor must come back every time; when they do not, the batches vanished and
the source was reset.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx

from cohortflow.contract import BATCH_PAGE_LIMIT, format_after, format_timestamp, parse_timestamp
from cohortflow.errors import SourceError, SourceReset, SourceUnavailable
from cohortflow.records import BatchRecord

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
class BatchesRead:
    """New batches in creation order, bad records, and the cursor past them."""

    batches: list[BatchRecord]
    rejects: list[tuple[str, str, str]]
    cursor: BatchesCursor


class BatchApi:
    """``GET <url>?after=...`` with paging, de-duplication and reset detection."""

    def __init__(self, url: str, timeout: float = 5.0, client: httpx.Client | None = None) -> None:
        self.url = url
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
        batches: list[BatchRecord] = []
        rejects: list[tuple[str, str, str]] = []
        start = cursor
        while True:
            page = self._get(cursor)
            if cursor is start and cursor.created_at is not None:
                self._check_boundary(cursor, page)
            fresh, bad, cursor = self._take(cursor, page)
            batches += fresh
            rejects += bad
            if len(page) < BATCH_PAGE_LIMIT:
                return BatchesRead(batches, rejects, cursor)
            if not fresh:
                msg = (
                    f"`{self.url}` returned a full page of {BATCH_PAGE_LIMIT} batches with nothing "
                    f"newer than {cursor.created_at}: more than {BATCH_PAGE_LIMIT} batches share one "
                    "second and the API's whole-second `after` cannot page past them"
                )
                raise SourceError(msg)

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

    def _check_boundary(self, cursor: BatchesCursor, page: list[Any]) -> None:
        served = {item.get("id") for item in page if isinstance(item, dict) and _same_instant(item, cursor)}
        missing = set(cursor.boundary_ids) - served
        if missing and len(page) < BATCH_PAGE_LIMIT:
            what = f"batch {min(missing)} created at {cursor.created_at} is no longer served"
            raise SourceReset(self.url, what)

    def _get(self, cursor: BatchesCursor) -> list[Any]:
        params = {}
        if cursor.created_at is not None:
            # 1 ms before our instant: the records at the cursor come back, proving they still exist.
            params["after"] = format_after(parse_timestamp(cursor.created_at) - timedelta(milliseconds=1))
        try:
            response = self.client.get(self.url, params=params)
        except httpx.HTTPError as exc:
            msg = f"batch API `{self.url}` is unreachable: {exc.__class__.__name__}: {exc}"
            raise SourceUnavailable(msg) from exc
        return self._decode(response)

    def _decode(self, response: httpx.Response) -> list[Any]:
        if response.status_code >= 500 or response.status_code == 429:
            msg = f"batch API `{self.url}` answered {response.status_code}"
            raise SourceUnavailable(msg)
        if response.status_code != 200:
            msg = f"batch API `{self.url}` answered {response.status_code}: {response.text[:200]}"
            raise SourceError(msg)
        try:
            body = response.json()
        except ValueError as exc:
            msg = f"batch API `{self.url}` answered something that is not JSON: {response.text[:200]!r}"
            raise SourceUnavailable(msg) from exc
        if not isinstance(body, list):
            msg = f"batch API `{self.url}` answered a JSON {type(body).__name__}, expected an array"
            raise SourceUnavailable(msg)
        return body


def _same_instant(item: dict[str, Any], cursor: BatchesCursor) -> bool:
    try:
        return format_timestamp(parse_timestamp(str(item.get("created_at")))) == cursor.created_at
    except ValueError:
        return False


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
