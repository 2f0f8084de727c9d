"""``GET /batches``: the upstream's batch API, served from the `BatchLedger`.

Semantics (the pipeline's contract):

* a JSON array of at most 100 ``{"id", "name", "created_at"}``, ordered by
  ``created_at`` then ``id``;
* ``?after=YYYY-MM-DDTHH:MM:SS.SSS`` (UTC; 1 to 6 fractional digits accepted)
  returns batches with ``created_at > after``. By default ``after`` is first
  **truncated to whole seconds**, as the upstream does, so consecutive pages
  overlap and clients must dedupe by id; ``exact_after`` compares against the
  full value instead (still only millisecond precision on the client side, so
  a batch at ``.563240`` is returned again for ``after=...563``);
* a malformed ``after`` gets ``400`` with ``{"error": ...}`` naming the
  format; other paths ``404``, other methods ``405``; always JSON.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cohortflow.contract import AFTER_FORMAT_HUMAN, BATCH_PAGE_LIMIT, format_timestamp
from cohortflow.simulator.batches import BatchLedger

_AFTER_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{1,6}")


class BadAfter(ValueError):
    """The ``after`` parameter is not ``YYYY-MM-DDTHH:MM:SS.SSS``."""


def after_bound(value: str, *, exact: bool) -> str:
    """Turn an ``after`` parameter into the ``created_at`` bound it filters on.

    Raises:
        BadAfter: ``value`` is not in the documented format.

    """
    if not _AFTER_PATTERN.fullmatch(value):
        raise BadAfter(value)
    try:
        moment = datetime.fromisoformat(value + "+00:00")
    except ValueError as exc:
        raise BadAfter(value) from exc
    return format_timestamp(moment if exact else moment.replace(microsecond=0))


class BatchApiServer(ThreadingHTTPServer):
    """A threading HTTP server that knows the ledger and the ``after`` mode."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], ledger: BatchLedger, *, exact_after: bool):
        super().__init__(address, _Handler)
        self.ledger = ledger
        self.exact_after = exact_after
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        return int(self.server_address[1])

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.1}, name="batch-api"
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: BatchApiServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body waits ~40 ms for an ACK.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/batches":
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no such path: {url.path}; try /batches"})
            return
        afters = parse_qs(url.query, keep_blank_values=True).get("after")
        raw = afters[0] if afters else None
        try:
            bound = None if raw is None else after_bound(raw, exact=self.server.exact_after)
        except BadAfter:
            error = f"invalid after {raw!r}: expected {AFTER_FORMAT_HUMAN} (UTC)"
            self._send(HTTPStatus.BAD_REQUEST, {"error": error})
            return
        page = self.server.ledger.page(bound, BATCH_PAGE_LIMIT)
        self._send(HTTPStatus.OK, [batch.as_json() for batch in page])

    def do_POST(self) -> None:
        self.close_connection = True
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "only GET /batches is served"})

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _send(self, status: HTTPStatus, body: Any) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the simulator's stderr is for its own messages."""
