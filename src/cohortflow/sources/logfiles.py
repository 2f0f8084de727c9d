"""The files of a rotated log, found in its directory: by identity, by head, in write order.

A log ``dir/test_runs.log`` is the live file at that path plus its rotated
predecessors in the same directory (``test_runs.log.1``, ``test_runs.log-20260101``;
compressed ones such as ``.2.gz`` cannot be read by offset and are skipped, and
other names such as ``.bak`` are not the log's). They are
ordered by when they were last written: the live file is the newest, the
rotated ones by modification time, and among equal times (file timestamps are
coarse, a few ms) a larger numeric suffix is older, as logrotate numbers them.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cohortflow.errors import SourceError

HEAD_BYTES = 4096  # how much of a file identifies it (its head hash)
EMPTY_SETTLE_NS = 2_000_000_000
"""An empty rotated file younger than this may be a copy still being made: wait for it."""
STABLE_SCANS = 50
"""Directory listings tried until two hold the same files: a listing taken while a rotation
renames ``.N`` to ``.N+1`` one by one can miss a file (seen neither under its old name nor
under its new one)."""


@dataclass(frozen=True)
class LogFile:
    """One file of the log as the directory showed it."""

    path: Path
    device: int
    inode: int
    size: int
    mtime_ns: int
    live: bool

    @property
    def identity(self) -> tuple[int, int]:
        """Device and inode: what names the file whatever it is called."""
        return (self.device, self.inode)

    def order(self) -> tuple[bool, int, tuple[int, int, str]]:
        """Sort key: oldest first, the live file last."""
        return (self.live, self.mtime_ns, _suffix_rank(self.path.name))


def _suffix_rank(name: str) -> tuple[int, int, str]:
    suffix = name.rsplit(".", 1)[-1] if "." in name else ""
    return (0, -int(suffix), "") if suffix.isdigit() else (1, 0, name)


_ROTATED_SUFFIX = re.compile(r"\.[0-9]+|-[0-9][0-9_.:T-]*")
"""logrotate's names: ``.1``, ``.2``… or ``dateext`` ones such as ``-20260101``, ``-2026-01-01.1``."""


def is_rotated_name(base: str, name: str) -> bool:
    """Whether ``name`` is a rotated file of the log ``base`` (not a backup, not compressed)."""
    return name.startswith(base) and _ROTATED_SUFFIX.fullmatch(name[len(base) :]) is not None


def scan(path: Path) -> list[LogFile]:
    """The live file and its rotated predecessors, oldest first (two agreeing listings)."""
    files = _scan_once(path)
    for _ in range(STABLE_SCANS):
        again = _scan_once(path)
        if _identities(again) == _identities(files):  # names shift and sizes grow meanwhile
            break
        files = again
        time.sleep(0.001)
    return sorted(again, key=LogFile.order)


def _identities(files: list[LogFile]) -> set[tuple[int, int]]:
    return {f.identity for f in files}


def _scan_once(path: Path) -> list[LogFile]:
    files = []
    try:
        entries = list(os.scandir(path.parent))
    except FileNotFoundError:
        return []
    for entry in sorted(entries, key=lambda e: e.name):
        if entry.name != path.name and not is_rotated_name(path.name, entry.name):
            continue
        try:
            st = entry.stat()
        except FileNotFoundError:
            continue  # renamed or deleted while we listed
        if entry.is_file():
            live = entry.name == path.name
            files.append(LogFile(Path(entry.path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, live))
    return files


def find(files: list[LogFile], identity: tuple[int, int]) -> LogFile | None:
    """The file with this device and inode, if the directory has it."""
    return next((f for f in files if f.identity == identity), None)


def head_sha(fd: int, length: int) -> str:
    """Hash of the first ``length`` bytes of an open file."""
    return hashlib.sha256(os.pread(fd, length, 0)).hexdigest() if length else ""


def open_with_head(
    path: Path,
    length: int,
    sha: str,
    prefer: tuple[int, int] | None = None,
    besides: tuple[int, int] | None = None,
) -> OpenFile | None:
    """Open the log's file that starts with the bytes hashed as ``sha`` (``prefer`` first).

    Else the newest that does, other than ``besides``; None if none does. Each file is checked through the
    descriptor then read: a rotation renames files between our listing and our opens,
    and a name checked is not always the file listed under it.
    """
    for _ in range(STABLE_SCANS):
        stale = False
        for listed in sorted(scan(path)[::-1], key=lambda f: f.identity != prefer):
            if listed.identity == besides:
                continue
            candidate = open_if(listed.path, listed.identity)
            if candidate is None:
                stale = True  # renamed since the listing: look again
            elif os.fstat(candidate.fd).st_size >= length and head_sha(candidate.fd, length) == sha:
                return candidate
            else:
                os.close(candidate.fd)
        if not stale:
            return None
    return None


def successor(files: list[LogFile], current: LogFile) -> LogFile | None:
    """The oldest non-empty file written after ``current``: where the writer went next.

    None while the next rotated file is empty and new: a copy (copytruncate) being made.
    """
    newer = [f for f in files if f.identity != current.identity and f.order() > current.order()]
    for candidate in newer:
        if candidate.size > 0:
            return candidate
        if not candidate.live and time.time_ns() - candidate.mtime_ns < EMPTY_SETTLE_NS:
            return None
    return None


@contextmanager
def opened(path: Path) -> Iterator[int | None]:
    """A read-only descriptor of ``path`` (None when it does not exist), closed after use."""
    fd = open_fd(path)
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def open_fd(path: Path) -> int | None:
    """A read-only descriptor of ``path``, None when it does not exist; the caller closes it."""
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        msg = f"cannot read `{path}`: {exc.strerror}"
        raise SourceError(msg) from exc


def find_newline(fd: int, position: int, size: int) -> int | None:
    """Offset just past the next newline at or after ``position``, if the file has one."""
    while position < size:
        block = os.pread(fd, 1 << 20, position)
        newline = block.find(b"\n")
        if newline >= 0:
            return position + newline + 1
        position += len(block)
    return None


def last_newline_end(fd: int, low: int, high: int) -> int:
    """Offset just past the last newline in ``[low, high)``; ``low`` when there is none."""
    position = high
    while position > low:
        begin = max(low, position - (1 << 20))
        newline = os.pread(fd, position - begin, begin).rfind(b"\n")
        if newline >= 0:
            return begin + newline + 1
        position = begin
    return low


@dataclass
class OpenFile:
    """The file the cursor reads, held open so a rename or an unlink cannot take it away."""

    fd: int
    identity: tuple[int, int]
    name: str


def same_start(fd: int, following: LogFile) -> bool:
    """Whether ``following`` starts with the same bytes as ours (as far as both go).

    Also True when its name now holds another file (renamed meanwhile): look again later.
    """
    other = open_if(following.path, following.identity)
    if other is None:
        return True
    try:
        length = min(HEAD_BYTES, os.fstat(fd).st_size, os.fstat(other.fd).st_size)
        return length > 0 and os.pread(fd, length, 0) == os.pread(other.fd, length, 0)
    finally:
        os.close(other.fd)


def open_if(path: Path, identity: tuple[int, int]) -> OpenFile | None:
    """Open ``path`` if it is (still) the file with this identity."""
    fd = open_fd(path)
    if fd is None:
        return None
    stat = os.fstat(fd)
    if (stat.st_dev, stat.st_ino) == identity:
        return OpenFile(fd, identity, str(path))
    os.close(fd)
    return None
