"""Write ``docs/benchmarks.md``: how to reproduce, then the latest full and quick tables.

Each mode owns a section between markers; writing one keeps the other as it was.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from common import Result, table_lines

HEADER = """# Benchmarks

What users care about, measured against baselines **in the same run** (the
machines are shared and noisy: read the ratios, not the absolute times).
Written by `bench/run`; do not edit the sections between the markers by hand.

## How to reproduce

```bash
bench/run            # full: 10M-line backfill (+1M), ticks, freshness, writer (~8 min, ~11 with --naive-10m)
bench/run --quick    # quick: 1M lines, shorter runs (~4-5 min; CI smoke-tests a 20k-line version)
bench/run --quick --only backfill,tick    # a subset
bench/run --help     # sizes, samples, --no-postgres, --no-spark, --naive-10m, --docs PATH, --keep
```

Data comes from the project's simulator with a fixed seed (`--seed 7
--start-time 2025-01-01T00:00:00 --dirty-rate 0.001`): N test-run lines,
200k students, 10k batches; `--no-stream --serve` keeps the batch API up over
the frozen data. Scratch data goes to `bench/out/` (git-ignored) and is
deleted at the end. Any disagreement between the engine, the floor and the
naive baseline on a single batch is a failure: the run exits non-zero.

## What is measured

1. **Backfill**: `cohortflow run --once` into a cold warehouse, as a child
   process (wall time; peak RSS from `wait4`), interleaved with the **floor**
   (`bench/floor.py`: a Polars line scan, a cheap `result` regex keeping
   completed lines, one regex of the canonical shape over those, distinct
   `(student, lesson)` counted per student, joined with students and the API's
   batches; no durability, no cursors, no quarantine; it shares no code with
   `cohortflow.parse`) and once the **naive baseline**
   (`bench/naive_baseline.py`: per-line `json.loads` after repair, pandas
   groupby, `to_sql(if_exists="replace")`). Every contender's per-batch
   `(students_total, students_completed_3plus)` must equal the floor's. All
   timings include interpreter start-up and paging the batch API (10k batches).
   **Students + batches ingestion**: the same command, interleaved, on a copy
   with the same `students.db` and batches but an empty log, minus its time
   on empty sources (start-up, imports, opening the warehouse). **PostgreSQL
   vs SQLite**: the engine into a throwaway PostgreSQL (once) over the SQLite
   median.
2. **Tick cost vs history**: two caught-up `EmbeddedEngine`s in one process
   (short and long history), alternately fed the same-sized fresh 1 MiB delta
   of realistic lines; one `tick()` timed each. The batch API is not polled
   in these ticks (its cost is reported on its own row).
3. **Freshness**: the simulator streams at 1x (`--interval-ms 500`) and 100x
   (`--interval-ms 5`), `cohortflow run` follows; an observer process commits
   marker students into `students.db` and appends completed runs for them,
   timing each until the warehouse shows it (2 ms polling). **Idle CPU**: a
   follower over frozen sources, psutil `cpu_times` over a window.
4. **Writer friendliness**: a process of ours commits one student every 20 ms
   through the simulator's own `StudentsWriter`; commit latency alone (before
   and after) vs during a flat-out backfill reading the same `students.db`.
"""

SECTIONS = ("full", "quick")


def section(
    mode: str, title: str, info: dict[str, str], results: Sequence[Result], notes: Sequence[str]
) -> str:
    machine = ", ".join(f"{k}: {v}" for k, v in info.items())
    lines = [f"<!-- bench:{mode} -->", f"## {title}", "", f"Machine: {machine}.", ""]
    lines += table_lines(results)
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    lines.append(f"<!-- /bench:{mode} -->")
    return "\n".join(lines)


def _existing(path: Path, mode: str) -> str | None:
    if not path.exists():
        return None
    found = re.search(rf"<!-- bench:{mode} -->.*?<!-- /bench:{mode} -->", path.read_text(), re.S)
    return found.group(0) if found else None


def write(path: Path, mode: str, text: str) -> None:
    """Replace this mode's section, keep the other one."""
    parts = [HEADER.rstrip()]
    for name in SECTIONS:
        body = text if name == mode else _existing(path, name)
        if body is None:
            body = f"<!-- bench:{name} -->\n## {name.title()} run\n\nNot run yet.\n<!-- /bench:{name} -->"
        parts.append(body)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(parts) + "\n")
