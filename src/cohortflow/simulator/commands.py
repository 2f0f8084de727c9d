"""CLI commands of the simulator: parse options, call `runner` / `datadir`, nothing else."""

from __future__ import annotations

from pathlib import Path

import click

_DATA_DIR = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    show_default=True,
    help="Directory of the generated sources (students.db, test_runs.log, hidden files).",
)


@click.command()
@_DATA_DIR
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the batch API binds.")
@click.option("--port", type=int, default=8000, show_default=True, help="Batch API port (0 = a free port).")
@click.option("--seed", type=int, default=None, help="Seed: same seed and options, same records.")
@click.option(
    "--interval-ms",
    type=int,
    default=500,
    show_default=True,
    help="Stream interval: 1-19 runs each, 4 students every 5, a batch every 10.",
)
@click.option("--history-batches", type=int, default=0, help="Batches to write before streaming.")
@click.option("--history-students", type=int, default=0, help="Students to write before streaming.")
@click.option("--history-test-runs", type=int, default=0, help="Test-run lines to write before streaming.")
@click.option(
    "--unknown-student-rate",
    type=float,
    default=0.02,
    show_default=True,
    help="Share of runs naming a student id not written yet (written soon after).",
)
@click.option(
    "--dirty-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Share of log lines that are truly broken (see docs/simulator.md).",
)
@click.option(
    "--exact-after",
    is_flag=True,
    help="API compares `after` exactly instead of truncated to whole seconds (the upstream's).",
)
@click.option(
    "--no-stream",
    "no_stream",
    is_flag=True,
    help="Write the history (if any) and exit; with --serve, then serve it without writing.",
)
@click.option("--serve", is_flag=True, help="With --no-stream: keep serving the batch API.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option(
    "--start-time",
    default=None,
    help="UTC start of the history (ISO 8601): byte-identical files for a seed.",
)
@click.option(
    "--edit-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Students renamed, moved or deleted per second while streaming (fractions accumulate).",
)
@click.option(
    "--crash-writer",
    is_flag=True,
    help="At the end, kill the students writer (SIGKILL) mid-transaction: leaves a hot journal.",
)
@click.option(
    "--rotate-every",
    default=None,
    help="Rotate test_runs.log when it reaches a size (65536, 64k, 1m) or an age (2s, 500ms).",
)
@click.option(
    "--rotate-style",
    type=click.Choice(["rename", "copytruncate"]),
    default="rename",
    show_default=True,
    help="rename: log -> log.1 and a new log; copytruncate: copy to log.1, truncate in place.",
)
@click.option("--busy-timeout-ms", type=int, default=5000, hidden=True)
def generate(
    data_dir: Path,
    host: str,
    port: int,
    seed: int | None,
    interval_ms: int,
    history_batches: int,
    history_students: int,
    history_test_runs: int,
    unknown_student_rate: float,
    dirty_rate: float,
    exact_after: bool,
    no_stream: bool,
    serve: bool,
    duration: float | None,
    start_time: str | None,
    edit_rate: float,
    crash_writer: bool,
    rotate_every: str | None,
    rotate_style: str,
    busy_timeout_ms: int,
) -> None:
    """Write the simulated sources (students.db, test_runs.log) and serve the batch API."""
    from cohortflow.simulator import runner

    runner.generate(
        runner.GenerateOptions(
            data_dir=data_dir,
            host=host,
            port=port,
            seed=seed,
            interval_ms=interval_ms,
            history_batches=history_batches,
            history_students=history_students,
            history_test_runs=history_test_runs,
            unknown_student_rate=unknown_student_rate,
            dirty_rate=dirty_rate,
            exact_after=exact_after,
            stream=not no_stream,
            serve=serve,
            duration_s=duration,
            start_time=None if start_time is None else runner.parse_start_time(start_time),
            busy_timeout_ms=busy_timeout_ms,
            edit_rate=edit_rate,
            crash_writer=crash_writer,
            rotate_every=rotate_every,
            rotate_style=rotate_style,
        )
    )


@click.command()
@_DATA_DIR
@click.option("--force", is_flag=True, help="Delete even while a generator runs on the directory.")
def reset(data_dir: Path, force: bool) -> None:
    """Delete all generated data in the data directory (and nothing else)."""
    from cohortflow.simulator.datadir import DataDir
    from cohortflow.simulator.datadir import reset as reset_data

    deleted = reset_data(DataDir(data_dir), force=force)
    click.echo(f"deleted {len(deleted)} generated file(s) in {data_dir}")


@click.command("api-faults")
@click.option("--upstream", required=True, help="The batch API to proxy, e.g. http://127.0.0.1:8000.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the proxy binds.")
@click.option("--port", type=int, default=8001, show_default=True, help="Proxy port (0 = a free port).")
@click.option(
    "--faults",
    default="all=0.05",
    show_default=True,
    help="KIND=RATE,... with KIND in 5xx, 429, hang, reset, garbage, stale, backwards, broken, or all.",
)
@click.option("--hang-seconds", type=float, default=6.0, show_default=True, help="How long a hang lasts.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fault draws.")
@click.option("--calm-after", type=float, default=None, help="Stop injecting faults after S seconds.")
def api_faults(
    upstream: str,
    host: str,
    port: int,
    faults: str,
    hang_seconds: float,
    seed: int,
    calm_after: float | None,
) -> None:
    """Serve the batch API through a proxy that injects faults (see docs/simulator.md)."""
    from cohortflow.simulator.faults import FaultPlan, serve

    try:
        plan = FaultPlan.parse(faults, hang_seconds)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--faults") from exc
    serve(upstream, (host, port), plan, seed, calm_after)
