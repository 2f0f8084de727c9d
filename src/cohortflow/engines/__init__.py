"""Engines that run the pipeline, chosen by name from :data:`ENGINES`.

Heavy engines (Spark) are imported only when chosen.
"""

from __future__ import annotations

import importlib
import threading
from typing import Protocol

from cohortflow.config import PipelineConfig
from cohortflow.errors import ConfigError
from cohortflow.state import OnCommit, TickStats

ENGINES: dict[str, str] = {
    "embedded": "cohortflow.engines.embedded:EmbeddedEngine",
    "spark": "cohortflow.engines.spark:SparkEngine",
}
EXTRAS: dict[str, str] = {"spark": "pip install 'cohortflow[spark]'"}


class Engine(Protocol):
    """What the CLI needs of an engine."""

    def run(self, stop: threading.Event | None = None) -> TickStats:
        """Run until caught up (``once``) or ``stop`` is set; return the totals."""


def make_engine(name: str, config: PipelineConfig, on_commit: OnCommit | None = None) -> Engine:
    """Build the engine registered as ``name``; ``on_commit`` observes each commit."""
    module_name, _, class_name = ENGINES[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        msg = f"the {name} engine needs an extra that is not installed: {EXTRAS.get(name, exc)}"
        raise ConfigError(msg) from exc
    engine: Engine = getattr(module, class_name)(config, on_commit=on_commit)
    return engine
