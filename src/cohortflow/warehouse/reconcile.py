"""Reconcile a full listing of the batch API with the batches the warehouse holds.

A batch is the same batch when its id *and* its ``created_at`` match. For
each listing, in the tick's transaction:

* listed batches we do not hold (missed, or malformed when first read) are added;
* a held batch listed under a new name is renamed;
* a held batch not listed (up to the listing's reach) gets one more absence;
  after ``gone_after`` consecutive absences it is marked ``gone_at`` and leaves
  the leaderboard; listed again, it comes back. Nothing is deleted.
* when a listing serves batches but none we hold, ``gone_after`` times in a
  row, the API really started over: :class:`SourceReset`.

A listing applied twice (a retried tick) is recognised by its ``listed_at``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cohortflow.errors import SourceReset
from cohortflow.records import BatchRecord
from cohortflow.warehouse import schema
from cohortflow.warehouse.core import Transaction

RECONCILE_KEY = "reconcile:batches"


@dataclass(frozen=True)
class ReconcileCounts:
    """What one listing changed."""

    listed: int = 0
    added: int = 0
    renamed: int = 0
    absent: int = 0
    gone: int = 0


def reconcile_batches(
    tx: Transaction,
    records: list[BatchRecord],
    reach: str | None,
    listed_at: str,
    *,
    gone_after: int,
    source: str,
) -> ReconcileCounts:
    """Apply one full listing (see the module docstring); raises SourceReset when confirmed."""
    state: dict[str, Any] = tx.get_state(RECONCILE_KEY) or {}
    if state.get("listed_at", "") >= listed_at:
        return ReconcileCounts()
    tx.warehouse.executemany(schema.INSERT_LISTED, [(b.id, b.name, b.created_at) for b in records])
    unmatched = _unmatched_listings(tx, state, len(records))
    if unmatched >= gone_after:
        what = (
            f"none of the batches we hold was served in {unmatched} consecutive full listings, "
            f"while it serves {len(records)} others"
        )
        raise SourceReset(source, what)
    missing = [BatchRecord(int(i), str(n), str(c)) for i, n, c in tx.execute(schema.LISTED_MISSING)]
    tx.add_batches(missing)
    counts = ReconcileCounts(
        listed=len(records),
        added=len(missing),
        renamed=_changed(tx, schema.RENAME_LISTED, (tx.now,)),
        absent=0 if reach is None else _changed(tx, schema.COUNT_ABSENT, (reach,)),
        gone=0,
    )
    _changed(tx, schema.SERVED_AGAIN, (tx.now,))
    gone = _changed(tx, schema.MARK_GONE, (tx.now, tx.now, gone_after))
    tx.set_state(RECONCILE_KEY, {"listed_at": listed_at, "unmatched_listings": unmatched})
    return ReconcileCounts(counts.listed, counts.added, counts.renamed, counts.absent, gone)


def _unmatched_listings(tx: Transaction, state: dict[str, Any], listed: int) -> int:
    """Consecutive listings that served batches but none of those we hold."""
    held = int(tx.execute(schema.COUNT_HELD)[0][0])
    matched = int(tx.execute(schema.COUNT_LISTED_HELD)[0][0])
    if listed and held and not matched:
        return int(state.get("unmatched_listings", 0)) + 1
    return 0


def _changed(tx: Transaction, sql: str, params: tuple[Any, ...]) -> int:
    """Run an UPDATE and return how many rows it changed."""
    return len(tx.execute(f"{sql} RETURNING id", params))
