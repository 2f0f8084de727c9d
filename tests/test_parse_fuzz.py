"""Differential fuzzing: the parse and the naive model decide every mutated line the same.

The big run (``COHORTFLOW_FUZZ_LINES``: 100k in CI, as 1M takes minutes on
two cores; run 1M by hand) mutates simulator-shaped lines every way the
README's rule has an edge, writes them to a real log and reads it back
through the real reader at two chunk sizes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from cohortflow.parse import LINE_LIMIT, parse_runs, split_lines, summarise_runs
from cohortflow.sources import LogCursor, RunLog
from tests.naive import naive_parse, naive_raw

SAMPLES = Path(__file__).parent / "simulator" / "data" / "upstream_test_runs.log"
FUZZ_LINES = int(os.environ.get("COHORTFLOW_FUZZ_LINES", "100000"))  # the full run: 1000000
TITLE_EDGES = [b" ", b"\\t", b"\\u0000", b'", "lesson_title": "']
TITLES = ["Fetch Lab", "Use Fetch", "Asynchrony", "JS Fundamentals: Objects", "Zoë ünïcödé", "日本語"]


def _base_lines(rng: np.random.Generator, count: int) -> list[bytes]:
    """Lines of the upstream's shapes, their numbers drawn for all lines at once."""
    n, extra = rng.integers(0, 11, count), rng.integers(0, 3, count)
    student, lesson = rng.integers(1, 100_000, count), rng.integers(1, 12, count)
    shape, title = rng.integers(0, 4, count), rng.integers(0, len(TITLES), count)
    sep = np.where(rng.random(count) < 0.5, "/", " out of ")
    shapes = [
        '{{"result": "{0}{1}{2}", "student_id", {3}, "lesson_id": {4}, "lesson_title": "{5}"}}',
        '{{"result": "{0}{1}{2}", "student_id", {3}, "lesson_id": "{4}"}}',
        '{{"result": "{0}{1}{2}", "student_id", {3}, "lesson_title": "{5}"}}',
        '{{"result": "{0}{1}{2}", "student_id": "{3}", "lesson_id": {4}}}',
    ]
    return [
        shapes[k].format(a, s, a + e, sid, lid, TITLES[t]).encode()
        for k, a, s, e, sid, lid, t in zip(
            shape.tolist(),
            n.tolist(),
            sep.tolist(),
            extra.tolist(),
            student.tolist(),
            lesson.tolist(),
            title.tolist(),
            strict=True,
        )
    ]


def _at(line: bytes, where: float, insert: bytes) -> bytes:
    cut = int(where * (len(line) + 1))
    return line[:cut] + insert + line[cut:]


# Each mutation gets the line and a uniform draw; the draws are vectorised by the caller.
MUTATIONS: list[Callable[[bytes, float], bytes]] = [
    lambda line, u: line,
    lambda line, u: line[: int(u * len(line))],  # truncated
    lambda line, u: _at(line, u, b'"'),
    lambda line, u: _at(line, u, b"[{]}"[int(u * 997) % 4 : int(u * 997) % 4 + 1]),
    lambda line, u: _at(line, u, b"\\"),
    lambda line, u: line.replace(b'"student_id", ', b'"student_id", 9' + b"9" * int(u * 40), 1),  # huge
    lambda line, u: (
        line.replace(b'"student_id", ', b'"student_id", -', 1) if u < 0.3 else line[:-1] + b', "x": 1.5e308}'
    ),
    lambda line, u: line.replace(b'"student_id", ', b'"student_id", 1.0, "z": ', 1),  # a float id
    lambda line, u: (
        line[:-1] + (b', "student_id": 7}' if u < 0.5 else b', "lesson_id": "x", "lesson_id": 3}')
    ),
    lambda line, u: line[:-1] + b', "n": ' + b"[" * int(u * 80) + b"]" * int(u * 80) + b"}",  # nested
    lambda line, u: b"\xef\xbb\xbf" + line,  # BOM
    lambda line, u: _at(line, u, b"\xc3" if u < 0.5 else b"\xff\xfe"),  # invalid UTF-8
    lambda line, u: line + b"\r" * (1 + int(u * 3)),
    lambda line, u: _at(line, u, b"\r"),
    lambda line, u: _at(line, u, b"\x00"),
    lambda line, u: b" \t\r"[: 1 + int(u * 3)],  # whitespace only
    lambda line, u: line[:-1] + (b",}" if u < 0.3 else b", NaN]}" if u < 0.6 else b" /* c */}"),
    lambda line, u: line.replace(
        b'"lesson_id": ', b'"lesson_id": null, "x": ' if u < 0.5 else b'"lesson_id": 0', 1
    ),
    lambda line, u: line.replace(b'"lesson_title": "', b'"lesson_title": "' + TITLE_EDGES[int(u * 4)], 1),
    lambda line, u: line.replace(b"out of", b"out  of" if u < 0.5 else b"outof", 1),
    lambda line, u: line.replace(b'"result": "', b'"result": "0' if u < 0.5 else b'"result": "\\t', 1),
    lambda line, u: _at(line, u, b'\\"'),
    lambda line, u: _at(line, u, b"\\u00e9" if u < 0.5 else b"\\ud800"),
]


def _mutated_log(seed: int, count: int) -> bytes:
    """``count`` lines (more or fewer once bytes are flipped) plus the oversized ones, as one buffer."""
    rng = np.random.default_rng(seed)
    lines = _base_lines(rng, count)
    kinds, draws = rng.integers(0, len(MUTATIONS), count), rng.random(count)
    mutated = [
        MUTATIONS[k](line, u) for line, k, u in zip(lines, kinds.tolist(), draws.tolist(), strict=True)
    ]
    buf = np.frombuffer(b"\n".join(mutated) + b"\n", dtype=np.uint8).copy()
    flips = rng.integers(0, len(buf), count // 20)
    buf[flips] ^= rng.integers(1, 256, len(flips), dtype=np.uint8)  # byte flips (may cut or join lines)
    big = b'{"result": "1/1", "student_id", 3, "lesson_id": 2, "x": "'
    oversized = [
        big + b"a" * (LINE_LIMIT - len(big) - 2) + b'"}',  # exactly the limit: valid
        big + b"a" * (LINE_LIMIT - len(big) - 1) + b'"}',  # one byte over
        big + b"a" * (2 * LINE_LIMIT) + b'"}',
        b"[" * (17 * LINE_LIMIT),
    ]
    tail = b"\n".join(oversized) + b"\n"
    return (buf.tobytes() + b"\n" + tail) if buf[-1] != 10 else (buf.tobytes() + tail)


def _parse_log(path: Path, chunk_bytes: int) -> pa.Table:
    log, cursor, parts = RunLog(path), LogCursor(), []
    while (chunk := log.read(cursor, chunk_bytes)) is not None:
        parts.append(parse_runs(chunk.lines))
        cursor = chunk.cursor
    return pa.concat_tables(parts)


def _naive_rows(buf: bytes) -> tuple[list[int], list[tuple[object, ...]]]:
    offsets, rows, at = [], [], 0
    for line in buf.split(b"\n")[:-1]:
        run, reason = naive_parse(line)
        offsets.append(at)
        at += len(line) + 1
        if run is None:
            rows.append((reason, None, None, None, None, None, naive_raw(line)))
        else:
            fields = (run["student_id"], run["lesson_id"], run["title"], run["passed"], run["total"])
            rows.append((None, *fields, None))
    return offsets, rows


def _parsed_rows(runs: pa.Table) -> list[tuple[object, ...]]:
    names = ["reason", "student_id", "lesson_id", "lesson_title", "passed", "total", "raw"]
    return list(zip(*(runs.column(name).to_pylist() for name in names), strict=True))


def test_a_million_mutated_lines_agree_with_the_naive_model(tmp_path: Path) -> None:
    began = time.perf_counter()
    buf = _mutated_log(seed=11, count=FUZZ_LINES)
    path = tmp_path / "test_runs.log"
    path.write_bytes(buf)
    offsets, expected = _naive_rows(buf)
    for chunk_bytes in (1 << 20, 16 << 20):
        runs = _parse_log(path, chunk_bytes)
        assert runs.column("offset").to_pylist() == offsets
        got = _parsed_rows(runs)
        disagreements = [(o, g, e) for o, g, e in zip(offsets, got, expected, strict=True) if g != e]
        assert disagreements[:5] == [], f"{len(disagreements)} of {len(offsets)} lines disagree"
        delta = summarise_runs(runs)
        valid = runs.num_rows - delta.rejects.num_rows
        assert valid + delta.rejects.num_rows == delta.lines == len(offsets)
    reasons = {row[0] for row in expected}
    assert len(reasons) >= 11, reasons  # every reason and valid lines were exercised
    print(f"fuzz: {len(offsets)} lines, {len(reasons)} verdicts, {time.perf_counter() - began:.1f} s")


NEAR_MISSES = [b"", *(bytes([byte]) for byte in b'"\\,: 09-{}a\t\x00\x1f'), "é".encode()]


def test_lines_one_edit_away_from_the_canonical_shape_agree() -> None:
    """The fast/slow boundary: every single-byte edit of real upstream lines, at every position."""
    originals = SAMPLES.read_bytes().split(b"\n")[:-1][:16]
    lines = [
        line[:at] + insert + line[at + (insert == b"" or replace) :]
        for line in originals
        for at in range(len(line) + 1)
        for insert in NEAR_MISSES
        for replace in (False, True)
        if not (insert == b"" and at == len(line))
    ]
    buf = b"".join(line + b"\n" for line in lines)
    runs = parse_runs(split_lines(buf, 0, "t.log"))
    _, expected = _naive_rows(buf)
    got = _parsed_rows(runs)
    assert [pair for pair in zip(lines, got, expected, strict=True) if pair[1] != pair[2]][:5] == []
    assert sum(row[0] is None for row in got) > len(lines) // 10  # many edits keep a line valid


@pytest.mark.parametrize("seed", range(3))
def test_small_fuzz_through_one_chunk(seed: int) -> None:
    buf = _mutated_log(seed, 3000)
    assert _parsed_rows(parse_runs(split_lines(buf, 0, "t.log"))) == _naive_rows(buf)[1]
