"""The vectorised parse agrees with the naive reference on every line, valid or not."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohortflow.parse import (
    LINE_LIMIT,
    REASONS,
    RunsDelta,
    delta_from_arrow,
    delta_to_arrow,
    parse_runs,
    split_lines,
    summarise_judged,
    summarise_lines,
    summarise_runs,
    summarise_vectorised,
)
from cohortflow.parse.lines import as_raw, decoded
from tests.naive import naive_parse, naive_raw

SAMPLES = Path(__file__).parent / "simulator" / "data"  # a copy of shared/samples: CI has no shared/

ids = st.one_of(
    st.integers(min_value=1, max_value=10**6),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.integers(min_value=0, max_value=10**6).map(str),
    st.text(alphabet="0123456789 ab-+.", max_size=6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
titles = st.one_of(
    st.none(),
    st.sampled_from(["Fetch Lab", "Use Fetch", "O'Brien's \"lab\"", "Zoë ünïcödé", " ", ""]),
    st.text(max_size=12),
    st.integers(),
)
results = st.one_of(
    st.builds(
        lambda n, m, sep: f"{n}{sep}{m}",
        st.integers(min_value=0, max_value=12),
        st.integers(min_value=0, max_value=12),
        st.sampled_from(["/", " out of ", " / ", "  out  of  ", "of", "-"]),
    ),
    st.text(max_size=8),
    st.integers(),
    st.none(),
)
documents = st.fixed_dictionaries(
    {"result": results, "student_id": ids},
    optional={"lesson_id": ids, "lesson_title": titles, "extra": st.text(max_size=5)},
)


@st.composite
def lines(draw: st.DrawFn) -> bytes:
    """A log line as the sloppy upstream might write it, or worse."""
    kind = draw(st.sampled_from(["json", "defect", "truncated", "bytes", "not_object"]))
    if kind == "bytes":
        return draw(st.binary(max_size=60)).replace(b"\n", b"")
    if kind == "not_object":
        return json.dumps(draw(st.one_of(st.lists(st.integers()), st.text(), st.integers()))).encode()
    text = json.dumps(draw(documents), ensure_ascii=draw(st.booleans()))
    if kind in ("defect", "truncated"):
        text = text.replace('"student_id": ', '"student_id", ', 1)
    if kind == "truncated":
        text = text[: draw(st.integers(min_value=0, max_value=len(text)))]
    return text.encode("utf-8", "surrogatepass")


def _parsed(raw_lines: list[bytes]) -> list[tuple[object, ...]]:
    runs = parse_runs(split_lines(b"".join(line + b"\n" for line in raw_lines), 0, "t.log"))
    return [
        (r["reason"], r["student_id"], r["lesson_id"], r["lesson_title"], r["passed"], r["total"])
        for r in runs.to_pylist()
    ]


def _naive(raw_lines: list[bytes]) -> list[tuple[object, ...]]:
    out = []
    for raw in raw_lines:
        run, reason = naive_parse(raw)
        if run is None:
            out.append((reason, None, None, None, None, None))
        else:
            out.append((None, run["student_id"], run["lesson_id"], run["title"], run["passed"], run["total"]))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(lines(), min_size=1, max_size=30))
def test_parse_matches_naive_reference(raw_lines: list[bytes]) -> None:
    assert _parsed(raw_lines) == _naive(raw_lines)


@settings(deadline=None)
@given(
    st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=40), st.integers(0, 10**9)
)
def test_split_lines_keeps_offsets(raw_lines: list[bytes], base: int) -> None:
    buf = b"".join(line + b"\n" for line in raw_lines)
    batch = split_lines(buf, base, "f")
    offsets = batch.column("offset").to_pylist()
    assert [
        buf[o - base : o - base + len(line)] for o, line in zip(offsets, raw_lines, strict=True)
    ] == raw_lines
    assert batch.column("line").to_pylist() == [line + b"\n" for line in raw_lines]


def test_split_lines_refuses_a_partial_line() -> None:
    with pytest.raises(ValueError, match="newline"):
        split_lines(b'{"a": 1}\n{"b"', 0, "f")


def test_real_upstream_sample_parses_completely() -> None:
    raw = (SAMPLES / "upstream_test_runs.log").read_bytes().split(b"\n")[:-1]
    parsed = _parsed(raw)
    assert parsed == _naive(raw)
    assert all(reason is None for reason, *_ in parsed), "every real upstream line is valid once repaired"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"result": "1/1", "student_id", 3, "lesson_title": "caf\xe9"}', "invalid_utf8"),
        (b"   ", "empty_line"),
        (b'{"result": "1/1", "student_id", 3, "lesson_id": 2', "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'{"result": "abc", "student_id", 3, "lesson_id": 2}', "bad_result"),
        (b'{"result": "9/5", "student_id", 3, "lesson_id": 2}', "passing_exceeds_total"),
        (b'{"result": "1/1", "student_id", -4, "lesson_id": 2}', "bad_student_id"),
        (
            b'{"result": "1/1", "student_id", 100000000000000000000000000000, "lesson_id": 2}',
            "bad_student_id",
        ),
        (b'{"result": "1/1", "student_id", 3, "lesson_id": "abc"}', "bad_lesson_id"),
        (b'{"result": "1/1", "student_id", 3, "lesson_title": ""}', "bad_lesson_title"),
        (b'{"result": "1/1", "student_id", 3}', "missing_lesson"),
        (
            b'{"result": "1/1", "student_id", 3, "lesson_id": 2, "x": "' + b"a" * LINE_LIMIT + b'"}',
            "line_too_long",
        ),
    ],
)
def test_each_reason(line: bytes, reason: str) -> None:
    assert reason in REASONS
    assert _parsed([line])[0][0] == reason
    assert naive_parse(line)[1] == reason


def test_quarantined_raw_keeps_the_line_verbatim_but_for_undecodable_bytes_and_nul() -> None:
    lines = [b'{"a": "\xff"}', b'{"b": 1}\r', b'{"c": "x\x00y"}\t', b"\x00\xc3"]
    runs = parse_runs(split_lines(b"".join(line + b"\n" for line in lines), 100, "t.log"))
    rows = runs.to_pylist()
    assert [row["raw"] for row in rows] == [
        '{"a": "\\xff"}',
        '{"b": 1}\r',
        '{"c": "x\\x00y"}\t',
        "\\x00\\xc3",
    ]
    assert [row["raw"] for row in rows] == [naive_raw(line) for line in lines]
    assert (rows[0]["offset"], rows[1]["offset"]) == (100, 100 + len(b'{"a": "\xff"}\n'))
    assert [row["reason"] for row in rows] == ["invalid_utf8", "bad_result", "invalid_json", "invalid_utf8"]


def _nested(depth: int) -> bytes:
    return b'{"result": "1/1", "student_id": 3, "lesson_id": 2, "x": ' + b"[" * depth + b"]" * depth + b"}"


LESSON = b'{"result": "1/1", "student_id": 3, "lesson_id": 2'


@pytest.mark.parametrize(
    ("line", "reason", "fields"),
    [
        (LESSON + b",}", "invalid_json", None),  # trailing comma
        (LESSON + b', "x": NaN}', "invalid_json", None),
        (LESSON + b', "x": Infinity}', "invalid_json", None),
        (LESSON + b', "x": -Infinity}', "invalid_json", None),
        (LESSON + b"} // done", "invalid_json", None),
        (LESSON + b" /* c */}", "invalid_json", None),
        (b"\xef\xbb\xbf" + LESSON + b"}", "invalid_json", None),  # a byte-order mark
        (b"{'result': '1/1', 'student_id': 3, 'lesson_id': 2}", "invalid_json", None),
        (LESSON + b', "x": 01}', "invalid_json", None),
        (LESSON + b', "lesson_title": "\\ud800"}', "invalid_json", None),  # a lone surrogate
        (LESSON + b', "lesson_title": "\\ud83d\\ude00"}', None, (3, 2, "\U0001f600")),  # a pair is fine
        (_nested(63), None, (3, 2, None)),  # the object is level 1
        (_nested(64), "invalid_json", None),
        (b"[" * 100_000, "invalid_json", None),
        (LESSON + b', "x": 1' + b"0" * 5000 + b"}", None, (3, 2, None)),  # any number elsewhere
        (LESSON + b', "student_id": -1}', None, (3, 2, None)),  # the first of a repeated key counts
        (b'{"student_id": "x", "result": "1/1", "student_id": 3, "lesson_id": 2}', "bad_student_id", None),
        (b'{"result": "1/1", "student_id", 3, "lesson_id": 2, "student_id", 4}', None, (3, 2, None)),
        (b'{"result": "1/1", "student_id": 3, "lesson_id": null, "lesson_title": "A"}', None, (3, None, "A")),
        (LESSON + b', "lesson_title": null}', None, (3, 2, None)),
        (b'{"result": "1/1", "student_id": 3, "lesson_id": null}', "missing_lesson", None),
        (b'{"result": "1/1", "student_id": 9223372036854775807, "lesson_id": 2}', None, (2**63 - 1, 2, None)),
        (b'{"result": "1/1", "student_id": 9223372036854775808, "lesson_id": 2}', "bad_student_id", None),
        (b'{"result": "1/1", "student_id": "0000000000000000000000001", "lesson_id": 2}', None, (1, 2, None)),
        (b'{"result": "1/1", "student_id": "9223372036854775808", "lesson_id": 2}', "bad_student_id", None),
        (b'{"result": "1/1", "student_id": 3.0, "lesson_id": 2}', "bad_student_id", None),
        (b'{"result": "1/1", "student_id": 3e0, "lesson_id": 2}', "bad_student_id", None),
        (b'{"result": "1/1", "student_id": true, "lesson_id": 2}', "bad_student_id", None),
        (b'{"result": "1/1", "student_id": "+3", "lesson_id": 2}', "bad_student_id", None),
        (b'{"result": "1/1", "student_id": 3, "lesson_id": {"id": 2}}', "bad_lesson_id", None),
        (b'{"result": "\\t1 /\\t1 ", "student_id": 3, "lesson_id": 2}', None, (3, 2, None)),
        (b'{"result": "1 out \\t of 1", "student_id": 3, "lesson_id": 2}', None, (3, 2, None)),
        (b'{"result": "1\\u00a0/1", "student_id": 3, "lesson_id": 2}', "bad_result", None),
        (b'{"result": "1 outof 1", "student_id": 3, "lesson_id": 2}', "bad_result", None),
        (b'{"result": "1234567890/1234567890", "student_id": 3, "lesson_id": 2}', "bad_result", None),
        (b'{"result": "1/1", "student_id": 3, "lesson_title": "\\t\\n"}', "bad_lesson_title", None),
        (b'{"result": "1/1", "student_id": 3, "lesson_title": " A "}', None, (3, None, " A ")),
        (b'{"result": "1/1", "student_id": 3, "lesson_title": "A\\u0000"}', "bad_lesson_title", None),
        (b"\t \r\r", "empty_line", None),
        (b"", "empty_line", None),
        (LESSON + b"}\r\r", None, (3, 2, None)),
        (b'"\\u0000"', "not_an_object", None),
    ],
)
def test_strict_rule_edge_cases(line: bytes, reason: str | None, fields: tuple[object, ...] | None) -> None:
    """Each edge case the README writes down, decided the same by the parse and the naive model."""
    parsed = _parsed([line])[0]
    assert parsed[0] == reason
    if fields is not None:
        assert parsed[1:4] == fields
    assert parsed == _naive([line])[0]


def test_summary_orders_mappings_by_first_sight_and_dedupes() -> None:
    log = b"".join(
        line + b"\n"
        for line in [
            b'{"result": "1/1", "student_id", 1, "lesson_id": 2, "lesson_title": "B"}',
            b'{"result": "1/1", "student_id", 1, "lesson_id": 1, "lesson_title": "A"}',
            b'{"result": "0/1", "student_id", 2, "lesson_id": 2, "lesson_title": "B"}',
            b'{"result": "1 out of 1", "student_id", 1, "lesson_id": "2"}',
            b'{"result": "3/3", "student_id", 5, "lesson_title": "C"}',
            b'{"result": "3/3", "student_id", 5, "lesson_title": "C"}',
        ]
    )
    delta = summarise_runs(parse_runs(split_lines(log, 0, "t.log")))
    assert delta.mappings.to_pylist() == [
        {"lesson_id": 2, "lesson_title": "B", "file": "t.log", "offset": 0},
        {"lesson_id": 1, "lesson_title": "A", "file": "t.log", "offset": 72},
    ]
    assert sorted(delta.completions.to_pylist(), key=str) == sorted(
        [{"student_id": 1, "lesson_id": 2}, {"student_id": 1, "lesson_id": 1}], key=str
    )
    assert delta.title_completions.to_pylist() == [{"student_id": 5, "lesson_title": "C"}]
    assert delta.lines == 6


@pytest.mark.parametrize(
    "line",
    [
        b'{"result": "1/1", "student_id", 012, "lesson_id": 1}',
        b'{"result": "1/1", "student_id", "12, "lesson_id": 1}',
        b'{"result": "1/1", "student_id", 12", "lesson_id": 1}',
        b'{"result": "1/1", "student_id", 0, "lesson_id": 1}',
        b'{"result": "1/1", "student_id", 7, "lesson_id": 00}',
        b'{"result": "1/1", "student_id", 7, "lesson_id": "007"}',
        b'{"result": "1/1", "student_id", 7, "lesson_title": "a\\"b"}',
        b'{"result": "1/1", "student_id", 7, "lesson_title": "tab\there"}',
        b'{"result": "1/1", "student_id", 7, "lesson_title": "\\u00e9t\\u00e9"}',
        b'{"result": "1/1", "student_id", 7, "lesson_title": "   "}',
        b'{"result": "01/1", "student_id", 7, "lesson_id": 1}',
        b'{"result": "1/1", "student_id", 1234567890123456789, "lesson_id": 1}',
        b'{"result": "1/1", "student_id", 7, "lesson_id": 1, "lesson_title": "A"}\r',
        b'{"result": "1/1", "student_id": 7, "lesson_id": 1}}',
    ],
)
def test_canonical_look_alikes_agree_with_the_reference(line: bytes) -> None:
    """Lines one character away from the upstream's shape must not slip through its fast path."""
    assert _parsed([line]) == _naive([line])


@settings(max_examples=60, deadline=None)
@given(st.lists(lines(), min_size=1, max_size=40), st.data())
def test_partial_summaries_merge_into_the_summary_of_the_whole(
    raw_lines: list[bytes], data: st.DataObject
) -> None:
    """What Spark does: each partition summarises its byte range, the driver merges."""
    buf = b"".join(line + b"\n" for line in raw_lines)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(raw_lines)), max_size=4))))
    bounds = [0, *cuts, len(raw_lines)]
    parts, offset = [], 0
    for a, b in itertools.pairwise(bounds):
        chunk = b"".join(line + b"\n" for line in raw_lines[a:b])
        parts.append(delta_to_arrow(summarise_runs(parse_runs(split_lines(chunk, offset, "t.log")))))
        offset += len(chunk)
    merged = delta_from_arrow(pa.concat_tables(parts))
    whole = summarise_runs(parse_runs(split_lines(buf, 0, "t.log")))

    def rows(table: pa.Table) -> list[str]:
        return sorted(map(str, table.to_pylist()))

    assert merged.mappings.to_pylist() == whole.mappings.to_pylist()
    assert rows(merged.completions) == rows(whole.completions)
    assert rows(merged.title_completions) == rows(whole.title_completions)
    assert rows(merged.rejects) == rows(whole.rejects)
    assert merged.lines == whole.lines == len(raw_lines)


def _delta_rows(delta: RunsDelta) -> tuple[object, ...]:
    def rows(table: pa.Table) -> list[str]:
        return sorted(map(str, table.to_pylist()))

    return (
        delta.mappings.to_pylist(),
        rows(delta.completions),
        rows(delta.title_completions),
        rows(delta.rejects),
        delta.lines,
        [t.schema for t in (delta.mappings, delta.completions, delta.title_completions, delta.rejects)],
    )


@st.composite
def plausible_lines(draw: st.DrawFn) -> bytes:
    """A valid line of few students, lessons and titles: completions, repeats and mappings are common."""
    total = draw(st.integers(min_value=1, max_value=3))
    doc: dict[str, object] = {
        "result": f"{draw(st.integers(min_value=total - 1, max_value=total))}/{total}",
        "student_id": draw(st.integers(min_value=1, max_value=4)),
    }
    lesson = draw(st.sampled_from(["id", "title", "both"]))
    if lesson != "title":
        doc["lesson_id"] = draw(st.integers(min_value=1, max_value=3))
    if lesson != "id":
        doc["lesson_title"] = draw(st.sampled_from(["Fetch Lab", "Use Fetch", "Zoë"]))
    return json.dumps(doc).encode()


@pytest.mark.parametrize("summary", [summarise_lines, summarise_judged, summarise_vectorised])
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw_lines=st.lists(st.one_of(lines(), plausible_lines()), max_size=40))
def test_the_hot_path_summary_equals_the_summary_of_every_row(
    summary: Callable[[pa.Table], RunsDelta], raw_lines: list[bytes]
) -> None:
    """What the engines call (either way) is summarise_runs(parse_runs(...)), empty input too."""
    batch = split_lines(b"".join(line + b"\n" for line in raw_lines), 7, "t.log")
    assert _delta_rows(summary(as_raw(batch))) == _delta_rows(summarise_runs(parse_runs(batch)))


@pytest.mark.parametrize("newline", [b"\n", b""])
def test_the_limit_is_exact_with_or_without_the_newline(newline: bytes) -> None:
    head = b'{"result": "1/1", "student_id", 3, "lesson_title": "'
    at_limit = head + b"a" * (LINE_LIMIT - len(head) - 2) + b'"}'
    over = head + b"a" * (LINE_LIMIT - len(head) - 1) + b'"}'
    lines = pa.array([at_limit + newline, over + newline], pa.large_binary())
    batch = pa.table({"file": ["f", "f"], "offset": [0, 1], "line": lines})
    assert parse_runs(batch).column("reason").to_pylist() == [None, "line_too_long"]


def test_a_sliced_batch_parses_like_its_lines() -> None:
    """Arrow slices (offset != 0), as Spark and Arrow hand them over, with undecodable lines in them."""
    raw_lines = [b'{"result": "1/1", "student_id", 3, "lesson_id": 2}', b"\xff", b'{"a": 1}', b"x\xc3"] * 5
    batch = split_lines(b"".join(line + b"\n" for line in raw_lines), 0, "t.log")
    sliced = batch.slice(3, 13)
    assert _parsed_rows_of(sliced) == _naive(raw_lines[3:16])
    text = decoded(batch.column("line").slice(3, 13))  # an offset Arrow array, directly
    assert text.to_pylist() == [
        None if b"\xff" in line or b"\xc3" in line else line.decode() + "\n" for line in raw_lines[3:16]
    ]


def _parsed_rows_of(batch: pa.RecordBatch) -> list[tuple[object, ...]]:
    return [
        (r["reason"], r["student_id"], r["lesson_id"], r["lesson_title"], r["passed"], r["total"])
        for r in parse_runs(batch).to_pylist()
    ]
