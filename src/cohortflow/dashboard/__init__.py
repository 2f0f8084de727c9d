"""``cohortflow dashboard``: the analyst's live web app over the warehouse.

Its web dependencies live behind the ``[dashboard]`` extra and are imported
only here, when the command runs.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
from dataclasses import dataclass

from cohortflow.config import PipelineConfig
from cohortflow.errors import ConfigError

log = logging.getLogger(__name__)
EXTRA = "pip install 'cohortflow[dashboard]'"
DEFAULT_PORT = 8050


@dataclass(frozen=True)
class ServeOptions:
    """Where the dashboard listens."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT


def has_extra() -> bool:
    """Whether the ``[dashboard]`` extra's packages are installed."""
    return all(importlib.util.find_spec(name) for name in ("starlette", "uvicorn", "jinja2", "plotly"))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(config: PipelineConfig, options: ServeOptions) -> None:
    """Serve the dashboard until SIGINT/SIGTERM."""
    try:
        import uvicorn

        from cohortflow.dashboard.app import create_app
    except ImportError as exc:
        msg = f"the dashboard needs its extra ({exc.name} is missing): {EXTRA}"
        raise ConfigError(msg) from exc
    if not _is_loopback(options.host):
        log.warning(
            "serving on %s: anyone who can reach this machine can read the warehouse (no login)",
            options.host,
        )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host=options.host,
            port=options.port,
            log_level="warning",
            timeout_graceful_shutdown=2,
        )
    )
    log.info("dashboard on http://%s:%d/ (warehouse %s)", options.host, options.port, config.warehouse)
    server.run()
