"""Engines that run the pipeline, chosen by name from :data:`ENGINES`.

Heavy engines (Spark) are imported only when chosen.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from cohortflow.config import PipelineConfig
from cohortflow.errors import ConfigError

ENGINES: dict[str, str] = {
    "embedded": "cohortflow.engines.embedded:EmbeddedEngine",
    "spark": "cohortflow.engines.spark:SparkEngine",
}
EXTRAS: dict[str, str] = {"spark": "pip install 'cohortflow[spark]'"}


class Engine(Protocol):
    """What the CLI needs of an engine."""

    def run(self, stop: Any = None) -> Any:
        """Run until caught up (``once``) or stopped; return totals."""


def make_engine(name: str, config: PipelineConfig, progress: bool = False) -> Engine:
    """Build the engine registered as ``name``."""
    module_name, _, class_name = ENGINES[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        msg = f"the {name} engine needs an extra that is not installed: {EXTRAS.get(name, exc)}"
        raise ConfigError(msg) from exc
    engine: Engine = getattr(module, class_name).build(config, progress=progress)
    return engine
