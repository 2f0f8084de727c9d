"""The dashboard's web app (Starlette): pages, JSON/CSV exports, live events, metrics, health.

Pages are Jinja2 templates with autoescape on; data reaches scripts only as
``tojson`` inside ``<script type="application/json">``; scripts and the
charting library (plotly.js, from the installed ``plotly`` package) are
served from here, never from a CDN.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cohortflow.config import PipelineConfig
from cohortflow.dashboard import metrics, queries
from cohortflow.dashboard.live import CommitWatcher, view_stream
from cohortflow.dashboard.queries import LeaderboardQuery
from cohortflow.dashboard.reader import Reader
from cohortflow.errors import WarehouseError
from cohortflow.output import csv_text
from cohortflow.report import pipeline_status

SECURITY_HEADERS = {
    # Plotly sets inline styles on its SVG; no inline or foreign script may run.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
REJECTS_SHOWN = 100


def plotly_js() -> Path:
    """plotly.min.js as shipped inside the installed ``plotly`` package."""
    spec = importlib.util.find_spec("plotly")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"


class Dashboard:
    """The app's state (reader, watcher, templates) and its endpoints."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.reader = Reader(config.warehouse)
        self.watcher = CommitWatcher(self.reader)
        self.env = Environment(
            loader=PackageLoader("cohortflow.dashboard", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Close pooled connections when the server stops."""
        yield
        self.watcher.close()
        self.reader.close()

    def page(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        """Render a template with the shared context."""
        html = self.env.get_template(name).render(warehouse=self.reader.display, **context)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    # Pages (sync: Starlette runs them in its thread pool, away from the event loop).

    def leaderboard_page(self, request: Request) -> Response:
        """The ranked batches: chart, table, filters; updated live."""
        query = LeaderboardQuery.from_params(request.query_params)
        view = self._leaderboard_view(query)
        context: dict[str, Any] = {"query": query, "tracks": queries.TRACKS, "view": view}
        return self.page("leaderboard.html", active="leaderboard", **context)

    def _leaderboard_view(self, query: LeaderboardQuery) -> dict[str, Any]:
        with self.reader.snapshot() as warehouse:
            return {"rows": queries.leaderboard(warehouse, query), "totals": queries.totals(warehouse)}

    def batch_page(self, request: Request) -> Response:
        """One batch: its figures and its students, sortable."""
        batch_id = request.path_params["batch_id"]
        sort, descending = _sorting(request)
        with self.reader.snapshot() as warehouse:
            batch = queries.batch(warehouse, batch_id)
            students = queries.students(warehouse, batch_id, sort, descending)
        if batch is None:
            return self.page("error.html", 404, message=f"there is no batch {batch_id}")
        return self.page("batch.html", batch=batch, students=students, sort=sort, descending=descending)

    def sources_page(self, request: Request) -> Response:
        """Cursor, lag, freshness and health per source: the same truth as `cohortflow status`."""
        return self.page("sources.html", active="sources", **self._sources())

    def _sources(self) -> dict[str, Any]:
        # Autocommit, no snapshot: the lag probes talk to the sources and must not hold a transaction.
        with self.reader.connection() as warehouse:
            status = pipeline_status(warehouse, self.config)
            times = queries.state_times(warehouse)
            last_commit = queries.version(warehouse)[0]
        return {
            "sources": status["sources"],
            "quarantine": status["quarantine"],
            "times": times,
            "last_commit": last_commit,
        }

    def quarantine_page(self, request: Request) -> Response:
        """Counts by reason and the latest rejected records, filterable by reason."""
        reason = request.query_params.get("reason", "")
        with self.reader.snapshot() as warehouse:
            counts = queries.quarantine_counts(warehouse)
            rejects = queries.latest_rejects(warehouse, reason, REJECTS_SHOWN)
        context: dict[str, Any] = {"counts": counts, "rejects": rejects, "reason": reason}
        return self.page("quarantine.html", active="quarantine", **context)

    # Machine endpoints.

    def api(self, request: Request) -> Response:
        """``/api/<table>``: JSON by default, CSV with ``?format=csv`` (the page's download links)."""
        name = request.path_params["table"]
        read = self._tables().get(name)
        if read is None:
            return JSONResponse({"error": f"no table {name!r}", "tables": sorted(self._tables())}, 404)
        rows = read(request)
        return table_response(rows, request.query_params.get("format", "json"), name)

    def api_students(self, request: Request) -> Response:
        """``/api/batches/<id>/students``: one batch's students."""
        batch_id = request.path_params["batch_id"]
        sort, descending = _sorting(request)
        with self.reader.snapshot() as warehouse:
            rows = queries.students(warehouse, batch_id, sort, descending)
        return table_response(rows, request.query_params.get("format", "json"), f"batch-{batch_id}-students")

    def _tables(self) -> dict[str, Callable[[Request], list[dict[str, Any]]]]:
        return {
            "leaderboard": lambda r: self._snapshot(
                lambda w: queries.leaderboard(w, LeaderboardQuery.from_params(r.query_params))
            ),
            "sources": lambda r: self._sources()["sources"],
            "quarantine": lambda r: self._snapshot(queries.quarantine_counts),
            "rejects": lambda r: self._snapshot(
                lambda w: queries.latest_rejects(w, r.query_params.get("reason", ""), REJECTS_SHOWN)
            ),
        }

    def _snapshot(self, read: Callable[[Any], list[dict[str, Any]]]) -> list[dict[str, Any]]:
        with self.reader.snapshot() as warehouse:
            return read(warehouse)

    async def events(self, request: Request) -> Response:
        """Server-sent events of the leaderboard view the page shows, pushed after each commit."""
        query = LeaderboardQuery.from_params(request.query_params)
        stream = view_stream(self.watcher, lambda: json.dumps(self._leaderboard_view(query), default=str))
        return EventSourceResponse(stream, ping=15, headers={"Cache-Control": "no-store"})

    def prometheus(self, request: Request) -> Response:
        """``/metrics`` in the Prometheus text format."""
        with self.reader.snapshot() as warehouse:
            figures = metrics.read_figures(warehouse)
        metrics.measure_lag(figures, self.config)
        return Response(metrics.render(figures), media_type="text/plain; version=0.0.4; charset=utf-8")

    def healthz(self, request: Request) -> Response:
        """200 when the warehouse answers, 503 otherwise."""
        try:
            with self.reader.connection() as warehouse:
                last_commit = queries.version(warehouse)[0]
        except WarehouseError as exc:
            return JSONResponse({"ok": False, "error": str(exc)}, 503)
        return JSONResponse({"ok": True, "warehouse": self.reader.display, "last_commit": last_commit})

    async def vendor_plotly(self, request: Request) -> Response:
        """The charting library, from its Python package."""
        return FileResponse(plotly_js(), headers={"Cache-Control": "public, max-age=86400"})

    async def warehouse_error(self, request: Request, exc: Exception) -> Response:
        """A warehouse that is missing or unreadable: 503 with the reason, as a page or JSON."""
        if request.url.path.startswith(("/api/", "/metrics")):
            return JSONResponse({"error": str(exc)}, 503)
        message = await run_in_threadpool(str, exc)
        return self.page("error.html", 503, message=f"waiting for the warehouse: {message}")


def _sorting(request: Request) -> tuple[str, bool]:
    sort = request.query_params.get("sort", "lessons_completed")
    return (sort if sort in queries.STUDENT_COLUMNS else "lessons_completed"), request.query_params.get(
        "order", "desc"
    ) != "asc"


def table_response(rows: list[dict[str, Any]], fmt: str, name: str) -> Response:
    """Rows as JSON, or as a CSV download (cells guarded as `report` guards them)."""
    if fmt != "csv":
        return JSONResponse(rows)
    return Response(
        csv_text(rows, list(rows[0])) if rows else "",
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


def create_app(config: PipelineConfig) -> Starlette:
    """The dashboard as an ASGI app over ``config.warehouse``."""
    board = Dashboard(config)
    routes = [
        Route("/", board.leaderboard_page),
        Route("/batches/{batch_id:int}", board.batch_page),
        Route("/sources", board.sources_page),
        Route("/quarantine", board.quarantine_page),
        Route("/api/batches/{batch_id:int}/students", board.api_students),
        Route("/api/{table}", board.api),
        Route("/events/leaderboard", board.events),
        Route("/metrics", board.prometheus),
        Route("/healthz", board.healthz),
        Route("/vendor/plotly.min.js", board.vendor_plotly),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Mount("/static", StaticFiles(packages=[("cohortflow.dashboard", "static")]), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(GZipMiddleware, minimum_size=1024)],
        exception_handlers={WarehouseError: board.warehouse_error},
        lifespan=board.lifespan,
    )
    app.state.dashboard = board
    return app
