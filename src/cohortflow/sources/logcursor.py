"""Where the test-run log was read up to (committed with the data), and what one read returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa


@dataclass(frozen=True)
class LogCursor:
    """Where the log was read up to, and which file that offset belongs to."""

    offset: int = 0
    device: int | None = None
    inode: int | None = None
    head_len: int = 0
    head_sha: str = ""

    def to_json(self) -> dict[str, Any]:
        """Plain JSON for pipeline_state."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> LogCursor:
        """Rebuild from pipeline_state (None means: from the start)."""
        return cls(**data) if data else cls()

    @property
    def identity(self) -> tuple[int, int] | None:
        """Device and inode of the file this cursor reads, once it reads one."""
        return None if self.device is None or self.inode is None else (self.device, self.inode)


@dataclass(frozen=True)
class LogChunk:
    """Complete lines read in one go, and the cursor just past them.

    A line too long to hold is cut to a stand-in of ``LINE_LIMIT + 1`` bytes,
    still too long for the parse, which quarantines it as ``line_too_long``.
    ``file`` is the name the lines were read under (a rotated file's own name).
    """

    lines: pa.RecordBatch
    consumed: int
    cursor: LogCursor
    file: str = ""
