"""The one exception hierarchy of cohortflow.

    CohortflowError
    ├── ConfigError          bad option or environment value (terminal)
    ├── SourceError          a source cannot be read as the contract says
    │   ├── SourceUnavailable    transient: retry with backoff
    │   └── SourceReset          the source went back in time (terminal unless --on-reset restart)
    ├── WarehouseError       the warehouse refused a statement or is unreachable
    │   ├── WarehouseUnavailable transient: reconnect with backoff
    │   └── WarehouseLocked      another pipeline holds the warehouse (terminal)
    └── EngineError          an engine (e.g. Spark) failed

Messages say what, where and how to fix it. Outside exceptions are wrapped at
the boundary with ``raise ... from exc``.
"""


class CohortflowError(Exception):
    """Base of every error cohortflow raises on purpose."""

    transient = False


class ConfigError(CohortflowError):
    """An option or environment variable has a value we cannot use."""


class SourceError(CohortflowError):
    """A source cannot be read as the data contract says."""


class SourceUnavailable(SourceError):
    """A source is down for now; retrying later may succeed."""

    transient = True


class SourceReset(SourceError):
    """A source went back in time (file truncated or replaced, rows vanished)."""


class WarehouseError(CohortflowError):
    """The warehouse refused a statement."""


class WarehouseUnavailable(WarehouseError):
    """The warehouse connection was lost; reconnecting may succeed."""

    transient = True


class WarehouseLocked(WarehouseError):
    """Another pipeline already writes to this warehouse."""


class EngineError(CohortflowError):
    """An engine failed to run the pipeline."""
