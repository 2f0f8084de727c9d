"""The dashboard at scale: page and API latency (p50/p99) and idle CPU with one open page.

    .venv/bin/python bench/dashboard.py                     # 10k batches / 200k students
    .venv/bin/python bench/dashboard.py --batches 500 --students 10000 --lines 30000 --idle-seconds 10

Builds (once, cached under bench/out/) a warehouse with the real simulator and
`cohortflow run --once`, starts `cohortflow dashboard` as a child process, times
sequential requests from one client, then opens one leaderboard page (headless
chromium when installed, else one event-stream client: the server does the same
work) and samples the server's CPU time while nothing is committed.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import psutil

from common import (
    BENCH,
    Sizes,
    check,
    cohortflow,
    generate,
    median,
    percentile,
    run_child,
    served,
    source_options,
)

ENDPOINTS = {
    "leaderboard page": "/",
    "leaderboard page, track + search": "/?track=web&q=a1&top=50",
    "api leaderboard": "/api/leaderboard?top=20",
    "api leaderboard csv, top 1000": "/api/leaderboard?top=1000&format=csv",
    "batch page": "/batches/1",
    "quarantine page": "/quarantine",
    "metrics": "/metrics",
}


def build(sizes: Sizes, out: Path = BENCH / "out", warehouse_url: str | None = None) -> tuple[Path, str]:
    """A caught-up warehouse over a history of ``sizes`` (the data set is reused when already built)."""
    root = out / f"dashboard-{sizes.batches}-{sizes.students}-{sizes.lines}"
    data, warehouse = root / "data", warehouse_url or str(root / "warehouse.db")
    if not (root / "done").exists():
        shutil.rmtree(root, ignore_errors=True)
        generate(data, sizes)
        (root / "done").touch()
    with served(data) as sim:  # catch up (a no-op once done; it also brings the schema up to date)
        options = source_options(data, f"{sim.url}/batches")
        check(
            run_child(cohortflow("run", "--once", "--quiet", *options, "--warehouse", str(warehouse))), "run"
        )
    return data, str(warehouse)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_dashboard(data: Path, warehouse: str, batches_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = cohortflow(
        "dashboard", "--warehouse", warehouse, "--port", str(port), *source_options(data, batches_url)
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.terminate()
    msg = "the dashboard did not start"
    raise RuntimeError(msg)


def latencies(url: str, path: str, requests: int) -> list[float]:
    with httpx.Client(base_url=url, timeout=30) as client:
        client.get(path).raise_for_status()  # warm up
        times = []
        for _ in range(requests):
            started = time.perf_counter()
            client.get(path).raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
    return times


def open_page(url: str) -> Any:
    """One open leaderboard page: chromium when installed, else a bare event-stream client."""
    if shutil.which("chromium") and shutil.which("chromedriver"):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or ""
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
            options.add_argument(arg)
        driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or ""))
        driver.get(f"{url}/")
        return "chromium", driver.quit
    client = httpx.Client(timeout=None)
    stream = client.stream("GET", f"{url}/events/leaderboard").__enter__()
    next(stream.iter_lines())
    return "event-stream client", lambda: (stream.close(), client.close())


def idle_cpu(server: subprocess.Popen[bytes], url: str, seconds: float) -> tuple[str, float]:
    """Share of one core the server uses with one open page and no commits."""
    kind, close = open_page(url)
    try:
        time.sleep(3)  # let the page load and settle
        proc = psutil.Process(server.pid)
        before, started = proc.cpu_times(), time.monotonic()
        time.sleep(seconds)
        after, wall = proc.cpu_times(), time.monotonic() - started
    finally:
        close()
    used = (after.user - before.user) + (after.system - before.system)
    return kind, 100 * used / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=10_000)
    parser.add_argument("--students", type=int, default=200_000)
    parser.add_argument("--lines", type=int, default=600_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--idle-seconds", type=float, default=30)
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL warehouse")
    parser.add_argument("--out", type=Path, default=BENCH / "out", help="where data sets are cached")
    args = parser.parse_args()
    with ExitStack() as scope:
        url = None
        if args.postgres:
            from cohortflow.testing.pgserver import ThrowawayPostgres

            url = scope.enter_context(ThrowawayPostgres()).create_database("dashboard_bench")
        measure(args, *build(Sizes(args.lines, args.students, args.batches), args.out, url))


def measure(args: argparse.Namespace, data: Path, warehouse: str) -> None:
    with served(data) as sim:
        server, url = start_dashboard(data, warehouse, f"{sim.url}/batches")
        try:
            kind = "PostgreSQL" if args.postgres else "SQLite"
            print(
                f"dashboard, {kind}: {args.batches} batches / {args.students} students / {args.lines} lines"
            )
            print(f"{'endpoint':36} {'p50 ms':>8} {'p99 ms':>8}")
            for name, path in ENDPOINTS.items():
                times = latencies(url, path, args.requests)
                print(f"{name:36} {median(times):8.1f} {percentile(times, 99):8.1f}")
            kind, cpu = idle_cpu(server, url, args.idle_seconds)
            verdict = "ok" if cpu < 1.0 else "OVER the 1% target"
            print(f"idle CPU of the server, one open page ({kind}): {cpu:.2f}% of a core ({verdict})")
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
