"""The test-run log: read appended lines by newline-aligned byte offsets.

The cursor names the file by device + inode and by a hash of its first bytes,
so a file that was replaced, truncated or rewritten in place is noticed
instead of being read from a stale offset. (A new file that reuses the inode
and repeats our first bytes exactly cannot be told from an append; reading on
from the offset is then right for its content.) A half-written last line is
left for the next read.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from cohortflow.errors import SourceError, SourceReset
from cohortflow.parse import LINE_LIMIT, split_lines

HEAD_BYTES = 4096
# A line without a newline in this many bytes is too long whatever follows: it is read
# as a stand-in of its first LINE_LIMIT + 1 bytes (the parse quarantines it as line_too_long).
_LINE_READ_LIMIT = LINE_LIMIT + 2


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


@dataclass(frozen=True)
class LogChunk:
    """Complete lines read in one go, and the cursor just past them.

    A line too long to hold is cut to a stand-in of ``LINE_LIMIT + 1`` bytes,
    still too long for the parse, which quarantines it as ``line_too_long``.
    """

    lines: pa.RecordBatch
    consumed: int
    cursor: LogCursor


class RunLog:
    """An append-only log file read from a cursor."""

    __test__ = False  # not a pytest class, despite the name

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.name = str(self.path)

    def size(self) -> int:
        """Current size of the file (0 when absent)."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def read(self, cursor: LogCursor, max_bytes: int) -> LogChunk | None:
        """Read complete lines after ``cursor``, at most about ``max_bytes``; None if nothing new."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            if cursor.offset > 0:
                self._reset(cursor, "it no longer exists")
            return None
        except OSError as exc:
            msg = f"cannot read `{self.name}`: {exc.strerror}"
            raise SourceError(msg) from exc
        try:
            return self._read_open(fd, cursor, max_bytes)
        finally:
            os.close(fd)

    def aligned_end(self, cursor: LogCursor, max_bytes: int | None = None) -> LogCursor:
        """The cursor just past the last complete line within ``max_bytes`` after ``cursor``.

        Checks the file is still the one the cursor read (raises SourceReset otherwise).
        """
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            if cursor.offset > 0:
                self._reset(cursor, "it no longer exists")
            return cursor
        try:
            stat = os.fstat(fd)
            self._check_identity(fd, stat, cursor)
            limit = stat.st_size if max_bytes is None else min(stat.st_size, cursor.offset + max_bytes)
            end = _last_newline_end(fd, cursor.offset, limit)
            if end == cursor.offset and limit < stat.st_size:  # one line longer than the budget
                end = _find_newline(fd, limit, stat.st_size) or cursor.offset
            return self._advance(fd, stat, cursor, end - cursor.offset) if end > cursor.offset else cursor
        finally:
            os.close(fd)

    def cut_points(self, start: int, end: int, part_bytes: int) -> list[tuple[int, int]]:
        """Split the complete lines in ``[start, end)`` into ranges of about ``part_bytes``."""
        ranges: list[tuple[int, int]] = []
        fd = os.open(self.path, os.O_RDONLY)
        try:
            while start < end:
                cut = end if end - start <= part_bytes else _find_newline(fd, start + part_bytes - 1, end)
                cut = cut or end
                ranges.append((start, cut))
                start = cut
        finally:
            os.close(fd)
        return ranges

    def read_range(self, start: int, end: int, max_bytes: int) -> Iterator[pa.RecordBatch]:
        """The lines of a newline-aligned byte range, in batches of about ``max_bytes``."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            while start < end:
                stop = _last_newline_end(fd, start, min(end, start + max_bytes))
                if stop == start:  # one line longer than max_bytes: take it whole, or its stand-in
                    stop = _find_newline(fd, start + max_bytes, end) or end
                    size = min(stop - start, _LINE_READ_LIMIT)
                    yield _lines(os.pread(fd, size, start), start, self.name)
                else:
                    yield split_lines(os.pread(fd, stop - start, start), start, self.name)
                start = stop
        finally:
            os.close(fd)

    def _read_open(self, fd: int, cursor: LogCursor, max_bytes: int) -> LogChunk | None:
        stat = os.fstat(fd)
        self._check_identity(fd, stat, cursor)
        available = stat.st_size - cursor.offset
        if available <= 0:
            return None
        data = os.pread(fd, min(available, max_bytes), cursor.offset)
        end = data.rfind(b"\n") + 1
        if end == 0 and len(data) < min(available, _LINE_READ_LIMIT):
            data = os.pread(fd, min(available, _LINE_READ_LIMIT), cursor.offset)
            end = data.rfind(b"\n") + 1
        if end:
            lines = split_lines(memoryview(data)[:end], cursor.offset, self.name)  # no copy
            return LogChunk(lines, end, self._advance(fd, stat, cursor, end))
        if len(data) < _LINE_READ_LIMIT:
            return None  # a half-written last line: wait for its newline
        line_end = _find_newline(fd, cursor.offset + len(data), stat.st_size)
        if line_end is None:
            return None
        consumed = line_end - cursor.offset
        stand_in = _lines(data[:_LINE_READ_LIMIT], cursor.offset, self.name)
        return LogChunk(stand_in, consumed, self._advance(fd, stat, cursor, consumed))

    def _check_identity(self, fd: int, stat: os.stat_result, cursor: LogCursor) -> None:
        if cursor.inode is None:
            return
        if (stat.st_dev, stat.st_ino) != (cursor.device, cursor.inode):
            self._reset(cursor, "it was replaced by another file")
        if stat.st_size < cursor.offset:
            self._reset(cursor, f"it shrank from {cursor.offset} to {stat.st_size} bytes")
        if _head_sha(fd, cursor.head_len) != cursor.head_sha:
            self._reset(cursor, "its first bytes changed (rewritten in place)")

    def _advance(self, fd: int, stat: os.stat_result, cursor: LogCursor, consumed: int) -> LogCursor:
        offset = cursor.offset + consumed
        head_len = min(offset, HEAD_BYTES)
        head_sha = cursor.head_sha if head_len == cursor.head_len else _head_sha(fd, head_len)
        return replace(
            cursor,
            offset=offset,
            device=stat.st_dev,
            inode=stat.st_ino,
            head_len=head_len,
            head_sha=head_sha,
        )

    def _reset(self, cursor: LogCursor, what: str) -> None:
        raise SourceReset(self.name, f"{what} (we had read {cursor.offset} bytes of it)")


def _lines(data: bytes, offset: int, file: str) -> pa.RecordBatch:
    """One line (or its stand-in: the first LINE_LIMIT + 1 bytes) as a batch."""
    body = data.removesuffix(b"\n")[: LINE_LIMIT + 1]
    return split_lines(body + b"\n", offset, file)


def _head_sha(fd: int, length: int) -> str:
    return hashlib.sha256(os.pread(fd, length, 0)).hexdigest() if length else ""


def _find_newline(fd: int, position: int, size: int) -> int | None:
    """Offset just past the next newline at or after ``position``, if the file has one."""
    while position < size:
        block = os.pread(fd, 1 << 20, position)
        newline = block.find(b"\n")
        if newline >= 0:
            return position + newline + 1
        position += len(block)
    return None


def _last_newline_end(fd: int, low: int, high: int) -> int:
    """Offset just past the last newline in ``[low, high)``; ``low`` when there is none."""
    position = high
    while position > low:
        begin = max(low, position - (1 << 20))
        newline = os.pread(fd, position - begin, begin).rfind(b"\n")
        if newline >= 0:
            return begin + newline + 1
        position = begin
    return low
