"""The batch API's HTTP boundary: a URL we can use, and a response turned into a page or an error.

Outside failures become our errors here, by kind: a URL that can never work
is a :class:`ConfigError` (fail at once); 429/5xx, a refused connection, a
body that is not a JSON array are :class:`SourceUnavailable` (retry with
backoff), and a ``Retry-After`` the upstream sent is carried along in
:class:`SourceThrottled`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from cohortflow.errors import ConfigError, SourceError, SourceThrottled, SourceUnavailable

RETRY_AFTER_CAP = 600.0  # seconds: an upstream asking for more is still retried after ten minutes


def validate_url(url: str) -> str:
    """Return ``url`` if it can reach an HTTP API, else raise :class:`ConfigError` (one line).

    Called when the pipeline starts, so a typo fails at once instead of being retried
    like an outage.
    """
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        msg = f"--batches-url `{url}` is not a valid URL ({exc})"
        raise ConfigError(msg) from exc
    if not url.strip():
        msg = "--batches-url is empty: give the batch API's URL, e.g. http://localhost:8000/batches"
        raise ConfigError(msg)
    if parts.scheme not in ("http", "https"):
        msg = f"--batches-url `{url}` does not start with http:// or https:// (e.g. http://localhost:8000/batches)"
        raise ConfigError(msg)
    if not parts.hostname:
        msg = f"--batches-url `{url}` has no host: expected e.g. http://localhost:8000/batches"
        raise ConfigError(msg)
    return url


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), capped."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), RETRY_AFTER_CAP)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def decode_page(url: str, response: httpx.Response) -> list[Any]:
    """The JSON array of a 200 answer; any other answer as the error it means."""
    status = response.status_code
    if status in (429, 503):
        wait = retry_after(response.headers.get("retry-after"))
        msg = f"batch API `{url}` answered {status}"
        if wait is not None:
            msg += f" (Retry-After {wait:.0f} s)"
            raise SourceThrottled(msg, wait)
        raise SourceUnavailable(msg)
    if status >= 500:
        msg = f"batch API `{url}` answered {status}"
        raise SourceUnavailable(msg)
    if status != 200:
        msg = f"batch API `{url}` answered {status}: {response.text[:200]}"
        raise SourceError(msg)
    try:
        body = response.json()
    except ValueError as exc:
        msg = f"batch API `{url}` answered something that is not JSON: {response.text[:200]!r}"
        raise SourceUnavailable(msg) from exc
    if not isinstance(body, list):
        msg = f"batch API `{url}` answered a JSON {type(body).__name__}, expected an array"
        raise SourceUnavailable(msg)
    return body


def get_page(client: httpx.Client, url: str, params: dict[str, str]) -> list[Any]:
    """GET one page; transport failures are transient, an unusable URL is a configuration error."""
    try:
        response = client.get(url, params=params)
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        msg = f"--batches-url `{url}` cannot be requested: {exc}"
        raise ConfigError(msg) from exc
    except httpx.HTTPError as exc:
        msg = f"batch API `{url}` is unreachable: {exc.__class__.__name__}: {exc}"
        raise SourceUnavailable(msg) from exc
    return decode_page(url, response)
