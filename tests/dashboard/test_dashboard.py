"""The dashboard in a real headless Chromium, over a warehouse a real pipeline writes (SQLite, PostgreSQL)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cohortflow.simulator.batches import BatchLedger
from cohortflow.simulator.process import SimulatorProcess
from cohortflow.state import LOG_KEY
from cohortflow.warehouse import open_warehouse
from tests.dashboard.support import ARTIFACTS, DashboardProcess, chromium, screenshot
from tests.helpers import generate
from tests.support.pipeline import catch_up, pipeline_cmd
from tests.support.wait import wait_until

HOSTILE = ("<script>alert(1)</script>", "[/bold]", "<b>bold</b> & co")
HISTORY = ("--history-batches", "40", "--history-students", "600", "--history-test-runs", "12000")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(params=["sqlite", "postgres"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return str(tmp_path / "warehouse.db")


def add_hostile_batches(data: Path) -> None:
    """Batch names an attacker might choose, served by the simulated API like any other."""
    ledger = BatchLedger(data / ".batches.db")
    try:
        last = datetime.fromisoformat(ledger.last.created_at) if ledger.last else datetime(2025, 1, 1)  # noqa: DTZ001
        for i, name in enumerate(HOSTILE, start=1):
            ledger.add(name, (last + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S.%f"))
    finally:
        ledger.close()


def backend(target: str) -> str:
    return "postgres" if "://" in target else "sqlite"


def warehouse_read(target: str, sql: str) -> list[tuple[Any, ...]]:
    with open_warehouse(target) as wh:
        return wh.execute(sql)


def last_commit(target: str) -> str:
    return str(warehouse_read(target, "SELECT max(updated_at) FROM pipeline_state")[0][0])


def page_text(browser: Any, element_id: str) -> str:
    return str(browser.execute_script(f"return document.getElementById('{element_id}').textContent"))


def test_dashboard_live_in_chromium(tmp_path: Path, warehouse: str, browser: Any) -> None:
    data = tmp_path / "data"
    generate(data, "--seed", "5", "--dirty-rate", "0.02", *HISTORY)
    add_hostile_batches(data)
    with SimulatorProcess(data, "--seed", "5", "--interval-ms", "150") as sim:
        assert catch_up(data, sim.url, warehouse).returncode == 0
        with DashboardProcess(warehouse, data, f"{sim.url}/batches") as board:
            check_metrics(board.url, data, warehouse)
            check_top_batch_and_escaping(browser, board.url, warehouse)
            check_live_updates(browser, board.url, data, sim.url, warehouse)
            check_other_pages(browser, board.url, warehouse)


def check_top_batch_and_escaping(browser: Any, url: str, warehouse: str) -> None:
    # The stream runs: read the page and the warehouse at once, and retry until no commit fell in between.
    def consistent() -> tuple[str, str] | None:
        before = last_commit(warehouse)
        browser.get(f"{url}/")
        wait_until(
            lambda: browser.execute_script("return document.querySelectorAll('#chart .bars path').length"),
            30,
            "the chart",
        )
        top = warehouse_read(warehouse, "SELECT name FROM batch_leaderboard ORDER BY rank, batch_id LIMIT 1")[
            0
        ][0]
        shown = browser.execute_script(
            "return document.querySelector('#leaderboard tbody tr td a').textContent"
        )
        return (top, shown) if last_commit(warehouse) == before else None

    top, shown = wait_until(consistent, 60, "a page read between two commits", interval=0)
    assert shown == top
    screenshot(browser, f"leaderboard-{backend(warehouse)}")

    browser.get(f"{url}/?q=alert")
    wait_until(
        lambda: page_text(browser, "leaderboard").count("<script>"), 30, "the hostile batch in the table"
    )
    names = browser.execute_script(
        "return [...document.querySelectorAll('#leaderboard tbody a')].map(a => a.textContent)"
    )
    assert names == [HOSTILE[0]]
    ticks = browser.execute_script(
        "return [...document.querySelectorAll('#chart .ytick text')].map(t => t.textContent)"
    )
    assert ticks == [HOSTILE[0]], "the chart shows the name as text"
    assert browser.execute_script("return document.querySelectorAll('#leaderboard script').length") == 0
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in browser.page_source
    browser.get(f"{url}/?q=bold")  # rich markup, and tags the chart library would otherwise render
    wait_until(lambda: page_text(browser, "leaderboard").count("[/bold]"), 30, "the [/bold] batch")
    names = browser.execute_script(
        "return [...document.querySelectorAll('#leaderboard tbody a')].map(a => a.textContent)"
    )
    ticks = browser.execute_script(
        "return [...document.querySelectorAll('#chart .ytick text')].map(t => t.textContent)"
    )
    assert sorted(names) == sorted(ticks) == sorted(HOSTILE[1:])
    screenshot(browser, "hostile-names")


def check_live_updates(browser: Any, url: str, data: Path, sim_url: str, warehouse: str) -> None:
    browser.get(f"{url}/")
    wait_until(lambda: browser.execute_script("return document.body.dataset.updates"), 30, "the event stream")
    browser.execute_script("window.notReloaded = true")
    follower = subprocess.Popen(pipeline_cmd(data, sim_url, warehouse), stderr=subprocess.PIPE, text=True)
    try:
        delays = [commit_to_page(browser, warehouse) for _ in range(3)]
    finally:
        follower.send_signal(signal.SIGTERM)
        _, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    assert browser.execute_script("return window.notReloaded") is True
    if backend(warehouse) == "sqlite":
        assert_wal_not_pinned(warehouse)
    (ARTIFACTS / f"live-delays-{backend(warehouse)}.json").write_text(json.dumps(delays))
    assert max(delays) < 1.0, f"commit-to-page delays {delays}"
    screenshot(browser, "leaderboard-live")


def assert_wal_not_pinned(path: str) -> None:
    """With the page open and listening, a writer can still checkpoint the whole WAL away."""
    with closing(sqlite3.connect(path, timeout=30)) as conn:
        for _ in range(5):
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            assert busy == 0
            assert Path(f"{path}-wal").stat().st_size == 0
            time.sleep(0.1)


def commit_to_page(browser: Any, warehouse: str) -> float:
    """Seconds from seeing a new commit in the warehouse to seeing it in the open page."""
    shown = page_text(browser, "last-commit")
    commit = wait_until(
        lambda: (c := last_commit(warehouse)) > shown and c, 60, "a new commit", interval=0.01
    )
    seen = time.monotonic()
    wait_until(lambda: page_text(browser, "last-commit") >= commit, 10, f"commit {commit} on the page")
    return time.monotonic() - seen


def check_metrics(url: str, data: Path, warehouse: str) -> None:
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)}
    value = {f: {tuple(sorted(s.labels.items())): s.value for s in families[f].samples} for f in families}
    cursor = warehouse_read(warehouse, f"SELECT value FROM pipeline_state WHERE key = '{LOG_KEY}'")[0][0]
    lines = (data / "test_runs.log").read_bytes()[: json.loads(cursor)["offset"]].count(b"\n")
    assert value["cohortflow_lines_ingested"][()] == lines
    ticks = value["cohortflow_ticks_ingested"][()]
    buckets = {
        s.labels["le"]: s.value
        for s in families["cohortflow_tick_duration_seconds"].samples
        if s.name.endswith("_bucket")
    }
    assert ticks >= 1 and buckets["+Inf"] == ticks
    sums = [s.value for s in families["cohortflow_tick_duration_seconds"].samples if s.name.endswith("_sum")]
    assert sums and sums[0] > 0
    quarantine = {
        (s.labels["source"], s.labels["reason"]): s.value
        for s in families["cohortflow_quarantine_records"].samples
    }
    counted = warehouse_read(warehouse, "SELECT source, reason, count(*) FROM quarantine GROUP BY 1, 2")
    assert quarantine == {(s, r): float(n) for s, r, n in counted} and quarantine
    assert value["cohortflow_source_lag"][(("source", "test_runs"), ("unit", "bytes"))] >= 0
    assert {
        "cohortflow_last_commit_timestamp_seconds",
        "cohortflow_source_last_commit_timestamp_seconds",
    } <= set(families)
    students = warehouse_read(warehouse, "SELECT count(*) FROM students")[0][0]
    assert value["cohortflow_rows"][(("table", "students"),)] == students


def check_other_pages(browser: Any, url: str, warehouse: str) -> None:
    # No pipeline runs now: the page's ranks must be the batch_leaderboard view's, row for row.
    view = warehouse_read(
        warehouse,
        "SELECT rank, batch_id, name, students_completed_3plus FROM batch_leaderboard ORDER BY 1, 2",
    )
    shown = httpx.get(f"{url}/api/leaderboard", params={"top": 1000}).json()
    assert [(r["rank"], r["batch_id"], r["name"], r["students_completed_3plus"]) for r in shown] == view
    web = httpx.get(f"{url}/api/leaderboard", params={"top": 1000, "track": "web"}).json()
    assert web and all(r["name"].startswith("web-") for r in web)
    assert len(web) == sum(name.startswith("web-") for _, _, name, _ in view)
    top = httpx.get(f"{url}/api/leaderboard", params={"top": 1}).json()[0]
    browser.get(f"{url}/batches/{top['batch_id']}")
    assert page_text(browser, "batch-name") == top["name"]
    rows = httpx.get(f"{url}/api/batches/{top['batch_id']}/students").json()
    assert sum(r["lessons_completed"] >= 3 for r in rows) == top["students_completed_3plus"]
    browser.get(f"{url}/sources")
    assert "test_runs" in page_text(browser, "sources")
    screenshot(browser, "sources")
    browser.get(f"{url}/quarantine?reason=invalid_json")
    reasons = browser.execute_script(
        "return [...document.querySelectorAll('#rejects tbody tr td:nth-child(2)')].map(t => t.textContent)"
    )
    assert reasons and set(reasons) == {"invalid_json"}
    screenshot(browser, "quarantine")
    csv_text = httpx.get(f"{url}/api/rejects", params={"format": "csv", "reason": "invalid_json"}).text
    assert csv_text.splitlines()[0] == "id,source,location,reason,raw,ingested_at"
    assert json.loads(httpx.get(f"{url}/api/sources").text)[0]["source"] == "test_runs"
