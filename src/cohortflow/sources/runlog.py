"""The test-run log: read appended lines by newline-aligned byte offsets, across rotations.

The cursor names the file it reads by device + inode and by a hash of its
first bytes, plus a newline-aligned offset in it. The file is followed by that
identity, not by its name: when the log is rotated (renamed, a new file
created at the path) the old file is read to its end (held open, or found in
the same directory by inode after a restart) before the next one is started;
when it is copied and truncated in place, the rest is read from the copy
(found by its first bytes). What comes next is decided by `logfiles`: the
oldest non-empty file written after ours. The switch is committed with the
first lines of the new file, so the committed cursor always names one file.

A file that was replaced (not found anywhere under any name), or truncated or
rewritten in place with no copy to be found, is a `SourceReset`. (A new file
that reuses the inode and repeats our first bytes exactly cannot be told from
an append; reading on from the offset is then right for its content.) A
half-written last line is left for the next read, except in a rotated file
the writer has left: its unterminated tail is taken as its last line.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

import pyarrow as pa

from cohortflow.errors import ConfigError, SourceError, SourceReset
from cohortflow.parse import LINE_LIMIT, split_lines
from cohortflow.sources import logfiles
from cohortflow.sources.logcursor import LogChunk, LogCursor
from cohortflow.sources.logfiles import (
    LogFile,
    OpenFile,
    find_newline,
    head_sha,
    last_newline_end,
    opened,
)

OPEN_ATTEMPTS = 3
# A line without a newline in this many bytes is too long whatever follows: it is read
# as a stand-in of its first LINE_LIMIT + 1 bytes (the parse quarantines it as line_too_long).
_LINE_READ_LIMIT = LINE_LIMIT + 2

log = logging.getLogger(__name__)


class RunLog:
    """An append-only, possibly rotated log file read from a cursor."""

    __test__ = False  # not a pytest class, despite the name

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self.missing_since: float | None = None
        """Since when (epoch seconds) neither the log nor the file the cursor names can be found."""
        self._open: OpenFile | None = None

    @property
    def waiting(self) -> bool:
        """Whether the log is missing for now (follow mode waits for it)."""
        return self.missing_since is not None

    def close(self) -> None:
        """Let go of the file held open."""
        if self._open is not None:
            os.close(self._open.fd)
            self._open = None

    def check(self, *, once: bool) -> None:
        """Fail at once on a path that cannot work; with ``once``, also on a missing log."""
        directory = self.path.parent
        if not directory.is_dir():
            msg = f"the directory of `{self.name}` does not exist ({directory}); check --test-runs-log"
            raise ConfigError(msg)
        if self.path.is_dir():
            msg = f"`{self.name}` is a directory, not a log file; check --test-runs-log"
            raise ConfigError(msg)
        if once and not logfiles.scan(self.path):
            msg = f"`{self.name}` does not exist; check --test-runs-log (`run` without --once waits for it)"
            raise ConfigError(msg)

    def size(self) -> int:
        """Current size of the live file (0 when absent)."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def lag(self, cursor: LogCursor) -> int:
        """Bytes not read yet: the rest of the cursor's file and every file written after it."""
        files = logfiles.scan(self.path)
        current = logfiles.find(files, cursor.identity) if cursor.identity else None
        if current is None:
            return sum(f.size for f in files) - (cursor.offset if cursor.identity is None else 0)
        later = [f for f in files if f.order() > current.order()]
        return max(0, current.size - cursor.offset) + sum(f.size for f in later)

    def read(self, cursor: LogCursor, max_bytes: int) -> LogChunk | None:
        """Read complete lines after ``cursor``, at most about ``max_bytes``; None if nothing new."""
        located = self._locate(cursor)
        if located is None:
            return None
        opened, cursor = located
        chunk = self._read_open(opened, cursor, max_bytes)
        if chunk is not None or self._is_live(opened):
            return chunk
        return self._move_on(opened, cursor, max_bytes)

    def end(self) -> LogCursor:
        """The cursor just past the last complete line of the newest file (identity included)."""
        files = logfiles.scan(self.path)
        if not files:
            return LogCursor()
        with opened(files[-1].path) as fd:
            if fd is None:  # rotated while we looked: the next look will do
                return LogCursor(device=files[-1].device, inode=files[-1].inode)
            stat = os.fstat(fd)
            return self._advance(fd, stat, LogCursor(), last_newline_end(fd, 0, stat.st_size))

    def reached(self, cursor: LogCursor, end: LogCursor) -> bool:
        """Whether ``cursor`` is at or past ``end`` (taken earlier by :meth:`end`)."""
        if end.identity is None or cursor.identity == end.identity:
            return cursor.offset >= end.offset
        files = logfiles.scan(self.path)
        ours, theirs = logfiles.find(files, cursor.identity or (0, 0)), logfiles.find(files, end.identity)
        return ours is not None and theirs is not None and ours.order() > theirs.order()

    def aligned_end(self, cursor: LogCursor, max_bytes: int | None = None) -> LogCursor:
        """The cursor just past the last complete line within ``max_bytes`` after ``cursor``.

        Checks the file is still the one the cursor read (raises SourceReset otherwise). A
        drained rotated file gives the next file's cursor at offset 0 (no lines in between).
        """
        located = self._locate(cursor)
        if located is None:
            return cursor
        opened, cursor = located
        stat = os.fstat(opened.fd)
        limit = stat.st_size if max_bytes is None else min(stat.st_size, cursor.offset + max_bytes)
        end = last_newline_end(opened.fd, cursor.offset, limit)
        if end == cursor.offset and limit < stat.st_size:  # one line longer than the budget
            end = find_newline(opened.fd, limit, stat.st_size) or cursor.offset
        if end > cursor.offset:
            return self._advance(opened.fd, stat, cursor, end - cursor.offset)
        nxt = None if self._is_live(opened) else self._next_file(opened)
        return cursor if nxt is None else LogCursor(device=nxt.device, inode=nxt.inode)

    def cut_points(
        self, start: int, end: int, part_bytes: int, at: LogCursor | None = None
    ) -> list[tuple[int, int]]:
        """Split the complete lines in ``[start, end)`` into ranges of about ``part_bytes``.

        ``at`` names the file (by identity) when it may not be the live one.
        """
        ranges: list[tuple[int, int]] = []
        with self._opened_at(at) as fd:
            while start < end:
                cut = end if end - start <= part_bytes else find_newline(fd, start + part_bytes - 1, end)
                cut = cut or end
                ranges.append((start, cut))
                start = cut
        return ranges

    def read_range(
        self, start: int, end: int, max_bytes: int, at: LogCursor | None = None
    ) -> Iterator[pa.RecordBatch]:
        """The lines of a newline-aligned byte range, in batches of about ``max_bytes``."""
        with self._opened_at(at) as fd:
            while start < end:
                stop = last_newline_end(fd, start, min(end, start + max_bytes))
                if stop == start:  # one line longer than max_bytes: take it whole, or its stand-in
                    stop = find_newline(fd, start + max_bytes, end) or end
                    size = min(stop - start, _LINE_READ_LIMIT)
                    yield _lines(os.pread(fd, size, start), start, self.name)
                else:
                    yield split_lines(os.pread(fd, stop - start, start), start, self.name)
                start = stop

    @contextmanager
    def _opened_at(self, at: LogCursor | None) -> Iterator[int]:
        """The file holding the bytes ``at`` was read from; without ``at``, the live one.

        Found by identity, else as the copy a copytruncate made of it, under any log name.
        """
        if at is not None and at.identity is not None:
            found = logfiles.open_with_head(self.path, at.head_len, at.head_sha, prefer=at.identity)
            if found is None:
                self._reset(at, "the file being read is under no name in its directory any more")
            try:
                yield found.fd
            finally:
                os.close(found.fd)
            return
        with opened(self.path) as fd:
            if fd is None:
                msg = f"cannot read `{self.name}`: it does not exist"
                raise SourceError(msg)
            yield fd

    # -- which file, and is it still ours ---------------------------------------------------

    def _locate(self, cursor: LogCursor) -> tuple[OpenFile, LogCursor] | None:
        """The open file the cursor reads (after a copytruncate: the copy); None while missing."""
        if cursor.identity is None:
            opened = self._hold_oldest()
            if opened is None:
                return None
            return opened, LogCursor(device=opened.identity[0], inode=opened.identity[1])
        opened = self._hold(cursor.identity)
        if opened is None or not self._in_directory(opened):
            self._lost(cursor)
            return None
        stat = os.fstat(opened.fd)
        if stat.st_size >= cursor.offset and head_sha(opened.fd, cursor.head_len) == cursor.head_sha:
            return opened, cursor
        return self._copy_of(cursor, stat)

    def _lost(self, cursor: LogCursor) -> None:
        """The file we read is nowhere: a missing log is waited for, another one is a reset."""
        self.close()
        if not logfiles.scan(self.path):
            self._wait_for_it()
            return
        self._reset(cursor, "it was replaced by another file (ours is under no name in its directory)")

    def _copy_of(self, cursor: LogCursor, stat: os.stat_result) -> tuple[OpenFile, LogCursor]:
        """After copytruncate: the copy that starts with our first bytes, read on from our offset."""
        ours = (stat.st_dev, stat.st_ino)  # shrunk or rewritten: no longer what we read
        copy = logfiles.open_with_head(self.path, cursor.head_len, cursor.head_sha, besides=ours)
        if copy is None:
            what = (
                f"it shrank from {cursor.offset} to {stat.st_size} bytes"
                if stat.st_size < cursor.offset
                else "its first bytes changed (rewritten in place)"
            )
            self._reset(cursor, f"{what}, and no copy of it is in its directory")
        self.close()
        self._open = copy
        log.info("`%s` was copied and truncated; reading the rest from `%s`", self.name, copy.name)
        return copy, replace(cursor, device=copy.identity[0], inode=copy.identity[1])

    def _hold(self, identity: tuple[int, int]) -> OpenFile | None:
        """Open (or keep open) the file with this identity: at the path, or rotated beside it."""
        if self._open is not None and self._open.identity == identity:
            return self._open
        self.close()
        for _ in range(OPEN_ATTEMPTS):  # a rotation may rename it between our listing and our open
            for path in (self.path, *(f.path for f in logfiles.scan(self.path) if f.identity == identity)):
                opened = logfiles.open_if(path, identity)
                if opened is not None:
                    self._open = opened
                    self.missing_since = None
                    return opened
        return None

    def _hold_oldest(self) -> OpenFile | None:
        files = [f for f in logfiles.scan(self.path) if f.size > 0 or f.live]
        if not files:
            self._wait_for_it()
            return None
        return self._hold(files[0].identity)

    def _wait_for_it(self) -> None:
        if self.missing_since is None:  # the engine reports it (health: waiting)
            self.missing_since = time.time()

    def _in_directory(self, opened: OpenFile) -> bool:
        """Whether the file is the log or one of its rotated names (held open is not enough)."""
        for _ in range(OPEN_ATTEMPTS):  # a listing during a rotation's renames may miss it once
            if self._is_live(opened) or logfiles.find(logfiles.scan(self.path), opened.identity):
                return True
        return False

    def _is_live(self, opened: OpenFile) -> bool:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return False
        return (stat.st_dev, stat.st_ino) == opened.identity

    def _next_file(self, opened: OpenFile) -> LogFile | None:
        return logfiles.successor(logfiles.scan(self.path), self._as_listed(opened))

    def _as_listed(self, opened: OpenFile) -> LogFile:
        stat = os.fstat(opened.fd)
        return LogFile(
            Path(opened.name), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, live=False
        )

    # -- reading ----------------------------------------------------------------------------

    def _move_on(self, opened: OpenFile, cursor: LogCursor, max_bytes: int) -> LogChunk | None:
        """Our file was rotated and is drained: once the writer has moved on, follow it."""
        nxt = self._next_file(opened)
        if nxt is None or logfiles.same_start(opened.fd, nxt):
            return None  # nothing yet, or ours is a copy still being made of it (copytruncate)
        # The next file has other data, so the writer is done with ours: its size now is final.
        chunk = self._read_open(opened, cursor, max_bytes) or self._last_fragment(opened, cursor)
        if chunk is not None:
            return chunk
        ours = self._as_listed(opened)
        following = self._hold(nxt.identity)
        if following is None:
            return None
        chunk = self._read_open(following, LogCursor(device=nxt.device, inode=nxt.inode), max_bytes)
        again = logfiles.successor(logfiles.scan(self.path), ours)
        if again is None or again.identity != nxt.identity:
            return None  # a copytruncate came in between: the next file is that copy, not this
        log.info("`%s` was rotated; following on in `%s`", self.name, following.name)
        return chunk

    def _read_open(self, opened: OpenFile, cursor: LogCursor, max_bytes: int) -> LogChunk | None:
        chunk = self._read_at(opened, cursor, max_bytes)
        return chunk if chunk is None or self._intact(opened, cursor, chunk) else None

    def _intact(self, opened: OpenFile, cursor: LogCursor, chunk: LogChunk) -> bool:
        """Whether the file still is what we read (a copytruncate may land during a read).

        If not, the read is dropped; the next one finds the copy and reads it from there.
        """
        size = os.fstat(opened.fd).st_size
        return (
            size >= cursor.offset + chunk.consumed and head_sha(opened.fd, cursor.head_len) == cursor.head_sha
        )

    def _read_at(self, opened: OpenFile, cursor: LogCursor, max_bytes: int) -> LogChunk | None:
        fd = opened.fd
        stat = os.fstat(fd)
        available = stat.st_size - cursor.offset
        if available <= 0:
            return None
        data = os.pread(fd, min(available, max_bytes), cursor.offset)
        end = data.rfind(b"\n") + 1
        if end == 0 and len(data) < min(available, _LINE_READ_LIMIT):
            data = os.pread(fd, min(available, _LINE_READ_LIMIT), cursor.offset)
            end = data.rfind(b"\n") + 1
        if end:
            lines = split_lines(memoryview(data)[:end], cursor.offset, opened.name)  # no copy
            return LogChunk(lines, end, self._advance(fd, stat, cursor, end, data), opened.name)
        if len(data) < _LINE_READ_LIMIT:
            return None  # a half-written last line: wait for its newline
        line_end = find_newline(fd, cursor.offset + len(data), stat.st_size)
        if line_end is None:
            return None
        return self._oversized(opened, stat, cursor, data, line_end - cursor.offset)

    def _last_fragment(self, opened: OpenFile, cursor: LogCursor) -> LogChunk | None:
        """The unterminated tail of a file the writer left: its last line, as it will stay."""
        stat = os.fstat(opened.fd)
        size = stat.st_size - cursor.offset
        if size <= 0:
            return None
        data = os.pread(opened.fd, min(size, _LINE_READ_LIMIT), cursor.offset)
        if size >= _LINE_READ_LIMIT:
            return self._oversized(opened, stat, cursor, data, size)
        lines = split_lines(data + b"\n", cursor.offset, opened.name)
        chunk = LogChunk(lines, size, self._advance(opened.fd, stat, cursor, size, data), opened.name)
        return chunk if self._intact(opened, cursor, chunk) else None

    def _oversized(
        self, opened: OpenFile, stat: os.stat_result, cursor: LogCursor, data: bytes, consumed: int
    ) -> LogChunk:
        stand_in = _lines(data[:_LINE_READ_LIMIT], cursor.offset, opened.name)
        advanced = self._advance(opened.fd, stat, cursor, consumed)
        return LogChunk(stand_in, consumed, advanced, opened.name)

    def _advance(
        self, fd: int, stat: os.stat_result, cursor: LogCursor, consumed: int, data: bytes | None = None
    ) -> LogCursor:
        offset = cursor.offset + consumed
        head_len = min(offset, logfiles.HEAD_BYTES)
        same_file = cursor.identity == (stat.st_dev, stat.st_ino)
        if same_file and head_len == cursor.head_len:
            sha = cursor.head_sha
        elif cursor.offset == 0 and data is not None:  # the head is in what we read: hash that
            sha = hashlib.sha256(data[:head_len]).hexdigest()
        else:  # checked against a change meanwhile by `_intact`
            sha = head_sha(fd, head_len)
        return LogCursor(offset, stat.st_dev, stat.st_ino, head_len, sha)

    def _reset(self, cursor: LogCursor, what: str) -> NoReturn:
        raise SourceReset(self.name, f"{what} (we had read {cursor.offset} bytes of it)")


def _lines(data: bytes, offset: int, file: str) -> pa.RecordBatch:
    """One line (or its stand-in: the first LINE_LIMIT + 1 bytes) as a batch."""
    body = data.removesuffix(b"\n")[: LINE_LIMIT + 1]
    return split_lines(body + b"\n", offset, file)
