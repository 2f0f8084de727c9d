"""Safe text for humans and spreadsheets: what `report` and `status` print is never interpreted.

Names come from upstream sources we do not control. Printed, they must not
style the terminal (rich markup), drive it (escape sequences) or run in a
spreadsheet (formulas).
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from rich.console import Console

FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")
"""Cells starting with one of these run as formulas in spreadsheets (OWASP CSV injection)."""

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
"""One format for every timestamp we print: UTC, the sources' own ``created_at`` shape."""

_WIDE = 1 << 12  # piped output is not folded to 80 columns; no real line is this long


def escape_controls(text: str) -> str:
    r"""Show control characters (C0, DEL, C1) as ``\xNN`` escapes, so none reaches a terminal raw."""
    if text.isprintable():
        return text
    return "".join(f"\\x{ord(c):02x}" if unicodedata.category(c) == "Cc" else c for c in text)


def guard_formula(cell: str) -> str:
    """Prefix a cell a spreadsheet would run as a formula with ``'`` (the OWASP rule)."""
    return f"'{cell}" if cell.startswith(FORMULA_LEADS) else cell


def csv_cell(value: object, formula_guard: bool = True) -> object:
    r"""A value safe in a CSV cell: control characters as ``\xNN``, formulas guarded."""
    if not isinstance(value, str):
        return value
    text = escape_controls(value)
    return guard_formula(text) if formula_guard else text


def csv_text(rows: Iterable[Mapping[str, object]], columns: Sequence[str], formula_guard: bool = True) -> str:
    """Rows as CSV text with a header, every cell made safe by :func:`csv_cell`."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows({k: csv_cell(v, formula_guard) for k, v in row.items()} for row in rows)
    return out.getvalue()


def same_timestamp(value: str) -> str:
    """A stored timestamp (ISO 8601, naive means UTC) in :data:`TIMESTAMP_FORMAT`; others as is."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime(TIMESTAMP_FORMAT)


def output_console() -> Console:
    """A console for stdout that folds lines at the terminal's width, never when piped."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=_WIDE)
    return console
