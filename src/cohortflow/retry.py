"""Retrying a failing source or connection: exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Backoff:
    """Exponential backoff with full jitter for a failing source."""

    base: float = 0.25
    cap: float = 10.0
    failures: int = 0
    next_at: float = 0.0
    last_error: str | None = None
    failing_since: float = 0.0

    def ready(self, now: float) -> bool:
        """Whether the source may be tried again."""
        return now >= self.next_at

    def failed(self, now: float, error: str) -> None:
        """Record a failure and schedule the next try."""
        if not self.failures:
            self.failing_since = now
        self.failures += 1
        self.last_error = error
        self.next_at = now + random.uniform(0, min(self.cap, self.base * 2**self.failures))

    def succeeded(self) -> None:
        """Forget past failures."""
        self.failures, self.next_at, self.last_error = 0, 0.0, None
