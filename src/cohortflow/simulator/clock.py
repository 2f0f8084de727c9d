"""UTC time as integer microseconds since the epoch, and a clock that never repeats.

Integers keep history generation vectorised and exact (a float cannot hold
today's epoch in microseconds without rounding); they are rendered in the
contract's ``YYYY-MM-DD HH:MM:SS.ffffff`` form only at the edge.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from cohortflow.contract import format_timestamp, parse_timestamp

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SECOND_US = 1_000_000


def now_us() -> int:
    """Wall-clock UTC now, in microseconds since the epoch."""
    return time.time_ns() // 1000


def to_us(moment: datetime) -> int:
    """Convert an aware datetime to microseconds since the epoch (exactly)."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def from_us(micros: int) -> datetime:
    """Convert microseconds since the epoch to an aware UTC datetime."""
    return EPOCH + timedelta(microseconds=micros)


def format_us(micros: int) -> str:
    """Render as the sources store timestamps: ``YYYY-MM-DD HH:MM:SS.ffffff`` UTC."""
    return format_timestamp(from_us(micros))


def parse_us(text: str) -> int:
    """Parse a source timestamp back to microseconds."""
    return to_us(parse_timestamp(text))


def format_many(micros: NDArray[np.int64]) -> list[str]:
    """Render many timestamps at once, identical to `format_us` on each."""
    iso = np.datetime_as_string(micros.astype("datetime64[us]"), unit="us")
    return [text.replace("T", " ") for text in iso.tolist()]


class UtcClock:
    """Wall-clock UTC time that strictly increases on every tick, across threads."""

    def __init__(self, not_before_us: int = 0) -> None:
        self._last = not_before_us
        self._lock = threading.Lock()

    def tick(self) -> int:
        """Now, or one microsecond after the previous tick if the wall clock lags."""
        with self._lock:
            self._last = max(now_us(), self._last + 1)
            return self._last

    @property
    def last(self) -> int:
        """The latest instant handed out (or the floor it started from)."""
        return self._last
