"""``--rotate-every`` / ``--rotate-style``: the stream's log is rotated as logrotate does, losing nothing."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from cohortflow.errors import ConfigError
from cohortflow.simulator.process import SimulatorProcess
from cohortflow.simulator.rotation import RotatePolicy
from cohortflow.simulator.runner import GenerateOptions, stream_script
from cohortflow.simulator.stream import StreamState
from tests.naive import log_lines
from tests.simulator.conftest import stopped_counts, wait_for

Start = Callable[..., SimulatorProcess]


def _rotated(data: Path) -> list[Path]:
    found = [p for p in data.glob("test_runs.log.*") if p.suffix[1:].isdigit()]
    return sorted(found, key=lambda p: int(p.suffix[1:]))


@pytest.mark.parametrize("style", ["rename", "copytruncate"])
def test_rotation_keeps_every_line_in_order(simulator: Start, style: str) -> None:
    sim = simulator("--seed", "4", "--interval-ms", "5", "--rotate-every", "3k", "--rotate-style", style)
    data = sim.data_dir
    wait_for(lambda: len(_rotated(data)) >= 5, timeout_s=60)
    assert sim.stop() == 0
    counts = stopped_counts(sim.stderr)
    rotations = re.search(r"log_rotations=(\d+)", sim.stderr)
    assert rotations is not None and int(rotations.group(1)) == len(_rotated(data))
    for rotated in _rotated(data):
        content = rotated.read_bytes()
        assert content.endswith(b"\n") and len(content) >= 3 * 1024, rotated  # rotated between bursts
    script = stream_script(GenerateOptions(seed=4, interval_ms=5), 4)
    state = StreamState()
    expected = b"".join(script.tick(n, state).burst.data for n in range(counts["intervals"]))
    assert b"\n".join(log_lines(data / "test_runs.log")) + b"\n" == expected


def test_rotation_by_age(simulator: Start) -> None:
    sim = simulator("--seed", "1", "--interval-ms", "10", "--rotate-every", "300ms")
    wait_for(lambda: len(_rotated(sim.data_dir)) >= 3, timeout_s=60)
    assert sim.stop() == 0


@pytest.mark.parametrize(
    ("every", "style", "want"),
    [
        ("64k", "rename", RotatePolicy(every_bytes=65536)),
        ("1.5m", "copytruncate", RotatePolicy(every_bytes=1572864, style="copytruncate")),
        ("100", "rename", RotatePolicy(every_bytes=100)),
        ("2s", "rename", RotatePolicy(every_seconds=2.0)),
        ("250ms", "rename", RotatePolicy(every_seconds=0.25)),
    ],
)
def test_rotate_every_is_parsed(every: str, style: str, want: RotatePolicy) -> None:
    assert RotatePolicy.parse(every, style) == want


@pytest.mark.parametrize(("every", "style"), [("0", "rename"), ("ten", "rename"), ("1k", "move")])
def test_bad_rotate_options_are_refused(every: str, style: str) -> None:
    with pytest.raises(ConfigError, match="--rotate-"):
        GenerateOptions(rotate_every=every, rotate_style=style).validate()
