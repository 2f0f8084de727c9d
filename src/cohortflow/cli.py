"""The `cohortflow` command line: parse options, call the library, report errors.

No logic lives here: each command forwards to a library function. Our own
exceptions become one red line on stderr and exit status 1.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import traceback
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from cohortflow.config import PipelineConfig
from cohortflow.errors import CohortflowError


class _Group(click.Group):
    """A click group that turns CohortflowError into one readable line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CohortflowError as exc:
            if ctx.meta.get("cohortflow.verbose"):
                traceback.print_exception(exc)
            click.secho(f"cohortflow: {exc}", fg="red", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cohortflow")
def main() -> None:
    """Exactly-once streaming analytics for a coding school's test runs."""
    _configure_logging()


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "py4j"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _source_options(func: Any) -> Any:
    """Options shared by every command that reads the sources or the warehouse."""
    options = [
        click.option(
            "--students-db",
            type=click.Path(path_type=Path),
            default="data/students.db",
            envvar="COHORTFLOW_STUDENTS_DB",
            show_default=True,
            help="Upstream students SQLite file (read only).",
        ),
        click.option(
            "--test-runs-log",
            type=click.Path(path_type=Path),
            default="data/test_runs.log",
            envvar="COHORTFLOW_TEST_RUNS_LOG",
            show_default=True,
            help="Upstream test-run log (read only).",
        ),
        click.option(
            "--batches-url",
            default="http://localhost:8000/batches",
            envvar="COHORTFLOW_BATCHES_URL",
            show_default=True,
            help="Upstream batch API.",
        ),
        click.option(
            "--warehouse",
            default="data/warehouse.db",
            envvar="COHORTFLOW_WAREHOUSE",
            show_default=True,
            help="Warehouse: a SQLite path or a postgresql:// URL.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _config(**values: Any) -> PipelineConfig:
    known = PipelineConfig.__dataclass_fields__
    return PipelineConfig(**{k: v for k, v in values.items() if k in known})


@main.command()
@_source_options
@click.option(
    "--once",
    is_flag=True,
    envvar="COHORTFLOW_ONCE",
    help="Catch up to the sources' current end, then exit.",
)
@click.option(
    "--on-reset",
    type=click.Choice(["fail", "restart"]),
    default="fail",
    envvar="COHORTFLOW_ON_RESET",
    show_default=True,
    help="When a source was reset: stop with a message, or rebuild from scratch.",
)
@click.option(
    "--engine",
    type=click.Choice(["embedded", "spark"]),
    default="embedded",
    envvar="COHORTFLOW_ENGINE",
    show_default=True,
    help="Which engine runs the pipeline.",
)
@click.option(
    "--chunk-bytes",
    type=click.IntRange(min=4096),
    default=16 << 20,
    show_default=True,
    envvar="COHORTFLOW_CHUNK_BYTES",
    help="Log bytes parsed at once (bounds memory).",
)
@click.option(
    "--txn-bytes",
    type=click.IntRange(min=4096),
    default=256 << 20,
    show_default=True,
    envvar="COHORTFLOW_TXN_BYTES",
    help="Log bytes folded into one transaction in a backfill.",
)
@click.option(
    "--spark-master",
    default="local[2]",
    show_default=True,
    envvar="COHORTFLOW_SPARK_MASTER",
    help="Spark engine: master URL (local[N], spark://host:port, yarn...).",
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default="data/spark-checkpoint",
    show_default=True,
    envvar="COHORTFLOW_CHECKPOINT",
    help="Spark engine: checkpoint directory.",
)
@click.option(
    "--trigger-seconds",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    envvar="COHORTFLOW_TRIGGER_SECONDS",
    help="Spark engine: micro-batch interval in follow mode.",
)
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
@click.option("--verbose", is_flag=True, help="Debug logging, and the full trace of a failure.")
def run(engine: str, quiet: bool, verbose: bool, **options: Any) -> None:
    """Ingest the three sources into the warehouse, exactly once."""
    from cohortflow.console import backfill_progress
    from cohortflow.engines import make_engine

    if verbose:
        click.get_current_context().meta["cohortflow.verbose"] = True
        logging.getLogger("cohortflow").setLevel(logging.DEBUG)

    config = _config(**options)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    console = Console(stderr=True)
    with ExitStack() as scope:
        on_commit = None
        if not quiet and config.once and console.is_terminal:
            on_commit = scope.enter_context(backfill_progress(config.test_runs_log))
        totals = make_engine(engine, config, on_commit).run(stop)
    if not quiet:
        console.print(
            f"ingested {totals.lines} test-run lines, {totals.students} students, "
            f"{totals.batches} batches; {totals.quarantined} quarantined"
        )


@main.command()
@_source_options
@click.option("--top", default=10, show_default=True, help="How many batches to show.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="Output format.",
)
def report(top: int, fmt: str, **options: Any) -> None:
    """Show the batches with the most students who completed 3+ lessons."""
    from cohortflow.report import leaderboard_table, render_leaderboard
    from cohortflow.warehouse import open_warehouse

    with open_warehouse(_config(**options).warehouse) as warehouse:
        rows = warehouse.leaderboard(top)
    if fmt == "table":
        Console().print(leaderboard_table(rows))
    else:
        click.echo(render_leaderboard(rows, fmt), nl=False)


@main.command()
@_source_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def status(as_json: bool, **options: Any) -> None:
    """Show each source's cursor, lag, last commit and quarantine counts."""
    from cohortflow.report import pipeline_status, status_tables
    from cohortflow.warehouse import open_warehouse

    config = _config(**options)
    with open_warehouse(config.warehouse) as warehouse:
        info = pipeline_status(warehouse, config)
    if as_json:
        click.echo(json.dumps(info, indent=2, ensure_ascii=False))
        return
    console = Console()
    for table in status_tables(info):
        console.print(table)


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default="data",
    show_default=True,
    help="Where the simulated sources live (created with a history when empty).",
)
@click.option(
    "--warehouse",
    default="data/warehouse.db",
    envvar="COHORTFLOW_WAREHOUSE",
    show_default=True,
    help="Warehouse: a SQLite path or a postgresql:// URL.",
)
@click.option("--port", default=8000, show_default=True, help="Batch API port (0 = any free port).")
@click.option("--interval-ms", default=500, show_default=True, help="Simulator stream interval.")
@click.option("--top", default=10, show_default=True, help="How many batches to show.")
@click.option("--seed", type=int, default=None, help="Simulator seed (random when absent).")
def demo(data_dir: Path, warehouse: str, port: int, interval_ms: int, top: int, seed: int | None) -> None:
    """Run the simulator and the pipeline, with a live leaderboard until Ctrl-C."""
    from cohortflow.demo import DemoOptions, run_demo

    run_demo(DemoOptions(data_dir, warehouse, port, interval_ms, top=top, seed=seed))


def _load_commands() -> None:
    from cohortflow.simulator.commands import generate, reset

    for command in (generate, reset):
        main.add_command(command)


_load_commands()
