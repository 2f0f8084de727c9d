r"""The one rule for text a warehouse cannot hold, the same on SQLite and PostgreSQL.

PostgreSQL text cannot contain U+0000, and neither backend can encode a lone
UTF-16 surrogate (which a JSON ``\ud800`` escape yields). Each such code point
in a name, title, location or quarantined raw text is stored as U+FFFD; the
number of values changed is added up in ``pipeline_state`` under
:data:`REPLACED_KEY`, which ``cohortflow status`` shows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

REPLACEMENT = "\ufffd"
REPLACED_KEY = "meta:text_values_replaced"
_UNHOLDABLE = re.compile("[\x00\ud800-\udfff]")


class TextRule:
    """Applies the rule and counts the values it changed."""

    def __init__(self) -> None:
        self.replaced = 0

    def value(self, text: str) -> str:
        """One Python string, made storable."""
        fixed, n = _UNHOLDABLE.subn(REPLACEMENT, text)
        self.replaced += n > 0
        return fixed

    def holds(self, texts: Iterable[str]) -> bool:
        """Whether every one of ``texts`` is storable as it is (one scan for a whole page)."""
        return _UNHOLDABLE.search("\n".join(texts)) is None

    def column(self, column: Any) -> Any:
        """One Arrow column: strings made storable (Arrow text is valid UTF-8, so only NUL)."""
        if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
            return column
        hits = pc.sum(pc.match_substring(column, "\x00")).as_py() or 0
        if not hits:
            return column
        self.replaced += hits
        return pc.replace_substring(column, "\x00", REPLACEMENT)
