"""The source health board: states by error type, since-times, log once per change."""

from __future__ import annotations

import logging

import pytest

from cohortflow.errors import SourceBlocked, SourceLocked, SourceMissing, SourceUnavailable
from cohortflow.health import HealthBoard, SourceHealth


def test_each_error_type_sets_its_state_and_the_since_time_stays_while_it_lasts() -> None:
    board = HealthBoard()
    for exc, state in (
        (SourceLocked("locked"), "locked"),
        (SourceMissing("missing"), "waiting"),
        (SourceBlocked("read-only"), "blocked"),
        (SourceUnavailable("down"), "failing"),
    ):
        board.failed("students", exc)
        first = board["students"]
        board.failed("students", exc)
        assert (
            board["students"] == first
            and first.state == state
            and first.since
            and not board.ready("students")
        )
    assert list(board.take_changes()) == ["students"] and board.take_changes() == {}
    board.succeeded("students")
    assert board["students"] == SourceHealth() and board.ready("students")
    assert board.take_changes() == {"students": SourceHealth()}


def test_a_repeated_failure_is_logged_once_then_as_a_reminder(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cohortflow.health")
    board = HealthBoard(remind_seconds=3600)
    for _ in range(50):
        board.failed("batches", SourceUnavailable("API down"))
    board.succeeded("batches")
    board.failed("batches", SourceUnavailable("API down"))
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "batches: API down (retrying with backoff)",
        "recovered: batches reads normally again",
        "batches: API down (retrying with backoff)",
    ]
    reminding = HealthBoard(remind_seconds=0)
    caplog.clear()
    for _ in range(3):
        reminding.failed("batches", SourceUnavailable("API down"))
    assert len(caplog.records) == 3


def test_health_round_trips_and_reads_old_or_missing_entries_as_ok() -> None:
    health = SourceHealth("locked", "2026-01-01T00:00:00+00:00", "held")
    assert SourceHealth.from_json(health.to_json()) == health
    assert SourceHealth.from_json(None).ok and SourceHealth.from_json({"ok": False}).ok
    assert health.describe() == "locked since 2026-01-01T00:00:00+00:00: held"
