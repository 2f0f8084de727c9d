"""The main job: the simulated sources, the pipeline following them, and a live leaderboard.

Both the generator and the pipeline run as child processes, as they would in
production; this process only reads the warehouse, like an analyst would.
Running it again resumes: the generator appends to its data and the pipeline
goes on from its committed cursors.
"""

from __future__ import annotations

import errno
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from cohortflow.errors import CohortflowError, EngineError
from cohortflow.report import leaderboard_table
from cohortflow.simulator.datadir import DataDir
from cohortflow.simulator.process import SimulatorProcess
from cohortflow.warehouse import open_warehouse

DEFAULT_PORT = 8000


@dataclass(frozen=True)
class DemoOptions:
    """What the demo runs and where."""

    data_dir: Path = Path("data")
    warehouse: str = "data/warehouse.db"
    port: int | None = None  # None: DEFAULT_PORT, or any free port when it is taken
    interval_ms: int = 500
    history: tuple[int, int, int] = (200, 5_000, 60_000)
    top: int = 10
    seed: int | None = None
    dashboard_port: int = 8050


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether another process listens on ``host:port`` (binding it as the simulator would)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def _port(options: DemoOptions, console: Console) -> int:
    """The port asked for; else the default one, or any free port (0) when it is taken."""
    if options.port is not None:
        return options.port
    if port_in_use(DEFAULT_PORT):
        console.print(f"[yellow]port {DEFAULT_PORT} is in use: the batch API takes a free port instead[/]")
        return 0
    return DEFAULT_PORT


def _generator_args(options: DemoOptions, port: int) -> list[str]:
    args = ["--port", str(port), "--interval-ms", str(options.interval_ms)]
    if options.seed is not None:
        args += ["--seed", str(options.seed)]
    if not DataDir(options.data_dir).has_data():
        batches, students, runs = options.history
        args += ["--history-batches", str(batches), "--history-students", str(students)]
        args += ["--history-test-runs", str(runs)]
    return args


def _pipeline(options: DemoOptions, url: str, log: Path) -> subprocess.Popen[bytes]:
    data = options.data_dir
    command = [
        *(sys.executable, "-m", "cohortflow", "run", "--quiet", "--on-reset", "restart"),
        *("--students-db", str(data / "students.db"), "--test-runs-log", str(data / "test_runs.log")),
        *("--batches-url", f"{url}/batches", "--warehouse", options.warehouse),
    ]
    with log.open("ab") as sink:
        return subprocess.Popen(command, stdout=sink, stderr=sink)


def _dashboard(options: DemoOptions, url: str, log: Path) -> subprocess.Popen[bytes] | None:
    """The web dashboard as a child process, or None (with the pip line) when its extra is missing."""
    from cohortflow.dashboard import EXTRA, has_extra

    if not has_extra():
        Console(stderr=True).print(f"[yellow]no web dashboard: {EXTRA}[/]")
        return None
    data = options.data_dir
    command = [
        *(sys.executable, "-m", "cohortflow", "dashboard", "--port", str(options.dashboard_port)),
        *("--students-db", str(data / "students.db"), "--test-runs-log", str(data / "test_runs.log")),
        *("--batches-url", f"{url}/batches", "--warehouse", options.warehouse),
    ]
    with log.open("ab") as sink:
        return subprocess.Popen(command, stdout=sink, stderr=sink)


def _view(options: DemoOptions, started: float) -> Group:
    try:
        with open_warehouse(options.warehouse) as warehouse:
            rows = warehouse.leaderboard(options.top)
            totals = warehouse.execute(
                "SELECT (SELECT count(*) FROM batches), (SELECT count(*) FROM students), "
                "(SELECT count(*) FROM quarantine)"
            )[0]
    except CohortflowError as exc:
        return Group(Text(f"waiting for the warehouse: {exc}", style="yellow"))
    batches, students, quarantined = totals
    footer = Text(
        f"{batches} batches · {students} students · {quarantined} lines quarantined · "
        f"up {time.monotonic() - started:.0f} s · Ctrl-C to stop",
        style="dim",
    )
    return Group(leaderboard_table(rows), footer)


def run_demo(options: DemoOptions, console: Console | None = None) -> None:
    """Generate, ingest and show the leaderboard live until Ctrl-C."""
    console = console or Console()
    options.data_dir.mkdir(parents=True, exist_ok=True)
    log = options.data_dir / "pipeline.log"
    console.print(f"[dim]starting the simulator in {options.data_dir} (history first, if new)…[/]")
    args = _generator_args(options, _port(options, console))
    with SimulatorProcess(options.data_dir, *args, ready_timeout_s=600) as sim:
        console.print(f"[dim]batch API on {sim.url}; pipeline log in {log}[/]")
        pipeline = _pipeline(options, sim.url, log)
        board = _dashboard(options, sim.url, log)
        if board is not None:
            console.print(f"dashboard: http://127.0.0.1:{options.dashboard_port}/")
        started = time.monotonic()
        try:
            with Live(_view(options, started), console=console, refresh_per_second=2) as live:
                try:
                    while pipeline.poll() is None:
                        time.sleep(0.5)
                        live.update(_view(options, started))
                except KeyboardInterrupt:
                    live.update(_view(options, started))  # the frame left on screen is current
                    raise
            msg = f"the pipeline stopped with status {pipeline.returncode}: see {log}"
            raise EngineError(msg)
        except KeyboardInterrupt:
            console.print("[dim]stopping…[/]")
        finally:
            for child in (board, pipeline):
                if child is not None and child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            for child in (board, pipeline):
                if child is not None:
                    child.wait(60)
