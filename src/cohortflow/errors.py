"""The one exception hierarchy of cohortflow.

    CohortflowError
    ├── ConfigError          bad option, path, URL or environment value (terminal, fail at once)
    ├── SourceError          a source cannot be read as the contract says
    │   ├── SourceUnavailable    transient: retry with backoff (down, failing)
    │   │   ├── SourceLocked         the upstream writer holds a lock past our busy timeout
    │   │   ├── SourceMissing        the file is not there (yet): follow mode waits, --once fails
    │   │   ├── SourceThrottled      the upstream said when to come back (HTTP Retry-After)
    │   │   └── SourceBlocked        cannot be read until someone acts (e.g. read-only media)
    │   ├── SourceLimit          the upstream cannot serve part of the contract (reported, not raised)
    │   └── SourceReset          the source really started over (terminal unless --on-reset restart)
    ├── WarehouseError       the warehouse refused a statement
    │   ├── WarehouseUnavailable transient: reconnect with backoff
    │   ├── WarehouseLocked      another pipeline holds the warehouse (terminal)
    │   └── WarehouseGone        the warehouse file was deleted or replaced under us (terminal)
    └── EngineError          an engine (e.g. Spark) failed

Each class carries its own ``hint`` (how to fix it, written once), whether it
is ``transient``, and for source errors the ``health`` a source is in while it
raises them; callers decide by type, never by message text. Outside
exceptions are wrapped at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations


class CohortflowError(Exception):
    """Base of every error cohortflow raises on purpose.

    ``str(error)`` is the message followed by the class's hint, if any.
    """

    transient = False
    hint = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class ConfigError(CohortflowError):
    """An option, path, URL or environment variable has a value we cannot use."""


class SourceError(CohortflowError):
    """A source cannot be read as the data contract says."""

    health = "failing"


class SourceUnavailable(SourceError):
    """A source is down for now; retrying later may succeed."""

    transient = True


class SourceLocked(SourceUnavailable):
    """The upstream writer holds its database lock longer than our busy timeout."""

    health = "locked"


class SourceMissing(SourceUnavailable):
    """A source file is not there (yet); follow mode waits for it, ``--once`` fails."""

    health = "waiting"


class SourceThrottled(SourceUnavailable):
    """The upstream asked us to wait ``retry_after`` seconds (HTTP 429/503 with Retry-After)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SourceBlocked(SourceUnavailable):
    """A source cannot be read until someone acts (the hint says what); retried slowly."""

    health = "blocked"


class SourceLimit(SourceError):
    """The upstream cannot serve part of what the contract needs (e.g. >100 batches in one second).

    Reported (log and ``status``) while the source goes on with what it can read.
    """

    health = "limit"


class SourceReset(SourceError):
    """A source really started over (log replaced, student ids restarted)."""

    hint = "rebuild the warehouse from the current sources with `cohortflow run --on-reset restart`"

    def __init__(self, source: str, what: str) -> None:
        super().__init__(f"`{source}` was reset: {what}")
        self.source = source


class WarehouseError(CohortflowError):
    """The warehouse refused a statement."""


class WarehouseUnavailable(WarehouseError):
    """The warehouse connection was lost; reconnecting may succeed."""

    transient = True


class WarehouseLocked(WarehouseError):
    """Another pipeline already writes to this warehouse."""

    hint = "stop it first, or use another --warehouse"


class WarehouseGone(WarehouseError):
    """The warehouse file was deleted or replaced while we wrote to it."""

    hint = "restart the pipeline to create or reopen it (nothing was written into the old file)"


class EngineError(CohortflowError):
    """An engine failed to run the pipeline."""
