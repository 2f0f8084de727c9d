"""The distributed engine: PySpark Structured Streaming (``--engine spark``).

One streaming query unions the three sources (Python Data Source readers that
share the embedded engine's cursors) and writes each micro-batch through
foreachBatch into the same warehouse apply. Parsing runs on the executors
through the same :func:`cohortflow.parse.summarise_partition`; only the
warehouse apply stays on the driver. Runs in ``local[*]`` here and on a
cluster unchanged (``--spark-master spark://...`` or ``spark-submit``).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import pyspark  # noqa: F401 - fail here, at engine choice, when the [spark] extra is missing

from cohortflow.config import PipelineConfig
from cohortflow.errors import EngineError
from cohortflow.state import OnCommit, TickStats
from cohortflow.warehouse import open_warehouse

log = logging.getLogger(__name__)


def build_session(master: str, app_name: str = "cohortflow") -> Any:
    """A SparkSession whose Python workers run this interpreter, UI off, few shuffle partitions."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers must import cohortflow
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # local mode needs no other interface
    from pyspark.sql import SparkSession

    from cohortflow.engines.spark.sources import SOURCES

    spark = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "100000")  # fewer, larger parse calls
        .config("spark.sql.adaptive.enabled", "false")  # not supported by streaming; it only warns
        .config("spark.executorEnv.POLARS_MAX_THREADS", "1")  # the parse's threads: one task per core already
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    for source in SOURCES:
        spark.dataSource.register(source)
    return spark


class SparkEngine:
    """Run the pipeline as a Structured Streaming query."""

    def __init__(self, config: PipelineConfig, on_commit: OnCommit | None = None) -> None:
        self.config = config
        self.on_commit = on_commit  # TODO(spark): call it per applied micro-batch
        self.checkpoint = Path(config.checkpoint).resolve()
        self.totals = TickStats()

    def run(self, stop: threading.Event | None = None) -> TickStats:
        """Run until caught up (``once``) or stopped; raise EngineError on a failed query."""
        stop = stop or threading.Event()
        spark = build_session(self.config.spark_master)
        try:
            while True:
                failure = self._run_query(spark, stop)
                if failure is None:
                    return self.totals
                if "was reset" in failure and self.config.on_reset == "restart":
                    log.warning("%s; --on-reset restart: rebuilding from scratch", failure)
                    self._start_over()
                    continue
                raise EngineError(failure)
        finally:
            spark.stop()

    def _start_over(self) -> None:
        with open_warehouse(self.config.warehouse, writer=True) as warehouse:
            warehouse.ensure_schema()
            warehouse.acquire_writer()
            warehouse.wipe()
        shutil.rmtree(self.checkpoint, ignore_errors=True)

    def _run_query(self, spark: Any, stop: threading.Event) -> str | None:
        from pyspark.errors import StreamingQueryException

        from cohortflow.engines.spark.sink import WarehouseSink

        sink = WarehouseSink(self.config, self.checkpoint, self.totals)
        try:
            query = self._start(spark, sink)
            with suppress(StreamingQueryException):  # a failure is read from query.exception()
                while query.isActive and not stop.is_set():
                    query.awaitTermination(0.2)
            if query.isActive:
                _stop_between_batches(query)
            error = query.exception()
        finally:
            sink.close()
        if error is None:
            return None
        return _explain(str(error))

    def _start(self, spark: Any, sink: Any) -> Any:
        config = self.config
        log_df = (
            spark.readStream.format("cohortflow_test_runs")
            .option("path", str(config.test_runs_log))
            .option("maxBytesPerTrigger", str(config.txn_bytes))
            .option("chunkBytes", str(config.chunk_bytes))
            .load()
        )
        students_df = (
            spark.readStream.format("cohortflow_students").option("path", str(config.students_db)).load()
        )
        batches_df = (
            spark.readStream.format("cohortflow_batches")
            .option("url", config.batches_url)
            .option("timeout", str(config.http_timeout))
            .load()
        )
        writer = (
            log_df.unionByName(students_df)
            .unionByName(batches_df)
            .writeStream.foreachBatch(sink)
            .option("checkpointLocation", str(self.checkpoint))
            .queryName("cohortflow")
        )
        trigger = (
            {"availableNow": True} if config.once else {"processingTime": f"{config.trigger_seconds} seconds"}
        )
        return writer.trigger(**trigger).start()


def _stop_between_batches(query: Any, patience: float = 60.0) -> None:
    """Let a running micro-batch finish its commit, then stop (a stop mid-batch is only replayed)."""
    deadline = time.monotonic() + patience
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        time.sleep(0.05)
    query.stop()


def _explain(text: str) -> str:
    """The first line that says what went wrong, without the JVM stack."""
    for marker in (
        "SourceReset:",
        "SourceError:",
        "SourceUnavailable:",
        "WarehouseError:",
        "WarehouseLocked:",
    ):
        if marker in text:
            return text.split(marker, 1)[1].strip().splitlines()[0]
    first = next((line for line in text.splitlines() if line.strip()), text)
    return f"the Spark query failed: {first[:500]}"
