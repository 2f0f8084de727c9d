"""GET /batches over real HTTP: ordering, limit, `after` semantics, paging, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cohortflow.contract import format_after, parse_timestamp
from cohortflow.simulator.process import SimulatorProcess
from tests.simulator.conftest import DATA, get, hidden_batches

BATCHES = 250
# --interval-ms 10 puts a batch every ~100 ms: about ten batches share each second
# A fixed --start-time makes the history identical in every run: batch 100 must not be the
# first of its second, or the whole-second overlap below would be empty (1 run in ~10 before).
FROZEN = (
    "--seed", "21", "--interval-ms", "10", "--history-batches", str(BATCHES),
    "--history-students", "20", "--no-stream", "--serve", "--start-time", "2026-01-01T00:00:00",
)  # fmt: skip


def _serve(root: Path, *extra: str) -> Iterator[SimulatorProcess]:
    process = SimulatorProcess(root, *FROZEN, *extra).start()
    yield process
    assert process.stop() == 0, process.stderr


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    yield from _serve(tmp_path_factory.mktemp("api"))


@pytest.fixture(scope="module")
def exact_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    yield from _serve(tmp_path_factory.mktemp("exact"), "--exact-after")


def _batches(url: str, **params: str) -> list[dict[str, object]]:
    response = get(f"{url}/batches", **params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert isinstance(body, list)
    return body


def _cursor(batch: dict[str, object]) -> str:
    return format_after(parse_timestamp(str(batch["created_at"])))


def test_first_page_is_the_oldest_hundred_in_order(api: SimulatorProcess) -> None:
    page = _batches(api.url)
    assert [b["id"] for b in page] == list(range(1, 101))
    keys = [(str(b["created_at"]), int(str(b["id"]))) for b in page]
    assert keys == sorted(keys)
    assert all(list(b) == ["id", "name", "created_at"] for b in page)


def test_records_look_like_the_upstream_capture(api: SimulatorProcess) -> None:
    upstream = json.loads((DATA / "upstream_batches_page.json").read_text(encoding="utf-8"))
    ours = _batches(api.url)[: len(upstream)]
    for mine, theirs in zip(ours, upstream, strict=True):
        assert list(mine) == list(theirs)
        assert len(str(mine["created_at"])) == len(theirs["created_at"])  # YYYY-MM-DD HH:MM:SS.ffffff
        assert str(mine["name"]).count("-") == str(theirs["name"]).count("-")


def test_api_serves_exactly_the_hidden_bookkeeping(api: SimulatorProcess) -> None:
    served: dict[int, dict[str, object]] = {}
    after = None
    while True:
        page = _batches(api.url, **({"after": after} if after else {}))
        fresh = [b for b in page if int(str(b["id"])) not in served]
        if not fresh:
            break
        served.update((int(str(b["id"])), b) for b in fresh)
        after = _cursor(page[-1])
    expected = [(i, n, c) for i, n, c in hidden_batches(api.data_dir)]
    assert [(b["id"], b["name"], b["created_at"]) for b in served.values()] == expected


def _page_after(url: str, batch: dict[str, object]) -> list[dict[str, object]]:
    return _batches(url, after=_cursor(batch))


def test_default_after_is_truncated_to_the_second_so_pages_overlap(api: SimulatorProcess) -> None:
    everything = {int(str(b[0])): b for b in hidden_batches(api.data_dir)}
    boundary = _batches(api.url)[-1]  # batch 100
    page = _page_after(api.url, boundary)
    second = str(boundary["created_at"])[:19]  # YYYY-MM-DD HH:MM:SS
    expected_first = min(i for i, b in everything.items() if b[2] > second + ".000000")
    assert page[0]["id"] == expected_first
    assert int(str(page[0]["id"])) < 100  # the overlap the clients must dedupe
    assert len(page) == 100


def test_exact_after_compares_the_millisecond_value(exact_api: SimulatorProcess) -> None:
    everything = {int(str(b[0])): b for b in hidden_batches(exact_api.data_dir)}
    boundary = _batches(exact_api.url)[-1]
    page = _page_after(exact_api.url, boundary)
    millis = _cursor(boundary).replace("T", " ") + "000"
    expected = [i for i, b in everything.items() if b[2] > millis][:100]
    assert [b["id"] for b in page] == expected
    assert page[0]["id"] in (100, 101)  # batch 100 repeats only if it has sub-ms digits


@pytest.mark.parametrize("mode", ["api", "exact_api"])
def test_paging_through_more_than_a_hundred_batches(mode: str, request: pytest.FixtureRequest) -> None:
    process: SimulatorProcess = request.getfixturevalue(mode)
    seen: list[int] = []
    after = None
    pages = 0
    while True:
        page = _batches(process.url, **({"after": after} if after else {}))
        pages += 1
        assert len(page) <= 100
        fresh = [int(str(b["id"])) for b in page if int(str(b["id"])) not in seen]
        if not fresh:
            break
        seen += fresh
        after = _cursor(page[-1])
    assert seen == list(range(1, BATCHES + 1))
    assert pages >= 4  # 3 pages of data and one that brings nothing new


def test_after_before_everything_and_after_everything(api: SimulatorProcess) -> None:
    assert [b["id"] for b in _batches(api.url, after="2000-01-01T00:00:00.000")] == list(range(1, 101))
    assert _batches(api.url, after="2999-01-01T00:00:00.000") == []


@pytest.mark.parametrize(
    "after",
    [
        "abc",
        "",
        "2026-01-01",
        "2026-01-01T00:00:00",
        "2026-01-01 00:00:00.000",
        "2026-02-30T00:00:00.000",
        "2026-01-01T00:00:00.000Z",
        "2026-01-01T25:00:00.000",
    ],
)
def test_malformed_after_is_a_400_naming_the_format(api: SimulatorProcess, after: str) -> None:
    response = get(f"{api.url}/batches", after=after)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert "YYYY-MM-DDTHH:MM:SS.SSS" in response.json()["error"]


@pytest.mark.parametrize("path", ["/", "/batch", "/batches/1", "/students"])
def test_unknown_paths_are_404_json(api: SimulatorProcess, path: str) -> None:
    response = httpx.get(f"{api.url}{path}", timeout=10)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert "error" in response.json()


def test_other_methods_are_refused(api: SimulatorProcess) -> None:
    response = httpx.post(f"{api.url}/batches", content=b"{}", timeout=10)
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/json"


def test_serve_only_writes_nothing(api: SimulatorProcess) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in api.data_dir.iterdir()}
    for _ in range(3):
        _batches(api.url)
    after = {p.name: p.stat().st_mtime_ns for p in api.data_dir.iterdir()}
    assert {k: v for k, v in after.items() if not k.startswith(".")} == {
        k: v for k, v in before.items() if not k.startswith(".")
    }
