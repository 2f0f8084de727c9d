"""Shared test support: fixtures for real services and the skip-or-fail rule.

A test whose service (PostgreSQL, Java) is absent is skipped on a developer's
machine but fails in CI (``CI=true``), so a broken CI image cannot make the suite
green by skipping.
"""

from __future__ import annotations

import os
import re
import uuid
from typing import NoReturn

import pytest

from cohortflow.errors import ConfigError
from cohortflow.testing.pgserver import ThrowawayPostgres


def in_ci() -> bool:
    """Whether we run in CI, where every service must be present."""
    return os.environ.get("CI", "").strip().lower() == "true"


def unavailable(reason: str) -> NoReturn:
    """Skip the current test because a service is absent; fail instead in CI."""
    if in_ci():
        pytest.fail(f"{reason} [CI=true: absent services fail instead of skipping]", pytrace=False)
    pytest.skip(reason)


def new_server() -> ThrowawayPostgres:
    """Create (not start) a throwaway server, or skip/fail when PostgreSQL is absent."""
    try:
        return ThrowawayPostgres()
    except ConfigError as exc:
        reason = str(exc)
    unavailable(reason)  # outside the except block: no chained traceback in CI


class FreshDatabases:
    """Creates uniquely named databases on one server and drops them all at the end."""

    def __init__(self, server: ThrowawayPostgres, label: str) -> None:
        self.server = server
        self.label = re.sub(r"[^a-z0-9]+", "_", label.lower())[:40].strip("_")
        self.names: list[str] = []

    def new(self) -> str:
        """Create one more empty database and return its URL."""
        name = f"t_{self.label}_{uuid.uuid4().hex[:8]}"
        self.server.start()  # a test before may have left the shared server stopped
        url = self.server.create_database(name)
        self.names.append(name)
        return url

    def drop_all(self) -> None:
        """Drop every database made here (restarting a server a test left stopped)."""
        self.server.start()
        while self.names:
            self.server.drop_database(self.names.pop())
