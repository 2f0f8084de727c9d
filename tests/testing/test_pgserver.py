"""The throwaway PostgreSQL server and its fixtures, against a real server."""

from __future__ import annotations

import os
import pwd
import stat
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from cohortflow.errors import ConfigError, WarehouseError
from cohortflow.testing import pgserver
from cohortflow.testing.pgserver import SERVICE_USER, ThrowawayPostgres
from tests.support import FreshDatabases, new_server

pytest_plugins = ["tests.support.pg"]


def _scalar(url: str, query: str) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_server_serves_postgres_15_on_loopback(pg_server: ThrowawayPostgres) -> None:
    assert pg_server.url == f"postgresql://cohortflow@127.0.0.1:{pg_server.port}/cohortflow"
    with psycopg.connect(pg_server.url) as conn:
        version, addr, port, db, fsync = (
            conn.execute(
                "SELECT current_setting('server_version_num')::int, host(inet_server_addr()),"
                " inet_server_port(), current_database(), current_setting('fsync')"
            ).fetchone()
            or ()
        )
    assert version >= 150000
    assert (addr, port, db, fsync) == ("127.0.0.1", pg_server.port, "cohortflow", "off")


def test_server_process_is_not_root(pg_server: ThrowawayPostgres) -> None:
    assert pg_server.pid is not None
    uids = psutil.Process(pg_server.pid).uids()
    expected = pwd.getpwnam(SERVICE_USER).pw_uid if os.geteuid() == 0 else os.geteuid()
    assert expected != 0
    assert (uids.real, uids.effective) == (expected, expected)


def test_restart_keeps_data_and_port(pg_server: ThrowawayPostgres, pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (1), (2)")
    port, pid = pg_server.port, pg_server.pid
    pg_server.restart()
    assert (pg_server.port, pg_server.running) == (port, True)
    assert pg_server.pid not in (None, pid)
    assert _scalar(pg_url, "SELECT sum(x) FROM kept") == 3


def test_restart_breaks_open_connections(pg_server: ThrowawayPostgres, pg_url: str) -> None:
    with psycopg.connect(pg_url) as old:
        old.execute("SELECT 1")
        pg_server.restart()
        with pytest.raises(psycopg.OperationalError):
            old.execute("SELECT 1")
    assert _scalar(pg_url, "SELECT 2") == 2


def test_stop_then_start(pg_server: ThrowawayPostgres, pg_url: str) -> None:
    pg_server.stop()
    assert (pg_server.running, pg_server.pid) == (False, None)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_url, connect_timeout=2).close()
    pg_server.start()
    assert _scalar(pg_url, "SELECT 3") == 3


def test_fresh_databases_are_isolated(pg_url: str, pg_database) -> None:
    other = pg_database()
    assert other != pg_url
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TABLE mine (x int)")
    assert _scalar(pg_url, "SELECT count(*) FROM pg_tables WHERE tablename = 'mine'") == 1
    assert _scalar(other, "SELECT count(*) FROM pg_tables WHERE tablename = 'mine'") == 0
    names = {_scalar(url, "SELECT current_database()") for url in (pg_url, other)}
    assert len(names) == 2


def test_fresh_databases_are_dropped_even_if_left_stopped(pg_server: ThrowawayPostgres) -> None:
    databases = FreshDatabases(pg_server, "test: drop me!")
    url = databases.new()
    name = url.rsplit("/", 1)[1]
    assert name.startswith("t_test_drop_me_")
    with psycopg.connect(url):
        pg_server.stop()
    databases.drop_all()
    assert pg_server.running
    listed = f"SELECT count(*) FROM pg_database WHERE datname = '{name}'"
    assert _scalar(pg_server.url, listed) == 0


def test_close_stops_and_deletes_even_on_error() -> None:
    with pytest.raises(RuntimeError, match="test failed"), new_server() as pg:
        root, pid = pg.root, pg.pid
        assert pid is not None and (root / "data" / "PG_VERSION").exists()
        msg = "test failed"
        raise RuntimeError(msg)
    assert not root.exists()
    assert _gone(pid)
    with pytest.raises(WarehouseError, match="was closed"):
        pg.start()


def _fake_install(bindir: Path, version: str) -> None:
    bindir.mkdir(parents=True)
    for tool in ("initdb", "pg_ctl", "postgres"):
        script = bindir / tool
        script.write_text(f"#!/bin/sh\necho 'postgres (PostgreSQL) {version}'\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_binaries_highest_debian_version_wins(tmp_path: Path, monkeypatch) -> None:
    for version in ("9.6.24", "15.8", "16.4"):
        _fake_install(tmp_path / version.rsplit(".", 1)[0] / "bin", version)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(pgserver, "_DEBIAN_ROOT", tmp_path)
    found = pgserver.find_binaries()
    assert (found.bindir, found.version) == (tmp_path / "16" / "bin", 16)


def test_binaries_missing_or_too_old_name_the_fix(tmp_path: Path, monkeypatch) -> None:
    _fake_install(tmp_path / "13" / "bin", "13.4")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(pgserver, "_DEBIAN_ROOT", tmp_path)
    with pytest.raises(ConfigError, match="scripts/ensure-services") as caught:
        ThrowawayPostgres()
    assert "found only PostgreSQL 13" in str(caught.value)


_OUTCOMES = [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]


@pytest.mark.parametrize(("ci", "outcome"), _OUTCOMES)
def test_absent_postgres_skips_outside_ci_only(
    tmp_path: Path, monkeypatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(pgserver, "_DEBIAN_ROOT", tmp_path)
    with pytest.raises(outcome, match="scripts/ensure-services"):
        new_server()
