"""The `cohortflow` command line: parse options, call the library, report errors.

No logic lives here: each command forwards to a library function. Our own
exceptions become one red line on stderr and exit status 1.
"""

from __future__ import annotations

import functools
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
from click.core import ParameterSource
from rich.console import Console

from cohortflow.config import SOURCE_FIELDS, PipelineConfig
from cohortflow.errors import CohortflowError
from cohortflow.options import DEFAULTS, config_option


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


def _warehouse_option(func: Any) -> Any:
    return config_option("warehouse", help="Warehouse: a SQLite path or a postgresql:// URL.")(func)


def _source_options(func: Any, recorded: bool = False) -> Any:
    """Options naming the sources; ``recorded``: by default, those the warehouse recorded."""
    helps = {
        "students_db": "Upstream students SQLite file (read only).",
        "test_runs_log": "Upstream test-run log (read only).",
        "batches_url": "Upstream batch API.",
    }
    func = _warehouse_option(func)
    for name in reversed(SOURCE_FIELDS):
        shown = f"the pipeline's, else {getattr(DEFAULTS, name)}" if recorded else True
        func = config_option(name, help=helps[name], show_default=shown)(func)
    return func


def _config(**values: Any) -> PipelineConfig:
    """The config from the options (an option that is not a config field is a bug: TypeError)."""
    return PipelineConfig(**values)


def _explicit(names: tuple[str, ...]) -> set[str]:
    """Which of these options the user set (on the command line or in the environment)."""
    ctx = click.get_current_context()
    defaults = (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)
    return {name for name in names if ctx.get_parameter_source(name) not in defaults}


@main.command()
@_source_options
@config_option("once", help="Catch up to the sources' current end, then exit.")
@config_option("on_reset", help="When a source was reset: stop with a message, or rebuild from scratch.")
@click.option(
    "--engine",
    type=click.Choice(["embedded", "spark"]),
    default="embedded",
    envvar="COHORTFLOW_ENGINE",
    show_default=True,
    show_envvar=True,
    help="Which engine runs the pipeline.",
)
@config_option("chunk_bytes", type=click.IntRange(min=4096), help="Log bytes parsed at once (bounds memory).")
@config_option(
    "txn_bytes", type=click.IntRange(min=4096), help="Log bytes folded into one transaction in a backfill."
)
@config_option(
    "commit_seconds", help="A backfill commits at least this often (bounds the work a crash loses)."
)
@config_option("spark_master", help="Spark engine: master URL (local[N], spark://host:port, yarn...).")
@config_option("checkpoint", help="Spark engine: checkpoint directory.")
@config_option(
    "trigger_seconds",
    type=click.FloatRange(min=0.05),
    help="Spark engine: micro-batch interval in follow mode.",
)
@config_option(
    "batches_reconcile_seconds",
    type=click.FloatRange(min=0.0),
    help="Period of the batch API's full re-listing (reconciliation).",
)
@config_option(
    "batches_gone_after",
    type=click.IntRange(min=1),
    help="A batch absent from this many consecutive full listings leaves the leaderboard.",
)
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
@click.option("--verbose", is_flag=True, help="Debug logging, and the full trace of a failure.")
def run(engine: str, quiet: bool, verbose: bool, **options: Any) -> None:
    """Ingest the three sources into the warehouse, exactly once."""
    from cohortflow.console import backfill_progress
    from cohortflow.engines import make_engine
    from cohortflow.sources.batch_http import validate_url
    from cohortflow.tickmetrics import TickRecorder, all_of

    if verbose:
        click.get_current_context().meta["cohortflow.verbose"] = True
        logging.getLogger("cohortflow").setLevel(logging.DEBUG)

    config = _config(**options)
    validate_url(config.batches_url)  # a typo fails here, at once, not after 30 s of retries
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    console = Console(stderr=True)
    with ExitStack() as scope:
        progress = None
        if not quiet and config.once and console.is_terminal:
            progress = scope.enter_context(backfill_progress(config.test_runs_log))
        recorder = TickRecorder(config.warehouse)  # the dashboard's /metrics reads what it records
        scope.callback(recorder.close)
        totals = make_engine(engine, config, all_of(recorder, progress)).run(stop)
    if not quiet:
        console.print(
            f"ingested {totals.lines} test-run lines, {totals.students} students, "
            f"{totals.batches} batches; {totals.quarantined} quarantined"
        )


@main.command()
@_warehouse_option
@click.option("--top", default=10, show_default=True, help="How many batches to show.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--formula-guard/--no-formula-guard",
    default=True,
    show_default=True,
    help="CSV: prefix cells starting with = + - @ tab or CR with ' so spreadsheets do not run them.",
)
def report(top: int, fmt: str, formula_guard: bool, **options: Any) -> None:
    """Show the batches with the most students who completed 3+ lessons."""
    from cohortflow.output import output_console
    from cohortflow.report import leaderboard_table, render_leaderboard
    from cohortflow.warehouse import open_warehouse

    with open_warehouse(_config(**options).warehouse) as warehouse:
        rows = warehouse.leaderboard(top)
    if fmt == "table":
        output_console().print(leaderboard_table(rows))
    else:
        click.echo(render_leaderboard(rows, fmt, formula_guard), nl=False)


@main.command()
@functools.partial(_source_options, recorded=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def status(as_json: bool, **options: Any) -> None:
    """Show each source's location, cursor, lag, last commit and quarantine counts."""
    from cohortflow.output import output_console
    from cohortflow.report import pipeline_status, status_tables
    from cohortflow.warehouse import open_warehouse

    config = _config(**options)
    with open_warehouse(config.warehouse) as warehouse:
        info = pipeline_status(warehouse, config, explicit=_explicit(SOURCE_FIELDS))
    if as_json:
        click.echo(json.dumps(info, indent=2, ensure_ascii=False))
        return
    console = output_console()
    for table in status_tables(info):
        console.print(table)


@main.command()
@_source_options
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="COHORTFLOW_DASHBOARD_HOST",
    show_envvar=True,
    help="Interface to listen on (anything but loopback is reachable by others: a warning).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8050,
    show_default=True,
    envvar="COHORTFLOW_DASHBOARD_PORT",
    show_envvar=True,
    help="Port to listen on.",
)
def dashboard(host: str, port: int, **options: Any) -> None:
    """Serve the live web dashboard: leaderboard, batches, sources, quarantine, /metrics."""
    from cohortflow.dashboard import ServeOptions, serve

    serve(_config(**options), ServeOptions(host, port))


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default="data",
    show_default=True,
    help="Where the simulated sources live (created with a history when empty).",
)
@_warehouse_option
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    show_default="8000, or a free port when 8000 is taken",
    help="Batch API port (0 = any free port).",
)
@click.option("--interval-ms", default=500, show_default=True, help="Simulator stream interval.")
@click.option("--top", default=10, show_default=True, help="How many batches to show.")
@click.option("--seed", type=int, default=None, help="Simulator seed (random when absent).")
@click.option("--dashboard-port", default=8050, show_default=True, help="Web dashboard port (127.0.0.1).")
def demo(
    data_dir: Path,
    warehouse: str,
    port: int | None,
    interval_ms: int,
    top: int,
    seed: int | None,
    dashboard_port: int,
) -> None:
    """Run the simulator, the pipeline and the web dashboard, with a live leaderboard until Ctrl-C."""
    from cohortflow.demo import DemoOptions, run_demo

    options = DemoOptions(
        data_dir, warehouse, port, interval_ms, top=top, seed=seed, dashboard_port=dashboard_port
    )
    run_demo(options)


def _load_commands() -> None:
    from cohortflow.simulator.commands import api_faults, generate, reset

    for command in (generate, reset, api_faults):
        main.add_command(command)


_load_commands()
