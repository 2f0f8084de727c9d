"""foreachBatch into the warehouse, exactly once.

Spark replays a micro-batch whose commit it did not record, so foreachBatch
alone is at-least-once. The sink records the query's last applied batch id in
the SAME warehouse transaction as the batch's rows and skips a batch it has
already applied. The micro-batch's end offsets (the sources' cursors, read
from the checkpoint's offset log) are stored too, for `cohortflow status`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cohortflow.config import PipelineConfig
from cohortflow.parse import DELTA_SCHEMA, delta_from_arrow, summarise_partition
from cohortflow.records import BatchRecord, StudentRecord
from cohortflow.state import BATCHES_KEY, LOG_KEY, STUDENTS_KEY, TickStats, record_sources
from cohortflow.warehouse import Transaction, Warehouse, open_warehouse

log = logging.getLogger(__name__)

DELTA_DDL = ", ".join(f"{f.name} {'long' if pa.types.is_integer(f.type) else 'string'}" for f in DELTA_SCHEMA)


def checkpoint_offsets(checkpoint: Path, batch_id: int) -> dict[str, Any]:
    """The end offsets of ``batch_id`` by cursor key, from Spark's offset log."""
    lines = (checkpoint / "offsets" / str(batch_id)).read_text(encoding="utf-8").splitlines()
    found: dict[str, Any] = {}
    for line in lines[2:]:  # "v1", the batch metadata, then one line per source
        if line == "-":
            continue
        offset = json.loads(line)
        key = LOG_KEY if "head_sha" in offset else STUDENTS_KEY if "last_id" in offset else BATCHES_KEY
        found[key] = offset
    return found


def checkpoint_query_id(checkpoint: Path) -> str:
    """The query id Spark keeps for this checkpoint across restarts."""
    with (checkpoint / "metadata").open(encoding="utf-8") as f:
        query_id: str = json.loads(f.readline())["id"]
        return query_id


class WarehouseSink:
    """The foreachBatch function: one micro-batch, one warehouse transaction."""

    def __init__(self, config: PipelineConfig, checkpoint: Path, totals: TickStats) -> None:
        self.checkpoint = checkpoint
        self.totals = totals
        self.warehouse: Warehouse = open_warehouse(config.warehouse, writer=True)
        self.warehouse.ensure_schema()
        self.warehouse.acquire_writer()
        record_sources(self.warehouse, config)
        self.applied = 0

    def close(self) -> None:
        """Release the warehouse."""
        self.warehouse.close()

    def __call__(self, frame: Any, batch_id: int) -> None:
        """Apply micro-batch ``batch_id`` unless this query applied it before a restart."""
        from pyspark.sql import functions as F

        runs = (
            frame.filter(F.col("source") == "test_runs")
            .select("file", "offset", "line")
            .mapInArrow(summarise_partition, DELTA_DDL)
            .toArrow()
        )
        others = frame.filter(F.col("source") != "test_runs").drop("line").toArrow()
        key = f"spark:{checkpoint_query_id(self.checkpoint)}"
        with self.warehouse.transaction() as tx:
            done = tx.get_state(key)
            if done is not None and done >= batch_id:
                log.info("micro-batch %d was applied before the restart: skipped", batch_id)
                return
            _stage(tx, runs, others)
            for cursor_key, offset in checkpoint_offsets(self.checkpoint, batch_id).items():
                tx.set_state(cursor_key, offset)
            tx.set_state(key, batch_id)
        self.applied += 1
        self.totals.add(TickStats.from_counts(tx.counts))


def _stage(tx: Transaction, runs: pa.Table, others: pa.Table) -> None:
    tx.add_runs(delta_from_arrow(runs))
    for source in ("batches", "students"):
        rows = others.filter(pc.equal(others.column("source"), source))
        good = rows.filter(pc.is_null(rows.column("reason"))).to_pylist()
        bad = rows.filter(pc.is_valid(rows.column("reason"))).to_pylist()
        if source == "batches":
            tx.add_batches([BatchRecord(r["id"], r["name"], r["created_at"]) for r in good])
        else:
            tx.add_students([StudentRecord(r["id"], r["name"], r["batch_id"], r["created_at"]) for r in good])
        tx.add_rejects(source, [(r["file"], r["raw"], r["reason"]) for r in bad])
