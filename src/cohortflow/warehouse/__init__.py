"""The warehouse: schema, apply and backends (SQLite file or PostgreSQL URL).

Backends are chosen by the target's form from :data:`BACKENDS`; the engine
only ever sees a :class:`Warehouse`.
"""

from __future__ import annotations

from collections.abc import Callable

from cohortflow.errors import ConfigError
from cohortflow.warehouse.core import Backend, Transaction, Warehouse
from cohortflow.warehouse.sqlite import SQLiteBackend
from cohortflow.warehouse.sqlite_paths import path_of_url


def _postgres(target: str) -> Backend:
    try:
        from cohortflow.warehouse.postgres import PostgresBackend
    except ImportError as exc:
        msg = "a postgresql:// warehouse needs the PostgreSQL extra: pip install 'cohortflow[postgres]'"
        raise ConfigError(msg) from exc
    return PostgresBackend(target)


BACKENDS: dict[str, Callable[[str], Backend]] = {
    "postgresql://": _postgres,
    "postgres://": _postgres,
    "sqlite:": lambda target: SQLiteBackend(path_of_url(target)),
}


def open_warehouse(target: str, writer: bool = False) -> Warehouse:
    """Open the warehouse at a file path, ``sqlite:///abs/path`` or ``postgresql://`` URL.

    Readers (reports, analysts) leave the database as they find it; the pipeline is the writer.
    """
    for prefix, make in BACKENDS.items():
        if target.startswith(prefix):
            return Warehouse(make(target), writer)
    if "://" in target:
        msg = f"--warehouse {target.split('://', maxsplit=1)[0]}://… is not supported: use a file path or postgresql://"
        raise ConfigError(msg)
    return Warehouse(SQLiteBackend(target), writer)


__all__ = ["BACKENDS", "Backend", "Transaction", "Warehouse", "open_warehouse"]
