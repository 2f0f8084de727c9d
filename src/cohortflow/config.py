"""The pipeline's settings: one typed object that the CLI fills from options and env vars."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

OnReset = Literal["fail", "restart"]

SOURCE_FIELDS = ("students_db", "test_runs_log", "batches_url")
"""The fields that say which sources a pipeline follows (recorded in its warehouse)."""


@dataclass(frozen=True)
class PipelineConfig:
    """Where the sources and the warehouse are, and how to follow them.

    Attributes:
        poll_seconds: idle wait between looks at the log and students table.
        batches_poll_seconds: least time between two batch API polls.
        batches_idle_poll_seconds: time between polls once ten in a row found nothing new
            (a new batch is then seen within this; anything new brings back the short period).
        coalesce_seconds: least time between two commits while following a trickle: appends
            arriving meanwhile share one commit (its fixed cost), adding at most this to freshness.
        chunk_bytes: log bytes parsed at once (bounds memory).
        txn_bytes: log bytes folded into one transaction during a backfill.
        commit_seconds: longest a backfill transaction grows before it commits (work lost to a crash).
        api_patience: seconds ``--once`` keeps retrying a failing batch API.
        batches_reconcile_seconds: period of the batch API's full re-listing (reconciliation).
        batches_gone_after: consecutive full listings a batch must be absent from to be gone.
        spark_master, checkpoint, trigger_seconds: the Spark engine's master URL,
            checkpoint directory and processing-time trigger in follow mode.

    """

    students_db: Path = Path("data/students.db")
    test_runs_log: Path = Path("data/test_runs.log")
    batches_url: str = "http://localhost:8000/batches"
    warehouse: str = "data/warehouse.db"
    once: bool = False
    on_reset: OnReset = "fail"
    poll_seconds: float = 0.05
    batches_poll_seconds: float = 0.5
    batches_idle_poll_seconds: float = 2.0
    coalesce_seconds: float = 0.1
    chunk_bytes: int = 16 << 20
    txn_bytes: int = 256 << 20
    commit_seconds: float = 5.0
    http_timeout: float = 5.0
    api_patience: float = 30.0
    batches_reconcile_seconds: float = 60.0
    batches_gone_after: int = 3
    spark_master: str = "local[2]"
    checkpoint: Path = Path("data/spark-checkpoint")
    trigger_seconds: float = 1.0
