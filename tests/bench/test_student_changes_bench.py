"""The change-detector benchmark must not rot: it runs at a tiny size and finds every edit it made."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_student_changes_bench_runs_small() -> None:
    command = [
        sys.executable,
        str(ROOT / "bench" / "student_changes.py"),
        "--students",
        "3000",
        "--seconds",
        "5",
    ]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "CPU s/min" in done.stdout
    found = re.search(r"detection delay over (\d+) edits: median [\d.]+ s, max ([\d.]+) s", done.stdout)
    assert found, done.stdout
    assert int(found.group(1)) >= 1
