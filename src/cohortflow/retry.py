"""Retrying a failing source or connection: exponential backoff with full jitter, logged sparingly."""

from __future__ import annotations

import logging
import random
import time
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

    def failed(self, now: float, error: str, not_before: float = 0.0) -> None:
        """Record a failure and schedule the next try (no sooner than ``not_before`` seconds)."""
        if not self.failures:
            self.failing_since = now
        self.failures += 1
        self.last_error = error
        jitter = random.uniform(0, min(self.cap, self.base * 2**self.failures))
        self.next_at = now + max(jitter, not_before)

    def succeeded(self) -> None:
        """Forget past failures."""
        self.failures, self.next_at, self.last_error = 0, 0.0, None


class StateLog:
    """Log a repeated condition once per change of state, plus a reminder while it lasts.

    ``report(state, message)`` with the same ``state`` again logs nothing until
    ``remind_every`` seconds passed; ``report(None)`` logs the recovery once.
    """

    def __init__(self, logger: logging.Logger, remind_every: float = 60.0) -> None:
        self.logger = logger
        self.remind_every = remind_every
        self.state: str | None = None
        self._logged_at = 0.0

    def report(self, state: str | None, message: str = "", now: float | None = None) -> None:
        """Note the current state; log only when it changed or a reminder is due."""
        now = time.monotonic() if now is None else now
        if state == self.state and (state is None or now - self._logged_at < self.remind_every):
            return
        if state is None:
            self.logger.warning("recovered: %s", message or "back to normal")
        elif state == self.state:
            self.logger.warning("still %s: %s", state, message)
        else:
            self.logger.warning("%s", message)
        self.state, self._logged_at = state, now
