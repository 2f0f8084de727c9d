"""Each source's health: ok, or failing/locked/waiting/blocked/limit since when, and why.

The engine keeps one :class:`HealthBoard`; a source that raises a transient
:class:`~cohortflow.errors.SourceError` is marked and retried with backoff
while the others flow on. Every change is logged once (and reminded every
``remind_seconds``) and written to ``pipeline_state`` for `cohortflow status`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from cohortflow.errors import SourceError
from cohortflow.retry import Backoff, StateLog

log = logging.getLogger(__name__)

SOURCES = ("test_runs", "students", "batches")


def health_key(source: str) -> str:
    """The pipeline_state key of a source's health."""
    return f"health:{source}"


@dataclass(frozen=True)
class SourceHealth:
    """What `status` shows of one source."""

    state: str = "ok"  # ok | failing | locked | waiting | blocked | limit
    since: str | None = None  # UTC ISO time the state began
    error: str | None = None
    failures: int = 0
    limit: str | None = None  # the latest upstream limit met, kept after it passed: data was lost there

    @property
    def ok(self) -> bool:
        """Whether the source reads normally."""
        return self.state == "ok"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON for pipeline_state."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> SourceHealth:
        """Rebuild from pipeline_state; unknown or missing means ok."""
        if not data or "state" not in data:
            return cls()
        fields = ("since", "error", "failures", "limit")
        return cls(str(data["state"]), **{k: data[k] for k in fields if data.get(k) is not None})

    def describe(self) -> str:
        """One line for a terminal: ``ok`` or ``locked since …: why`` (and the last limit met)."""
        if self.ok:
            return f"ok; last limit: {self.limit}" if self.limit else "ok"
        tries = f" ({self.failures}x)" if self.failures else ""
        why = self.limit if self.state == "limit" else self.error
        return f"{self.state} since {self.since}{tries}: {why}"


@dataclass
class _Tracked:
    states: StateLog
    health: SourceHealth = field(default_factory=SourceHealth)
    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.25, cap=10.0))


class HealthBoard:
    """The live health of every source, their retry schedules, and what changed since saved."""

    def __init__(self, remind_seconds: float = 60.0) -> None:
        self.remind_seconds = remind_seconds
        self._tracked = {source: _Tracked(StateLog(log, remind_seconds)) for source in SOURCES}
        self._dirty: set[str] = set()

    def __getitem__(self, source: str) -> SourceHealth:
        return self._tracked[source].health

    def adopt(self, source: str, backoff: Backoff) -> None:
        """Follow a retry schedule kept elsewhere (the batch poller's own thread)."""
        self._tracked[source].backoff = backoff

    def ready(self, source: str) -> bool:
        """Whether a failing source's next retry is due (always true for a healthy one)."""
        return self._tracked[source].backoff.ready(time.monotonic())

    def failing_for(self, source: str) -> float:
        """Seconds since the source stopped reading normally (0 when ok)."""
        backoff = self._tracked[source].backoff
        return time.monotonic() - backoff.failing_since if backoff.failures else 0.0

    def failed(self, source: str, exc: SourceError) -> None:
        """Record a failed read: set the state, schedule the retry, log on change or as a reminder."""
        tracked = self._tracked[source]
        tracked.backoff.failed(time.monotonic(), str(exc), getattr(exc, "retry_after", 0.0))
        self.set(source, exc.health, str(exc))
        tracked.states.report(exc.health, f"{source}: {exc} (retrying with backoff)")

    def succeeded(self, source: str) -> None:
        """Record a normal read."""
        tracked = self._tracked[source]
        if tracked.backoff.failures:
            tracked.backoff.succeeded()
        if not tracked.health.ok:
            tracked.states.report(None, f"{source} reads normally again")
            self.set(source, "ok", None)

    def put(self, source: str, health: SourceHealth) -> None:
        """Take a health kept elsewhere (the batch poller's thread keeps its own)."""
        if health != self._tracked[source].health:
            self._tracked[source].health = health
            self._dirty.add(source)

    def set(self, source: str, state: str, error: str | None) -> None:
        """Change a source's state (the since-time moves only when the state does)."""
        tracked = self._tracked[source]
        old = tracked.health
        if (old.state, old.error) == (state, error):
            return
        since = old.since if old.state == state else datetime.now(UTC).isoformat(timespec="seconds")
        tracked.health = SourceHealth(state, None if state == "ok" else since, error)
        self._dirty.add(source)

    def take_changes(self) -> dict[str, SourceHealth]:
        """The healths changed since the last call (to write to pipeline_state)."""
        changed = {source: self._tracked[source].health for source in sorted(self._dirty)}
        self._dirty.clear()
        return changed
