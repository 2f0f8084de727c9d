"""What differs between warehouse backends, as data.

The schema and every statement are written once (``schema.py``) with ``?``
placeholders and ``{name}`` slots; a :class:`Dialect` fills the slots and
rewrites placeholders. No other module branches on the backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, eq=False)  # dialects are singletons: hash by identity
class Dialect:
    """SQL snippets and capabilities of one backend."""

    name: str
    placeholder: str
    slots: dict[str, str] = field(default_factory=dict)
    begin: str = "BEGIN"
    bulk_min_rows: int | None = None  # load at least this many rows via the backend's bulk path
    # Temp tables get no statistics unless asked (PostgreSQL's autovacuum never sees them).
    analyze_temp_tables: bool = False

    def render(self, sql: str) -> str:
        """Fill the ``{slot}`` names and swap ``?`` placeholders for this backend's."""
        text = sql.format_map(self.slots) if self.slots else sql
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)


SQLITE = Dialect(
    name="sqlite",
    placeholder="?",
    slots={
        "bigint": "INTEGER",
        "serial_pk": "INTEGER PRIMARY KEY",
        "without_rowid": "WITHOUT ROWID",
        "create_view": "CREATE VIEW IF NOT EXISTS",
        "temp_table": "CREATE TEMP TABLE IF NOT EXISTS",
    },
    # IMMEDIATE takes the write lock up front: no deadlock-prone lock upgrade later.
    begin="BEGIN IMMEDIATE",
)

POSTGRES = Dialect(
    name="postgresql",
    placeholder="%s",
    slots={
        "bigint": "BIGINT",
        "serial_pk": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "without_rowid": "",
        "create_view": "CREATE OR REPLACE VIEW",
        "temp_table": "CREATE TEMP TABLE IF NOT EXISTS",
    },
    begin="BEGIN",
    bulk_min_rows=64,  # COPY then INSERT ... SELECT: one round trip instead of one per row
    analyze_temp_tables=True,
)
