"""SQLite's vouching for student rows never disagrees with the rule (`students._validate`)."""

from __future__ import annotations

import sqlite3
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from cohortflow.sources.students import SELECT_ROWS, _validate, validate_rows

BLANKS = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
texts = st.one_of(
    st.text(alphabet=st.sampled_from(BLANKS + "aZ9_é日 "), max_size=4),
    st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=6),  # SQLite holds no lone surrogate
)
times = st.one_of(
    st.just("2026-01-02 03:04:05.123456"),
    st.from_regex(r"\A[0-9٣]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,7})?Z?\Z"),
    texts,
)
values = st.one_of(st.none(), st.integers(-3, 10**12), st.floats(allow_nan=False), st.binary(max_size=3))


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.one_of(texts, values), st.one_of(st.integers(-2, 5), texts, values), st.one_of(times, values)
        ),
        max_size=12,
    )
)
@example(rows=[("Ann", 1, "2026-01-02 03:04:05.123456"), ("\u3000", 1, "2026-01-02 03:04:05.123456")])
def test_rows_sqlite_vouches_for_are_exactly_what_the_rule_accepts(rows: list[tuple[Any, Any, Any]]) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE students (id INTEGER PRIMARY KEY AUTOINCREMENT, name, batch_id, created_at)")
    conn.executemany("INSERT INTO students (name, batch_id, created_at) VALUES (?, ?, ?)", rows)
    read = conn.execute(f"{SELECT_ROWS} ORDER BY id").fetchall()
    for row in read:
        if row[4]:
            record, _ = _validate(row[:4])
            assert record is not None and tuple(record) == row[:4], row
    valid, rejects = validate_rows("s.db", read)
    expected = [_validate(row[:4]) for row in read]
    assert valid == [record for record, _ in expected if record is not None]
    assert [reason for _, _, reason in rejects] == [reason for record, reason in expected if record is None]
