"""A throwaway PostgreSQL server for tests and benchmarks.

`ThrowawayPostgres` runs ``initdb`` and ``pg_ctl`` from a PostgreSQL 15+ installation
into a temp directory and serves on a free ``127.0.0.1`` port, tuned for speed
(``fsync=off``), with trust authentication on loopback only and no Unix socket::

    with ThrowawayPostgres() as pg:
        conn = psycopg.connect(pg.url)
        pg.restart()  # same port, same data: existing connections break

PostgreSQL refuses to run as root; when we are root the server runs as the system
user `cohortflow-pg` (created on first use). Binaries come from ``postgres`` on PATH,
else the highest ``/usr/lib/postgresql/*/bin``; ``scripts/ensure-services`` installs
them when missing.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Self

from cohortflow.errors import ConfigError, WarehouseError

MIN_VERSION = 15
SERVICE_USER = "cohortflow-pg"
SUPERUSER = "cohortflow"
HOST = "127.0.0.1"
_TOOLS = ("initdb", "pg_ctl", "postgres")
_DEBIAN_ROOT = Path("/usr/lib/postgresql")
_SETTINGS = {
    "listen_addresses": f"'{HOST}'",
    "unix_socket_directories": "''",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "jit": "off",
    "timezone": "'UTC'",
}


@dataclass(frozen=True)
class PostgresBinaries:
    """One PostgreSQL installation: the directory of its server binaries and its version."""

    bindir: Path
    version: int

    def tool(self, name: str) -> str:
        """Return the path of one binary (``initdb``, ``pg_ctl``…) as a string."""
        return str(self.bindir / name)


def find_binaries() -> PostgresBinaries:
    """Find PostgreSQL 15+ server binaries, or raise `ConfigError` saying how to get them."""
    found: list[str] = []
    for bindir in _candidate_dirs():
        version = _major_version(bindir)
        if version is not None and version >= MIN_VERSION:
            return PostgresBinaries(bindir, version)
        if version is not None:
            found.append(f"PostgreSQL {version} in {bindir}")
    also = f" (found only {', '.join(found)})" if found else ""
    msg = (
        f"PostgreSQL {MIN_VERSION}+ server binaries ({', '.join(_TOOLS)}) not found on PATH "
        f"or in {_DEBIAN_ROOT}/*/bin{also}; run `scripts/ensure-services` "
        "(as root it installs the Debian package `postgresql`)"
    )
    raise ConfigError(msg)


def _candidate_dirs() -> list[Path]:
    on_path = shutil.which("postgres")
    dirs = [Path(on_path).resolve().parent] if on_path else []
    debian = _DEBIAN_ROOT.glob("*/bin")
    return dirs + sorted(debian, key=lambda d: _version_key(d.parent.name), reverse=True)


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name))


def _major_version(bindir: Path) -> int | None:
    if not all(os.access(bindir / tool, os.X_OK) for tool in _TOOLS):
        return None
    try:
        banner = subprocess.run(
            [str(bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\(PostgreSQL\) (\d+)", banner)
    return int(match.group(1)) if match else None


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _import_psycopg() -> ModuleType:
    try:
        import psycopg
    except ImportError as exc:
        msg = "the throwaway PostgreSQL needs psycopg: pip install 'cohortflow[postgres]'"
        raise ConfigError(msg) from exc
    return psycopg


@dataclass(frozen=True)
class _Account:
    """Who runs the server's binaries: `None` fields mean "ourselves"."""

    uid: int | None = None
    gid: int | None = None

    @classmethod
    def for_current_user(cls) -> _Account:
        """Ourselves, unless we are root: then the unprivileged `SERVICE_USER`."""
        if os.geteuid() != 0:
            return cls()
        entry = _service_user()
        return cls(entry.pw_uid, entry.pw_gid)

    def run(self, argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run one command as this account with a clean ``PG*``-free environment."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        as_user: dict[str, Any] = {}
        if self.uid is not None:
            as_user = {"user": self.uid, "group": self.gid, "extra_groups": []}
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=cwd,
            env=env,
            **as_user,
        )

    def own(self, path: Path) -> None:
        """Hand `path` over to this account (no-op when that is ourselves)."""
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)


def _service_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        pass
    argv = [shutil.which("useradd") or "/usr/sbin/useradd", "--system", "--user-group"]
    argv += ["--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"]
    argv.append(SERVICE_USER)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        why = done.stderr.strip() or f"exit status {done.returncode}"
    except OSError as exc:
        why = str(exc)
    try:  # a parallel run may have created it first: look again either way
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        msg = (
            f"PostgreSQL cannot run as root and creating the system user `{SERVICE_USER}` "
            f"with `useradd` failed: {why}; run the tests as a normal user"
        )
        raise ConfigError(msg) from None


def _cleanup(account: _Account, pg_ctl: str, root: Path) -> None:
    """Stop the server without a shutdown checkpoint and delete its directory."""
    data = root / "data"
    if (data / "postmaster.pid").exists():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            account.run([pg_ctl, "stop", "-D", str(data), "-m", "immediate", "-w"], root, 60)
    shutil.rmtree(root, ignore_errors=True)


class ThrowawayPostgres:
    """A private PostgreSQL server in a temp directory, deleted by `close()` or at exit.

    Args:
        database: the database created on first start; `url` points to it.
        base_dir: where the temp directory goes (default: the system temp dir). When
            we are root it must be reachable by the `cohortflow-pg` user.
        start_timeout: seconds to wait for the server to accept connections.

    """

    def __init__(
        self,
        database: str = "cohortflow",
        *,
        base_dir: Path | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.binaries = find_binaries()
        self.database = database
        self.host = HOST
        self.port = free_port()
        self.user = SUPERUSER
        self._timeout = start_timeout
        self._running = False
        self._account = _Account.for_current_user()
        self.root = Path(tempfile.mkdtemp(prefix="cohortflow-pg-", dir=base_dir))
        pg_ctl = self.binaries.tool("pg_ctl")
        self._finalizer = weakref.finalize(self, _cleanup, self._account, pg_ctl, self.root)
        self._account.own(self.root)

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        """The server log (kept across restarts, deleted with the directory)."""
        return self.root / "postgres.log"

    @property
    def url(self) -> str:
        """``postgresql://cohortflow@127.0.0.1:PORT/DATABASE`` for the main database."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        """Return the connection URL of another database on this server."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    @property
    def running(self) -> bool:
        """Whether the server was started and not stopped since."""
        return self._running

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while the server runs, else `None`."""
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except FileNotFoundError:
            return None
        return int(first_line)

    def start(self) -> None:
        """Start the server (initialising it first if new) and wait until it accepts clients."""
        if not self._finalizer.alive:
            msg = f"the throwaway PostgreSQL in {self.root} was closed; create a new one"
            raise WarehouseError(msg)
        if self._running:
            return
        first = not self.data_dir.exists()
        if first:
            self._initdb()
        self._start_server(port_retries=3 if first else 0)
        self._running = True
        self._wait_until_accepting()
        if first:
            self.create_database(self.database)

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``): clients are disconnected, data is kept."""
        if self._running:
            self._pg_ctl("stop", "-m", "fast", "-w")
            self._running = False

    def restart(self) -> None:
        """Stop and start again on the same port and data directory."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server at once and delete its directory; safe to call twice."""
        self._running = False
        self._finalizer()

    def create_database(self, name: str) -> str:
        """Create database `name` and return its URL."""
        self._admin("CREATE DATABASE {}", name)
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database `name` if it exists, disconnecting its clients."""
        self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<ThrowawayPostgres {self.url} {state} in {self.root}>"

    def _initdb(self) -> None:
        argv = [self.binaries.tool("initdb"), "-D", str(self.data_dir), "-U", self.user]
        argv += ["-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]
        done = self._account.run(argv, self.root, timeout=120)
        if done.returncode != 0:
            hint = f" (can `{SERVICE_USER}` reach {self.root.parent}?)" if self._account.uid else ""
            msg = f"`initdb` failed in {self.root}{hint}: {done.stderr.strip()}"
            raise WarehouseError(msg)
        self._write_settings({**_SETTINGS, "port": str(self.port)})

    def _write_settings(self, settings: dict[str, str]) -> None:
        lines = "".join(f"{key} = {value}\n" for key, value in settings.items())
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"\n# cohortflow throwaway server\n{lines}")

    def _start_server(self, port_retries: int) -> None:
        try:
            self._pg_ctl("start", "-l", str(self.log_path), "-w", "-t", str(int(self._timeout)))
        except WarehouseError:
            if port_retries <= 0 or "already in use" not in self._log_tail():
                raise
            self.port = free_port()
            self._write_settings({"port": str(self.port)})
            self._start_server(port_retries - 1)

    def _pg_ctl(self, action: str, *args: str) -> None:
        argv = [self.binaries.tool("pg_ctl"), action, "-D", str(self.data_dir), "-s", *args]
        try:
            done = self._account.run(argv, self.root, timeout=self._timeout + 30)
        except subprocess.TimeoutExpired as exc:
            msg = f"`pg_ctl {action}` timed out for {self.root}; server log: {self._log_tail()}"
            raise WarehouseError(msg) from exc
        if done.returncode != 0:
            out = (done.stderr + done.stdout).strip()
            msg = f"`pg_ctl {action}` failed for {self.root}: {out}; server log: {self._log_tail()}"
            raise WarehouseError(msg)

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _wait_until_accepting(self) -> None:
        psycopg = _import_psycopg()
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                psycopg.connect(self.url_for("postgres"), connect_timeout=5).close()
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    msg = f"PostgreSQL on port {self.port} did not accept connections: {exc}"
                    raise WarehouseError(msg) from exc
                time.sleep(0.05)
            else:
                return

    def _admin(self, statement: str, name: str) -> None:
        psycopg = _import_psycopg()
        query = psycopg.sql.SQL(statement).format(psycopg.sql.Identifier(name))
        with psycopg.connect(self.url_for("postgres"), autocommit=True) as conn:
            conn.execute(query)
