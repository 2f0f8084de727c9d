"""Benchmark the simulator's history generation against raw disk writes of the same bytes.

Usage: .venv/bin/python bench/bench_generate.py [--quick] [--out DIR] [--keep]

Full: 10M test-run lines + 200k students + 10k batches (target: under 30 s
on 2 cores). ``--quick``: 1M lines + 20k students + 1k batches. It runs the
real ``cohortflow generate --no-stream`` in a child process (so the peak RSS
is the generator's own), then, as the baseline measured in the same run,
writes the same number of bytes in 64 MiB writes to the same filesystem
(neither side fsyncs the log). The ratio says how far generation is from
"just writing the file".
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHUNK_BYTES = 64 * 1024 * 1024


def _generate(data_dir: Path, lines: int, students: int, batches: int) -> tuple[float, float, int]:
    command = [
        sys.executable,
        "-m",
        "cohortflow",
        "generate",
        "--data-dir",
        str(data_dir),
        "--seed",
        "7",
        "--start-time",
        "2025-01-01T00:00:00",
        "--history-test-runs",
        str(lines),
        "--history-students",
        str(students),
        "--history-batches",
        str(batches),
        "--no-stream",
    ]
    began = time.perf_counter()
    done = subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - began
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    match = re.search(r"seconds=([0-9.]+)", done.stderr)
    return elapsed, float(match.group(1)) if match else elapsed, peak_kib


def _raw_write(path: Path, total: int) -> float:
    block = os.urandom(CHUNK_BYTES)
    began = time.perf_counter()
    with open(path, "wb") as out:
        left = total
        while left > 0:
            left -= out.write(block[: min(left, len(block))])
    return time.perf_counter() - began


def _startup(data_dir: Path) -> float:
    """Time of a generate run with no history: interpreter + imports, to subtract."""
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "cohortflow", "generate", "--data-dir", str(data_dir), "--no-stream"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1M lines instead of 10M")
    parser.add_argument("--out", type=Path, default=None, help="scratch directory (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args()
    lines, students, batches = (1_000_000, 20_000, 1_000) if args.quick else (10_000_000, 200_000, 10_000)
    scratch = Path(tempfile.mkdtemp(prefix="bench-generate-", dir=args.out))
    try:
        startup = _startup(scratch / "empty")
        elapsed, history, peak_kib = _generate(scratch / "data", lines, students, batches)
        log_bytes = (scratch / "data" / "test_runs.log").stat().st_size
        raw = _raw_write(scratch / "raw.bin", log_bytes)
        print(f"history: {lines:,} test runs + {students:,} students + {batches:,} batches")
        print(
            f"  generate:  {elapsed:6.2f} s wall, {history:.2f} s writing history "
            f"(an empty run takes {startup:.2f} s)"
        )
        print(
            f"  log:       {log_bytes / 1e6:,.0f} MB, {lines / elapsed:,.0f} lines/s, "
            f"{log_bytes / elapsed / 1e6:,.0f} MB/s"
        )
        print(f"  peak RSS:  {peak_kib / 1024:,.0f} MiB")
        print(
            f"  baseline:  raw write of the same {log_bytes / 1e6:,.0f} MB: {raw:.2f} s "
            f"({log_bytes / raw / 1e6:,.0f} MB/s)"
        )
        print(f"  ratio:     generate / raw write = {elapsed / raw:.1f}x")
        target = 30.0 if not args.quick else 3.0
        print(f"  target:    < {target:.0f} s -> {'OK' if elapsed < target else 'MISSED'}")
    finally:
        if args.keep:
            print(f"  kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
