"""Tick metrics reach the warehouse at the first tick, then coalesced, and all of them by the end."""

from __future__ import annotations

from pathlib import Path

from cohortflow.state import Cursors, TickStats
from cohortflow.tickmetrics import METRICS_KEY, TickMetrics, TickRecorder
from cohortflow.warehouse import open_warehouse


def _stored(target: str) -> TickMetrics:
    with open_warehouse(target) as wh:
        return TickMetrics.from_json(wh.state().get(METRICS_KEY))


def test_ticks_are_written_first_at_once_then_coalesced_and_all_by_close(tmp_path: Path) -> None:
    target = str(tmp_path / "wh.db")
    with open_warehouse(target, writer=True) as wh:
        wh.ensure_schema()
    recorder = TickRecorder(target, flush_seconds=3600)
    ticks = [TickStats(lines=n, students=1, seconds=0.02 * n) for n in (3, 5, 7)]
    recorder(ticks[0], Cursors())
    assert _stored(target).counters["lines"] == 3, "the first tick is visible at once"
    for stats in ticks[1:]:
        recorder(stats, Cursors())
    assert _stored(target).counters["ticks"] == 1, "later ticks wait for the next flush"
    recorder.close()
    stored = _stored(target)
    assert (stored.counters["ticks"], stored.counters["lines"], stored.counters["students"]) == (3, 15, 3)
    assert stored.cumulative()[-1] == ("+Inf", 3)
    assert abs(stored.seconds_sum - 0.3) < 1e-9
    TickRecorder(target).close()  # nothing pending: nothing written, nothing lost
    assert _stored(target) == stored
