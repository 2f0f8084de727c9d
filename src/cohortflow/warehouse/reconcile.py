"""Reconcile a full listing of the batch API with the batches the warehouse holds.

A batch is the same batch when its id *and* its ``created_at`` match. For
each listing, in the tick's transaction:

* listed batches we do not hold (missed, or malformed when first read) are added;
* a held batch listed under a new name is renamed;
* a held batch not listed (up to the listing's reach) gets one more absence;
  after ``gone_after`` consecutive absences it is marked ``gone_at`` and leaves
  the leaderboard; listed again, it comes back. Nothing is deleted.
* when ``gone_after`` listings in a row serve an id we hold with another
  ``created_at`` (ids reused), the API really started over:
  :class:`SourceReset`. One odd listing is never enough. Batches replaced by
  others under new ids are not a reset: the old ones go, the new ones come.

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
    conflicts, why = _ids_reused(tx, state)
    if conflicts >= gone_after:
        raise SourceReset(source, f"{why}, in {conflicts} consecutive full listings")
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
    tx.set_state(RECONCILE_KEY, {"listed_at": listed_at, "conflicting_listings": conflicts})
    return ReconcileCounts(counts.listed, counts.added, counts.renamed, counts.absent, gone)


def _ids_reused(tx: Transaction, state: dict[str, Any]) -> tuple[int, str]:
    """Consecutive listings serving an id we hold with another created_at, and the first such id."""
    conflict = tx.execute(schema.FIRST_CONFLICT)
    if not conflict:
        return 0, ""
    batch_id, served, held_at = conflict[0]
    why = f"batch {batch_id} is served as created at {served}, we hold it as created at {held_at}"
    return int(state.get("conflicting_listings", 0)) + 1, why


def _changed(tx: Transaction, sql: str, params: tuple[Any, ...]) -> int:
    """Run an UPDATE and return how many rows it changed."""
    return len(tx.execute(f"{sql} RETURNING id", params))
