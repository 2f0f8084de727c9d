"""Shared fixtures: real PostgreSQL (tests.support.pg), and leaks pinned on the test that made them."""

import gc
from collections.abc import Iterator

import pytest

pytest_plugins = ["tests.support.pg", "tests.support.spark"]


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect after each test so an unclosed socket or file fails the test that leaked it."""
    yield
    gc.collect()
