"""foreachBatch into the warehouse, exactly once, in one pass over the micro-batch.

Spark replays a micro-batch whose commit it did not record, so foreachBatch
alone is at-least-once. The sink records the query's last applied batch id in
the SAME warehouse transaction as the batch's rows and skips a batch it has
already applied. The micro-batch's end offsets (the sources' cursors, read
from the checkpoint's offset log) are stored too, as the sources' cursors.

One action per micro-batch: a single ``mapInArrow`` over the union parses the
log rows on the executors into a delta and passes students and batches
through, and one ``toArrow()`` brings both to the driver. The sources are
read once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cohortflow.config import PipelineConfig
from cohortflow.engines.spark.failures import explain
from cohortflow.engines.spark.guard import writer_name
from cohortflow.engines.spark.sources import ENVELOPE_ARROW, behave_as_worker, fit
from cohortflow.errors import CohortflowError
from cohortflow.parse import DELTA_SCHEMA, delta_from_arrow, summarise_partition
from cohortflow.records import BatchRecord, StudentRecord
from cohortflow.state import (
    BATCHES_KEY,
    LOG_KEY,
    STUDENTS_KEY,
    WRITER_KEY,
    Cursors,
    OnCommit,
    TickStats,
    record_sources,
)
from cohortflow.warehouse import Transaction, Warehouse, open_warehouse

log = logging.getLogger(__name__)

STATE_KEYS = {"test_runs": LOG_KEY, "students": STUDENTS_KEY, "batches": BATCHES_KEY}
# The one action's rows: log deltas (source "test_runs", a ``kind``) and passed-through envelope rows.
OUTPUT = pa.schema(
    [pa.field("source", pa.string())]
    + list(DELTA_SCHEMA)
    + [f for f in ENVELOPE_ARROW if f.name not in DELTA_SCHEMA.names and f.name not in ("source", "line")]
)
OUTPUT_DDL = ", ".join(f"{f.name} {'long' if pa.types.is_integer(f.type) else 'string'}" for f in OUTPUT)


def summarise_or_pass(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Parse log rows into a delta where they are; pass students and batches through (mapInArrow)."""
    behave_as_worker()
    for batch in batches:
        is_run = pc.equal(batch.column("source"), "test_runs")
        runs = batch.filter(is_run).select(["file", "offset", "line"])
        for delta in summarise_partition([runs]):
            yield fit(OUTPUT, {n: delta.column(n) for n in DELTA_SCHEMA.names}, delta.num_rows, "test_runs")
        others = batch.filter(pc.invert(is_run))
        if others.num_rows:
            columns = {n: others.column(n) for n in others.schema.names if n in OUTPUT.names}
            yield fit(OUTPUT, columns, others.num_rows)


def checkpoint_offsets(checkpoint: Path, batch_id: int) -> dict[str, Any]:
    """The end offsets of ``batch_id`` by cursor key, from Spark's offset log (tagged by source)."""
    lines = (checkpoint / "offsets" / str(batch_id)).read_text(encoding="utf-8").splitlines()
    found: dict[str, Any] = {}
    for line in lines[2:]:  # "v1", the batch metadata, then one line per source
        if line != "-":
            offset = json.loads(line)
            found[STATE_KEYS[offset["source"]]] = offset["cursor"]
    return found


class WarehouseSink:
    """The foreachBatch function: one micro-batch, one action, one warehouse transaction."""

    def __init__(
        self, config: PipelineConfig, checkpoint: Path, totals: TickStats, on_commit: OnCommit | None
    ) -> None:
        self.checkpoint = checkpoint
        self.totals = totals
        self.on_commit = on_commit
        self.warehouse: Warehouse = open_warehouse(config.warehouse, writer=True)
        self.warehouse.ensure_schema()
        self.warehouse.acquire_writer()
        record_sources(self.warehouse, config)
        self.failure: CohortflowError | None = None  # what failed the query, with its type
        self.trace: BaseException | None = None  # the raw exception, for --verbose

    def close(self) -> None:
        """Release the warehouse."""
        self.warehouse.close()

    def __call__(self, frame: Any, batch_id: int) -> None:
        """Apply micro-batch ``batch_id`` unless this query applied it before a restart."""
        try:
            self._apply(frame, batch_id)
        except Exception as exc:
            self.failure, self.trace = explain(exc), exc
            raise

    def _apply(self, frame: Any, batch_id: int) -> None:
        rows = frame.mapInArrow(summarise_or_pass, OUTPUT_DDL).toArrow()
        writer = writer_name(self.checkpoint)
        offsets = checkpoint_offsets(self.checkpoint, batch_id)
        with self.warehouse.transaction() as tx:
            done = tx.get_state(writer)
            if done is not None and done >= batch_id:
                log.info("micro-batch %d was applied before the restart: skipped", batch_id)
                return
            _stage(tx, rows)
            for cursor_key, cursor in offsets.items():
                tx.set_state(cursor_key, cursor)
            tx.set_state(writer, batch_id)
            tx.set_state(WRITER_KEY, writer)
        stats = TickStats.from_counts(tx.counts)
        self.totals.add(stats)
        if self.on_commit:
            self.on_commit(stats, Cursors.from_state(offsets))


def _stage(tx: Transaction, rows: pa.Table) -> None:
    source = rows.column("source")
    tx.add_runs(delta_from_arrow(rows.filter(pc.equal(source, "test_runs")).select(DELTA_SCHEMA.names)))
    for name in ("batches", "students"):
        part = rows.filter(pc.equal(source, name))
        good = part.filter(pc.is_null(part.column("reason"))).to_pylist()
        bad = part.filter(pc.is_valid(part.column("reason"))).to_pylist()
        if name == "batches":
            tx.add_batches([BatchRecord(r["id"], r["name"], r["created_at"]) for r in good])
        else:
            tx.add_students([StudentRecord(r["id"], r["name"], r["batch_id"], r["created_at"]) for r in good])
        tx.add_rejects(name, [(r["file"], r["raw"], r["reason"]) for r in bad])
