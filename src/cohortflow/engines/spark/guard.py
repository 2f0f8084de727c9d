"""A Spark checkpoint belongs to one warehouse, and only while nobody else writes to it.

A checkpoint holds the sources' offsets; the warehouse holds the rows they
produced. Paired with another warehouse (or with this one after the embedded
engine or another checkpoint wrote to it), the offsets would skip or repeat
data. So the warehouse gets an id (``meta:warehouse_id``) that the checkpoint
records in ``cohortflow-warehouse.json``, every commit records its writer
(``meta:last_writer``), and a checkpoint that does not match is refused. A
fresh checkpoint is always safe: its readers start from the warehouse's own
committed cursors.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from cohortflow.errors import ConfigError
from cohortflow.state import WAREHOUSE_ID_KEY, WRITER_KEY
from cohortflow.warehouse import Warehouse

MARK_FILE = "cohortflow-warehouse.json"
_FRESH_CHECKPOINT = (
    "point --checkpoint at a new (or empty) directory: a fresh checkpoint starts from the warehouse's "
    "own committed cursors"
)


class CheckpointMismatch(ConfigError):
    """The Spark checkpoint does not belong with this warehouse as it is now."""

    hint = _FRESH_CHECKPOINT


def checkpoint_query_id(checkpoint: Path) -> str:
    """The query id Spark keeps for this checkpoint across restarts."""
    with (checkpoint / "metadata").open(encoding="utf-8") as f:
        query_id: str = json.loads(f.readline())["id"]
        return query_id


def writer_name(checkpoint: Path) -> str:
    """What the sink records as ``meta:last_writer`` for this checkpoint's query."""
    return f"spark:{checkpoint_query_id(checkpoint)}"


def claim(checkpoint: Path, warehouse: Warehouse) -> None:
    """Pair ``checkpoint`` with ``warehouse``, or raise CheckpointMismatch if it belongs elsewhere."""
    state = warehouse.state()
    warehouse_id = state.get(WAREHOUSE_ID_KEY)
    if warehouse_id is None:
        warehouse_id = uuid.uuid4().hex
        with warehouse.transaction() as tx:
            tx.set_state(WAREHOUSE_ID_KEY, warehouse_id)
    if not _has_batches(checkpoint):
        checkpoint.mkdir(parents=True, exist_ok=True)
        (checkpoint / MARK_FILE).write_text(json.dumps({"warehouse_id": warehouse_id}), encoding="utf-8")
        return
    if _mark(checkpoint) != warehouse_id:
        msg = f"the Spark checkpoint `{checkpoint}` belongs to another warehouse (or this one, since wiped)"
        raise CheckpointMismatch(msg)
    writer = state.get(WRITER_KEY)
    if writer is not None and (checkpoint / "metadata").exists() and writer != writer_name(checkpoint):
        what = "the embedded engine" if writer == "embedded" else "another Spark checkpoint"
        msg = f"the warehouse was written by {what} since the Spark checkpoint `{checkpoint}` last committed"
        raise CheckpointMismatch(msg)


def _has_batches(checkpoint: Path) -> bool:
    offsets = checkpoint / "offsets"
    return offsets.is_dir() and any(offsets.iterdir())


def _mark(checkpoint: Path) -> str | None:
    try:
        found = json.loads((checkpoint / MARK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return str(found.get("warehouse_id")) if isinstance(found, dict) else None
