"""The read-only PostgreSQL backend of the dashboard (imported only for a postgresql:// warehouse)."""

from __future__ import annotations

from typing import Any

import psycopg

from cohortflow.warehouse.postgres import PostgresBackend

STATEMENT_TIMEOUT_MS = 5_000


class ReadOnlyPostgres(PostgresBackend):
    """A PostgreSQL warehouse through a read-only session with a statement timeout."""

    def connect(self, writer: bool) -> psycopg.Connection[Any]:
        """Open an autocommit session whose transactions are read-only and statements short."""
        options = f"-c default_transaction_read_only=on -c statement_timeout={STATEMENT_TIMEOUT_MS}"
        return psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=self.connect_timeout,
            application_name="cohortflow-dashboard",
            options=options,
        )
