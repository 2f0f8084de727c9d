"""pytest fixtures for a real PostgreSQL: one throwaway server per session, a database per test.

Register once in ``tests/conftest.py``::

    pytest_plugins = ["tests.support.pg"]

Fixtures: ``pg_server`` (session, a running `ThrowawayPostgres`), ``pg_database``
(a factory of fresh databases, dropped after the test) and ``pg_url`` (the URL of
one fresh database). Tests using them are marked ``postgres`` automatically. When
the PostgreSQL binaries are absent they skip, except in CI where they fail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from cohortflow.testing.pgserver import ThrowawayPostgres
from tests.support import FreshDatabases, new_server

_PG_FIXTURES = frozenset({"pg_server", "pg_database", "pg_url"})


@pytest.fixture(scope="session")
def pg_server() -> Iterator[ThrowawayPostgres]:
    """Return the session's throwaway PostgreSQL; tests may stop or restart it."""
    with new_server() as server:
        yield server


@pytest.fixture
def pg_database(
    pg_server: ThrowawayPostgres,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[[], str]]:
    """Return a factory: each call creates a fresh empty database and returns its URL."""
    databases = FreshDatabases(pg_server, request.node.name)
    yield databases.new
    databases.drop_all()


@pytest.fixture
def pg_url(pg_database: Callable[[], str]) -> str:
    """Return the URL of a fresh empty database, dropped after the test."""
    return pg_database()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a PostgreSQL fixture with ``postgres``."""
    for item in items:
        if _PG_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)
