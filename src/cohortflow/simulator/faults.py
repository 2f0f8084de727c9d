"""A fault-injecting HTTP proxy in front of the batch API: an upstream that behaves like real software.

``cohortflow api-faults --upstream http://127.0.0.1:8000 --faults all=0.05`` listens on
its own port and forwards ``GET /batches`` to the simulator's API, but answers
a share of requests with a fault, drawn from a seeded RNG:

* ``5xx``: 500, 502 or 503 (no ``Retry-After``);
* ``429``: 429 with ``Retry-After``, as seconds or as an HTTP date (alternately);
* ``hang``: no answer for ``--hang-seconds``, then the connection is dropped;
* ``reset``: the connection is reset (TCP RST) without an answer;
* ``garbage``: 200 with a body that is not a JSON array (HTML, an object, cut JSON);
* ``stale``: the previous answer served for the same URL (an older version of the page);
* ``backwards``: the first page (no ``after``), whatever was asked;
* ``broken``: the last record of the page not broken before, but never the page's very
  last one, is malformed (a record a cursor moves past): each batch id at most once.

``GET /_faults`` returns the counts so far; ``POST /_faults`` with
``{"calm": true}`` stops injecting (``false`` starts again) and
``{"hide": [ids]}`` leaves those batches out of every page (a batch the API no
longer serves). ``--calm-after S`` calms down by itself after S seconds.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import struct
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

KINDS = ("5xx", "429", "hang", "reset", "garbage", "stale", "backwards", "broken")
READY_PREFIX = "cohortflow-faults ready port="
_GARBAGE = (b"<html><body>502 Bad Gateway</body></html>", b'{"error": "try later"}', b'[{"id": 1, "na')


@dataclass(frozen=True)
class FaultPlan:
    """How often each fault kind is injected (a share of requests each)."""

    rates: dict[str, float] = field(default_factory=dict)
    hang_seconds: float = 6.0

    @classmethod
    def parse(cls, spec: str, hang_seconds: float = 6.0) -> FaultPlan:
        """``"5xx=0.1,429=0.05"``; ``all=R`` sets every kind. Raises ValueError naming the valid kinds."""
        rates: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            kind, _, value = part.partition("=")
            kinds = KINDS if kind == "all" else (kind,)
            if not set(kinds) <= set(KINDS) or not value:
                msg = f"unknown fault `{part}`: expected KIND=RATE with KIND one of all, {', '.join(KINDS)}"
                raise ValueError(msg)
            rates.update(dict.fromkeys(kinds, float(value)))
        if sum(rates.values()) > 1 or min(rates.values(), default=0) < 0:
            msg = f"fault rates must be >= 0 and add up to at most 1, got {spec!r}"
            raise ValueError(msg)
        return cls(rates, hang_seconds)


class FaultProxy(ThreadingHTTPServer):
    """The proxy's state: the plan, the RNG, what it served, and what it injected."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], upstream: str, plan: FaultPlan, seed: int) -> None:
        super().__init__(address, _Handler)
        self.upstream = upstream.rstrip("/")
        self.plan = plan
        self.calm = threading.Event()
        self.hidden: set[int] = set()
        self.counts: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._served: dict[str, bytes] = {}
        self._broken: set[int] = set()
        self.client = httpx.Client(timeout=10)

    @property
    def port(self) -> int:
        """The port actually bound."""
        return int(self.server_address[1])

    def draw(self) -> str | None:
        """The fault for the next request, if any (none once calm)."""
        with self._lock:
            self.counts["requests"] += 1
            if self.calm.is_set():
                return None
            roll = self._rng.random()
            for kind, rate in self.plan.rates.items():
                if roll < rate:
                    self.counts[kind] += 1
                    return kind
                roll -= rate
        return None

    def forward(self, path: str, fault: str | None) -> tuple[int, bytes]:
        """The upstream's answer to ``path``, altered by a page fault."""
        asked = "/batches" if fault == "backwards" else path
        response = self.client.get(f"{self.upstream}{asked}")
        body = response.content
        if response.status_code != 200:
            return response.status_code, body
        with self._lock:
            previous, self._served[path] = self._served.get(path), body
            records = [r for r in json.loads(body) if r.get("id") not in self.hidden]
            if fault == "broken":
                self._break_one(records)
        if fault == "stale" and previous is not None:
            return 200, previous
        return 200, json.dumps(records).encode()

    def _break_one(self, records: list[dict[str, Any]]) -> None:
        # The next-to-last record: a reader's cursor moves past it on the last one.
        candidates = [i for i, r in enumerate(records[:-1]) if r.get("id") not in self._broken]
        if not candidates:
            return
        at = candidates[-1]
        self._broken.add(records[at]["id"])
        how = self._rng.randrange(3)
        if how == 0:
            records[at] = {**records[at], "name": None}
        elif how == 1:
            records[at] = {**records[at], "created_at": "not a time"}
        else:
            records[at] = {**records[at], "id": str(records[at]["id"]) + "x"}


class _Handler(BaseHTTPRequestHandler):
    server: FaultProxy
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        if self.path.startswith("/_faults"):
            self._send(HTTPStatus.OK, json.dumps(dict(self.server.counts)).encode())
            return
        fault = self.server.draw()
        if fault in ("hang", "reset"):
            self._drop(self.server.plan.hang_seconds if fault == "hang" else 0.0)
        elif fault == "5xx":
            self._send(random.choice((500, 502, 503)), b'{"error": "injected"}')
        elif fault == "429":
            self._send(429, b'{"error": "slow down"}', retry_after=self._retry_after())
        elif fault == "garbage":
            self._send(HTTPStatus.OK, random.choice(_GARBAGE))
        else:
            try:
                status, body = self.server.forward(self.path, fault)
            except httpx.HTTPError:
                status, body = HTTPStatus.BAD_GATEWAY, b'{"error": "upstream unreachable"}'
            self._send(status, body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        command = json.loads(self.rfile.read(length) or b"{}")
        if "calm" in command:
            (self.server.calm.set if command["calm"] else self.server.calm.clear)()
        if "hide" in command:
            self.server.hidden = {int(i) for i in command["hide"]}
        self._send(HTTPStatus.OK, json.dumps(dict(self.server.counts)).encode())

    def _retry_after(self) -> str:
        if self.server.counts["429"] % 2:
            return "1"
        return formatdate(time.time() + 2, usegmt=True)

    def _drop(self, after: float) -> None:
        time.sleep(after)
        # Linger 0: close() sends a TCP RST instead of a clean FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def _send(self, status: int, payload: bytes, retry_after: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: stderr is for the proxy's own summary."""


def serve(
    upstream: str, address: tuple[str, int], plan: FaultPlan, seed: int, calm_after: float | None
) -> None:
    """Run the proxy until SIGINT/SIGTERM: ready line on stdout, counts on stderr at the end."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    proxy = FaultProxy(address, upstream, plan, seed)
    thread = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    print(f"{READY_PREFIX}{proxy.port}", flush=True)
    if calm_after is not None and not stop.wait(calm_after):
        proxy.calm.set()
    stop.wait()
    proxy.shutdown()
    proxy.server_close()
    proxy.client.close()
    counts = " ".join(f"{kind}={proxy.counts[kind]}" for kind in ("requests", *KINDS))
    print(f"cohortflow-faults stopped {counts}", file=sys.stderr, flush=True)
