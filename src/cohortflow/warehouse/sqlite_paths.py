"""What a SQLite warehouse path must be, checked before SQLite sees it (one clear line each).

SQLite itself says only "unable to open database file" for most of these.
``sqlite://`` URLs follow the file-URL rule: the path after the authority is
absolute, so ``sqlite:///tmp/x.db`` is ``/tmp/x.db`` (SQLAlchemy's four-slash
``sqlite:////tmp/x.db`` means the same); a relative path is written plainly.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from cohortflow.errors import ConfigError, WarehouseError


def path_of_url(url: str) -> Path:
    """The file a ``sqlite:///…`` URL names (always absolute)."""
    parts = urlsplit(url)
    if not url.startswith("sqlite:///") or not parts.path.strip("/"):
        msg = (
            f"--warehouse `{url}` is not a SQLite URL we understand: write sqlite:///absolute/path.db "
            "(three slashes, then the absolute path) or a plain file path"
        )
        raise ConfigError(msg)
    return Path("/" + unquote(parts.path).lstrip("/"))


def check_writable(path: Path) -> None:
    """Refuse, with what to do, a path the pipeline could not create or write a warehouse at."""
    if path.is_dir():
        msg = f"--warehouse `{path}` is a directory: give a file path such as `{path}/warehouse.db`"
        raise ConfigError(msg)
    parent = _nearest_existing(path.parent)
    if not parent.is_dir():
        msg = f"--warehouse `{path}`: `{parent}` is a file, not a directory; pick another path"
        raise ConfigError(msg)
    if os.statvfs(parent).f_flag & os.ST_RDONLY:
        msg = (
            f"--warehouse `{path}` is on a read-only file system: remount it read-write or pick another path"
        )
        raise ConfigError(msg)
    if not os.access(parent, os.W_OK | os.X_OK):
        what = "create the warehouse in it" if parent != path.parent else "write the WAL beside the file"
        msg = (
            f"--warehouse `{path}`: directory `{parent}` is not writable, cannot {what}; "
            "fix its permissions or pick another path"
        )
        raise ConfigError(msg)
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        msg = f"--warehouse `{path}` is read-only for this user: `chmod u+rw {path}` or use another path"
        raise ConfigError(msg)


def check_readable(path: Path) -> None:
    """Refuse a path a reader (report, status) cannot open."""
    if path.is_dir():
        msg = f"--warehouse `{path}` is a directory, not a warehouse file"
        raise ConfigError(msg)
    if not path.exists():  # not yet, rather than wrong: a WarehouseError, as SQLite's own would be
        msg = f"there is no warehouse at `{path}` yet: run `cohortflow run` first"
        raise WarehouseError(msg)
    if not os.access(path, os.R_OK):
        msg = f"--warehouse `{path}` is not readable for this user: fix its permissions"
        raise ConfigError(msg)


def _nearest_existing(directory: Path) -> Path:
    """The directory itself or the closest ancestor that exists (mkdir -p starts there)."""
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    return directory
