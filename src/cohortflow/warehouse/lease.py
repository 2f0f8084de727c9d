"""The SQLite writer lease: an ``flock`` on the database file itself, and its identity watch.

The lock is on the file's inode, so a symlink, a hard link, another spelling of
the path or a deleted side file cannot give a second writer. ``flock`` locks
are independent of the POSIX ``fcntl`` locks SQLite takes on the same file (on
local file systems; NFS emulates ``flock`` with ``fcntl``, so keep warehouses on
local disks).

One hazard shapes this module: closing ANY descriptor of a file drops every
POSIX lock the process holds on it, including SQLite's own. So the descriptor
we lock is opened once per inode and process and never closed (releasing the
lease is ``LOCK_UN``); a stat by path, never an open, is how we look at it again.
"""

from __future__ import annotations

import fcntl
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from cohortflow.errors import WarehouseGone, WarehouseLocked

Identity = tuple[int, int]  # (st_dev, st_ino)


@dataclass
class _Locked:
    fd: int
    holder: object | None = None


_OPEN: dict[Identity, _Locked] = {}  # one never-closed descriptor per inode, per process
_GUARD = threading.Lock()


def identity(path: Path) -> Identity:
    """The (device, inode) a path leads to now (symlinks followed)."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


class FileLease:
    """An exclusive ``flock`` on one database file, held by one owner in this process."""

    def __init__(self, path: Path, display: str) -> None:
        self.path = path
        self.display = display
        self.identity: Identity | None = None

    def take(self) -> None:
        """Lock the file the path leads to, or raise WarehouseLocked."""
        if self.identity is not None:
            return
        ident = identity(self.path)
        with _GUARD:
            entry = _OPEN.get(ident)
            if entry is not None and os.fstat(entry.fd).st_nlink == 0:
                os.close(entry.fd)  # a deleted file whose inode number came back: no SQLite lock lives on it
                entry = None
            if entry is None:
                entry = _OPEN[ident] = _Locked(os.open(self.path, os.O_RDONLY | os.O_CLOEXEC))
            if entry.holder is not None and entry.holder is not self:
                msg = f"another cohortflow pipeline in this process is writing to `{self.display}`"
                raise WarehouseLocked(msg)
            try:
                fcntl.flock(entry.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                msg = f"another cohortflow pipeline is writing to `{self.display}`"
                raise WarehouseLocked(msg) from exc
            entry.holder = self
        self.identity = ident

    def verify(self) -> None:
        """Raise WarehouseGone unless the path still leads to the file we hold."""
        if self.identity is None:
            return
        try:
            now = identity(self.path)
        except FileNotFoundError:
            now = None
        if now != self.identity:
            what = "deleted" if now is None else "replaced by another file"
            msg = f"warehouse `{self.display}` was {what} while this pipeline wrote to it"
            raise WarehouseGone(msg)

    def release(self) -> None:
        """Unlock (the descriptor stays open: see the module docstring)."""
        ident, self.identity = self.identity, None
        if ident is None:
            return
        with _GUARD:
            entry = _OPEN.get(ident)
            if entry is not None and entry.holder is self:
                fcntl.flock(entry.fd, fcntl.LOCK_UN)
                entry.holder = None
