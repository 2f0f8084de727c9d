"""Await a condition instead of sleeping: ``wait_until(lambda: ..., timeout=60, what="...")``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    timeout: float = 60.0,
    what: str = "the condition",
    ignore: tuple[type[BaseException], ...] = (),
    interval: float = 0.1,
) -> T:
    """Poll ``condition`` until it returns something truthy and return that; fail after ``timeout``.

    Exceptions of the ``ignore`` types count as "not yet" (e.g. a warehouse without its schema).
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
            last = None
        except ignore as exc:
            last = exc
        if time.monotonic() > deadline:
            msg = f"{what} not reached in {timeout:.0f} s (last error: {last})"
            raise AssertionError(msg)
        time.sleep(interval)
