"""The distributed engine: PySpark Structured Streaming (``--engine spark``).

One streaming query unions the three sources (Python Data Source readers that
share the embedded engine's cursors) and writes each micro-batch through
foreachBatch into the same warehouse apply, one action per micro-batch
(:mod:`.sink`). Parsing runs on the executors through the same
:func:`cohortflow.parse.summarise_partition`; only the warehouse apply stays
on the driver. Our errors keep their type across the JVM (:mod:`.failures`);
a checkpoint is paired with its warehouse (:mod:`.guard`). Runs in
``local[*]`` and on a cluster unchanged (``--spark-master spark://...``).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pyspark  # noqa: F401 - fail here, at engine choice, when the [spark] extra is missing

from cohortflow.config import PipelineConfig
from cohortflow.engines.spark.failures import explain
from cohortflow.engines.spark.guard import claim
from cohortflow.engines.spark.sink import STATE_KEYS, WarehouseSink
from cohortflow.errors import CohortflowError, SourceReset
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
    # A failure is reported as one line by the engine; the JVM's and py4j's traces only with --verbose.
    verbose = log.isEnabledFor(logging.DEBUG)
    spark.sparkContext.setLogLevel("WARN" if verbose else "OFF")
    logging.getLogger("py4j").setLevel(logging.DEBUG if verbose else logging.CRITICAL)
    for source in SOURCES:
        spark.dataSource.register(source)
    return spark


class SparkEngine:
    """Run the pipeline as a Structured Streaming query."""

    def __init__(self, config: PipelineConfig, on_commit: OnCommit | None = None) -> None:
        self.config = config
        self.on_commit = on_commit
        self.checkpoint = Path(config.checkpoint).resolve()
        self.totals = TickStats()

    def run(self, stop: threading.Event | None = None) -> TickStats:
        """Run until caught up (``once``) or stopped; raise our error (by type) on a failed query."""
        stop = stop or threading.Event()
        with _our_signal_handlers():
            spark = build_session(self.config.spark_master)
        try:
            while True:
                failure = self._run_query(spark, stop)
                if failure is None:
                    return self.totals
                if isinstance(failure, SourceReset) and self.config.on_reset == "restart":
                    log.warning("%s; --on-reset restart: rebuilding from scratch", failure.message)
                    self._start_over()
                    continue
                raise failure
        finally:
            spark.stop()

    def _start_over(self) -> None:
        with open_warehouse(self.config.warehouse, writer=True) as warehouse:
            warehouse.ensure_schema()
            warehouse.acquire_writer()
            warehouse.wipe()
        shutil.rmtree(self.checkpoint, ignore_errors=True)

    def _run_query(self, spark: Any, stop: threading.Event) -> CohortflowError | None:
        from pyspark.errors import StreamingQueryException

        sink = WarehouseSink(self.config, self.checkpoint, self.totals, self.on_commit)
        try:
            claim(self.checkpoint, sink.warehouse)
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
        failure = sink.failure or explain(error)
        failure.__cause__ = sink.trace or error  # the full chain, printed with --verbose
        return failure

    def _start(self, spark: Any, sink: WarehouseSink) -> Any:
        config, state = self.config, sink.warehouse.state()
        cursors = {name: json.dumps(state[key]) for name, key in STATE_KEYS.items() if key in state}
        frames = [
            _read(spark, "cohortflow_test_runs", cursors.get("test_runs"))
            .option("path", str(config.test_runs_log))
            .option("maxBytesPerTrigger", str(config.txn_bytes))
            .option("chunkBytes", str(config.chunk_bytes))
            .load(),
            _read(spark, "cohortflow_students", cursors.get("students"))
            .option("path", str(config.students_db))
            .load(),
            _read(spark, "cohortflow_batches", cursors.get("batches"))
            .option("url", config.batches_url)
            .option("timeout", str(config.http_timeout))
            .load(),
        ]
        writer = (
            functools.reduce(lambda a, b: a.unionByName(b), frames)
            .writeStream.foreachBatch(sink)
            .option("checkpointLocation", str(self.checkpoint))
            .queryName("cohortflow")
        )
        trigger = (
            {"availableNow": True} if config.once else {"processingTime": f"{config.trigger_seconds} seconds"}
        )
        return writer.trigger(**trigger).start()


def _read(spark: Any, source: str, start_cursor: str | None) -> Any:
    """A stream reader of ``source``; a fresh checkpoint starts at the warehouse's cursor."""
    reader = spark.readStream.format(source)
    return reader.option("startCursor", start_cursor) if start_cursor else reader


@contextmanager
def _our_signal_handlers() -> Iterator[None]:
    """Keep the caller's SIGINT/SIGTERM handlers across the session's start.

    SparkContext replaces SIGINT's with one that cancels jobs through py4j from
    inside a signal handler (a reentrant call) and raises KeyboardInterrupt.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _stop_between_batches(query: Any, patience: float = 60.0) -> None:
    """Let a running micro-batch finish its commit, then stop (a stop mid-batch is only replayed)."""
    deadline = time.monotonic() + patience
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        time.sleep(0.05)
    query.stop()
