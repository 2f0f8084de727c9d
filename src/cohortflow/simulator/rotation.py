"""Log rotation as logrotate does it, on demand: ``--rotate-every`` and ``--rotate-style``.

``rename``: shift ``test_runs.log.N`` to ``.N+1``, rename the log to ``.1`` and
reopen a new, empty log at the path. ``copytruncate``: shift, copy the log to
``.1`` and truncate it in place (the writer keeps its ``O_APPEND`` descriptor).
Rotation happens between bursts, so every file ends at a newline and no line
falls between the copy and the truncate.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from cohortflow.errors import ConfigError

STYLES = ("rename", "copytruncate")
_EVERY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|s|ms)?\s*$", re.IGNORECASE)
_BYTES = {"b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20}


@dataclass(frozen=True)
class RotatePolicy:
    """When (a size or an age of the current log) and how to rotate."""

    every_bytes: int | None = None
    every_seconds: float | None = None
    style: str = "rename"

    @classmethod
    def parse(cls, every: str | None, style: str) -> RotatePolicy | None:
        """``--rotate-every`` (``65536``, ``64k``, ``1m``, ``2s``, ``500ms``) and ``--rotate-style``."""
        if every is None:
            return None
        match = _EVERY.match(every)
        if match is None or float(match.group(1)) <= 0:
            msg = f"--rotate-every {every!r}: expected a size (65536, 64k, 1m) or a time (2s, 500ms) > 0"
            raise ConfigError(msg)
        if style not in STYLES:
            msg = f"--rotate-style {style!r}: expected one of {', '.join(STYLES)}"
            raise ConfigError(msg)
        amount, unit = float(match.group(1)), (match.group(2) or "b").lower()
        if unit in ("s", "ms"):
            return cls(every_seconds=amount / (1000 if unit == "ms" else 1), style=style)
        return cls(every_bytes=max(1, int(amount * _BYTES[unit])), style=style)


def numbered(path: Path) -> list[Path]:
    """The rotated files ``path.1``, ``path.2``, … that exist, newest first."""
    found = [p for p in path.parent.glob(f"{path.name}.*") if p.suffix[1:].isdigit()]
    return sorted(found, key=lambda p: int(p.suffix[1:]))


def _shift(path: Path) -> Path:
    """Make room for a new ``.1`` (oldest first, so no name is overwritten); return it."""
    for old in reversed(numbered(path)):
        old.rename(path.with_name(f"{path.name}.{int(old.suffix[1:]) + 1}"))
    return path.with_name(f"{path.name}.1")


class Rotator:
    """Decides when the log is due and rotates it; the appender reopens when told to."""

    def __init__(self, path: Path, policy: RotatePolicy) -> None:
        self.path = path
        self.policy = policy
        self.rotations = 0
        self._since = time.monotonic()

    def due(self, fd: int) -> bool:
        """Whether the current log has reached its size or age."""
        policy = self.policy
        if policy.every_bytes is not None:
            return os.fstat(fd).st_size >= policy.every_bytes
        assert policy.every_seconds is not None
        return time.monotonic() - self._since >= policy.every_seconds

    def rotate(self) -> bool:
        """Rotate now; True when the writer must reopen the path (rename style)."""
        first = _shift(self.path)
        self.rotations += 1
        self._since = time.monotonic()
        if self.policy.style == "rename":
            self.path.rename(first)
            return True
        shutil.copyfile(self.path, first)
        os.truncate(self.path, 0)
        return False
