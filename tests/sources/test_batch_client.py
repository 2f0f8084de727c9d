"""The batch API client, fast and exact with ``httpx.MockTransport``: answers, limits, rewinds."""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from cohortflow.errors import ConfigError, SourceError, SourceThrottled, SourceUnavailable
from cohortflow.health import SourceHealth
from cohortflow.sources.batch_http import retry_after, validate_url
from cohortflow.sources.batches import BatchApi, BatchesCursor, BatchesRead
from cohortflow.sources.prefetch import QUIET_POLLS, BatchPrefetcher
from tests.support.wait import wait_until

URL = "http://api.test/batches"
Handler = Callable[[httpx.Request], httpx.Response]


def stamp(second: int, micros: int = 0) -> str:
    """A created_at ``second`` seconds after a fixed origin."""
    moment = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=second, microseconds=micros)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


class FakeApi:
    """The upstream's semantics in a few lines: ordered, 100 a page, ``after`` cut to the second."""

    def __init__(self, batches: list[dict[str, object]]) -> None:
        self.batches = batches
        self.requests: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("after")
        self.requests.append(after)
        bound = "" if after is None else after.replace("T", " ")[:19] + ".000000"
        page = [b for b in self.batches if str(b["created_at"]) > bound][:100]
        return httpx.Response(200, json=page)


def batches(seconds: list[int]) -> list[dict[str, object]]:
    """One batch per entry, at that second (micro-spaced within a second), ids 1..n."""
    out: list[dict[str, object]] = []
    for i, second in enumerate(seconds, start=1):
        out.append({"id": i, "name": f"web-{i}", "created_at": stamp(second, i)})
    return out


def api_of(handler: Handler) -> BatchApi:
    return BatchApi(URL, client=httpx.Client(transport=httpx.MockTransport(handler)))


def answer(status: int, body: bytes = b"[]", **headers: str) -> BatchApi:
    return api_of(lambda _: httpx.Response(status, content=body, headers=headers))


@pytest.mark.parametrize("status", [500, 502, 504])
def test_5xx_is_transient(status: int) -> None:
    with pytest.raises(SourceUnavailable, match=str(status)) as caught:
        answer(status).read(BatchesCursor())
    assert not isinstance(caught.value, SourceThrottled)


def test_429_with_retry_after_seconds_is_throttled() -> None:
    with pytest.raises(SourceThrottled) as caught:
        answer(429, **{"Retry-After": "7"}).read(BatchesCursor())
    assert caught.value.retry_after == 7.0


def test_503_with_retry_after_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    with pytest.raises(SourceThrottled) as caught:
        answer(503, **{"Retry-After": format_datetime(when, usegmt=True)}).read(BatchesCursor())
    assert 25 <= caught.value.retry_after <= 30


def test_429_without_retry_after_is_plain_transient() -> None:
    with pytest.raises(SourceUnavailable) as caught:
        answer(429).read(BatchesCursor())
    assert not isinstance(caught.value, SourceThrottled)


def test_retry_after_forms() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after("120", now) == 120.0
    assert retry_after("Thu, 01 Jan 2026 00:00:09 GMT", now) == 9.0
    assert retry_after("Wed, 31 Dec 2025 00:00:00 GMT", now) == 0.0  # in the past: at once
    assert retry_after("99999", now) == 600.0  # capped
    assert retry_after("soon", now) is None
    assert retry_after(None, now) is None


def test_other_4xx_is_an_error_with_the_body() -> None:
    with pytest.raises(SourceError, match="404: nope") as caught:
        answer(404, b"nope").read(BatchesCursor())
    assert not isinstance(caught.value, SourceUnavailable)


@pytest.mark.parametrize(
    ("body", "what"), [(b"<html>oops", "not JSON"), (b'{"batches": []}', "dict, expected an array")]
)
def test_garbage_bodies_are_transient(body: bytes, what: str) -> None:
    with pytest.raises(SourceUnavailable, match=what):
        answer(200, body).read(BatchesCursor())


@pytest.mark.parametrize(
    "url", ["", "   ", "localhost:8000/batches", "ftp://example.com/batches", "http://", "http://h:port/x"]
)
def test_unusable_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="batches-url"):
        validate_url(url)
    with pytest.raises(ConfigError):
        BatchApi(url)


def test_usable_urls_pass() -> None:
    for url in ("http://localhost:8000/batches", "https://api.example.com/v1/batches?x=1"):
        assert validate_url(url) == url


def test_pages_overlap_and_are_deduplicated() -> None:
    fake = FakeApi(batches([s // 10 for s in range(250)]))  # 10 batches a second
    read = api_of(fake).read(BatchesCursor())
    assert [b.id for b in read.batches] == list(range(1, 251))
    assert read.limit is None
    again = api_of(fake).read(read.cursor)
    assert again.batches == [] and again.cursor == read.cursor


def test_more_than_a_page_in_one_second_is_a_limit_and_read_goes_on() -> None:
    # 30 batches at second 0, 150 at second 1 (only 100 visible), 20 at second 2
    fake = FakeApi(batches([0] * 30 + [1] * 150 + [2] * 20))
    read = api_of(fake).read(BatchesCursor())
    got = [b.id for b in read.batches]
    assert read.limit is not None and stamp(1)[:19] in str(read.limit)
    assert got == list(range(1, 131)) + list(range(181, 201))  # 131..180 cannot be served
    assert read.cursor.created_at == stamp(2, 200)
    assert api_of(fake).listing().records == read.batches  # the full listing sees the same


def test_limit_at_the_newest_second_keeps_polling_without_error() -> None:
    fake = FakeApi(batches([1] * 120))
    api = api_of(fake)
    first = api.read(BatchesCursor())
    assert [b.id for b in first.batches] == list(range(1, 101)) and first.limit is not None
    second = api.read(first.cursor)
    assert second.batches == [] and second.limit is not None
    fake.batches += [{"id": 121, "name": "web-121", "created_at": stamp(2, 5)}]
    third = api.read(first.cursor)
    assert [b.id for b in third.batches] == [121]


def test_a_stale_full_page_is_retried_not_a_limit() -> None:
    old = batches([s // 10 for s in range(100)])  # 100 batches over 10 seconds

    def stale(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=old)  # always the first page, whatever `after` says

    with pytest.raises(SourceUnavailable, match="stale or backwards"):
        api_of(stale).read(BatchesCursor(stamp(20), (500,)))


def test_a_malformed_record_at_the_cursor_is_not_a_reset() -> None:
    rows = batches([0, 0, 1])
    fake = FakeApi(rows)
    api = api_of(fake)
    read = api.read(BatchesCursor())
    rows[2] = {**rows[2], "created_at": "garbage"}  # the record at the cursor, broken once
    broken = api.read(read.cursor)
    assert broken.batches == [] and [r[2] for r in broken.rejects] == ["bad_created_at"]
    assert broken.cursor.created_at == read.cursor.created_at
    rows[2] = {**rows[2], "created_at": stamp(1, 3)}
    again = api.read(broken.cursor)
    assert again.batches == [] and again.rejects == []


def test_a_malformed_record_mid_page_is_found_by_the_listing() -> None:
    rows = batches([0, 1, 2, 3])
    good = rows[1]
    rows[1] = {**good, "name": None}
    fake = FakeApi(rows)
    api = api_of(fake)
    read = api.read(BatchesCursor())
    assert [b.id for b in read.batches] == [1, 3, 4]
    assert [r[2] for r in read.rejects] == ["bad_name"]
    rows[1] = good
    assert [b.id for b in api.listing().records] == [1, 2, 3, 4]


def test_listing_reach_is_the_newest_listed() -> None:
    fake = FakeApi(batches([0, 5, 9]))
    listing = api_of(fake).listing()
    assert listing.reach == stamp(9, 3)
    assert api_of(FakeApi([])).listing().reach is None


def _prefetcher(fake: FakeApi, **options: float) -> BatchPrefetcher:
    return BatchPrefetcher(api_of(fake), 0.01, **options)


def test_rewind_reads_again_from_the_committed_cursor() -> None:
    fake = FakeApi(batches([0, 1, 2]))
    prefetch = _prefetcher(fake, reconcile_every=3600)
    prefetch.start(BatchesCursor())
    try:
        first = _takes_until(prefetch)
        assert [b.id for read in first for b in read.batches] == [1, 2, 3]
        listings = [read.listing for read in first if read.listing]
        assert len(listings) == 1  # the first listing comes at start
        prefetch.rewind(BatchesCursor())  # the commit failed: nothing of it is durable
        again = _takes_until(prefetch)
        assert [b.id for read in again for b in read.batches] == [1, 2, 3]
        # the listing is handed back (applying it twice is a no-op), and no other is made
        assert [read.listing for read in again if read.listing] == listings
        wait_until(lambda: prefetch.settled, 10)
        assert prefetch.take() is None
    finally:
        prefetch.stop()


def _takes_until(prefetch: BatchPrefetcher) -> list[BatchesRead]:
    """Every read taken until batches and a listing came (in one take or in several)."""
    takes: list[BatchesRead] = []

    def has_batches() -> bool:
        read = prefetch.take()
        if read is not None:
            takes.append(read)
        return any(read.batches for read in takes) and any(read.listing for read in takes)

    wait_until(has_batches, 10)
    return takes


def test_throttling_is_honoured_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeApi(batches([0]))
    calls = {"n": 0}

    def throttled(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] <= 3:
            return httpx.Response(429, headers={"Retry-After": "0"})
        return fake(request)

    prefetch = BatchPrefetcher(api_of(throttled), 0.01, reconcile_every=3600)
    with caplog.at_level(logging.WARNING, logger="cohortflow.sources.prefetch"):
        prefetch.start(BatchesCursor())
        try:
            wait_until(lambda: prefetch.health().state == "ok" and calls["n"] > 3, 20)
        finally:
            prefetch.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("answered 429" in m for m in messages) == 1, messages
    assert sum(m.startswith("recovered") for m in messages) == 1, messages
    assert prefetch.health().state == "ok"


def test_health_says_failing_since_and_why() -> None:
    prefetch = BatchPrefetcher(answer(500), 0.01, reconcile_every=3600)
    prefetch.start(BatchesCursor())
    try:
        wait_until(lambda: prefetch.health().failures >= 2, 20)
    finally:
        prefetch.stop()
    health = prefetch.health()
    assert health.state == "failing" and health.since is not None
    assert "answered 500" in str(health.error)
    assert SourceHealth.from_json(json.loads(json.dumps(health.to_json()))) == health
    assert health.describe().startswith("failing since")


def test_retry_after_is_honoured_before_the_next_try() -> None:
    fake = FakeApi(batches([0]))
    times: list[float] = []

    def throttled_once(request: httpx.Request) -> httpx.Response:
        times.append(time.monotonic())
        if len(times) == 1:
            return httpx.Response(429, headers={"Retry-After": "2"})
        return fake(request)

    prefetch = BatchPrefetcher(api_of(throttled_once), 0.01, reconcile_every=3600)
    prefetch.start(BatchesCursor())
    try:
        wait_until(lambda: len(times) >= 2, 20)
    finally:
        prefetch.stop()
    assert times[1] - times[0] >= 1.9  # the jittered backoff alone would retry within 0.5 s


def test_an_idle_api_is_polled_slower_until_something_new_comes() -> None:
    fake = FakeApi(batches([0]))
    times: list[float] = []

    def timed(request: httpx.Request) -> httpx.Response:
        times.append(time.monotonic())
        return fake(request)

    prefetch = BatchPrefetcher(api_of(timed), 0.01, reconcile_every=3600, idle_interval=0.5)
    prefetch.start(BatchesCursor())
    try:
        wait_until(lambda: len(times) >= QUIET_POLLS + 4, 20)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert max(gaps[: QUIET_POLLS - 2]) < 0.4, gaps  # busy or briefly quiet: the short period
        assert min(gaps[QUIET_POLLS + 1 :]) >= 0.45, gaps  # long quiet: the idle period
        fake.batches.append({"id": 2, "name": "web-2", "created_at": stamp(5)})
        taken: list[int] = []

        def new_batch_taken() -> bool:
            read = prefetch.take()
            if read is not None:
                taken.extend(b.id for b in read.batches)
            return 2 in taken

        wait_until(new_batch_taken, 5)  # within the idle period
        found = len(times)
        wait_until(lambda: len(times) >= found + 5, 5)
        assert max(b - a for a, b in itertools.pairwise(times[found : found + 5])) < 0.4, "short again"
    finally:
        prefetch.stop()
