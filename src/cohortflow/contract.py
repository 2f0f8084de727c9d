"""The data contract shared by the sources and the simulator, and nothing more.

All source timestamps are UTC. ``students.created_at`` and batch
``created_at`` are ``YYYY-MM-DD HH:MM:SS.ffffff``; the batch API's ``after``
parameter is ``YYYY-MM-DDTHH:MM:SS.SSS``.
"""

from datetime import UTC, datetime

STUDENTS_TABLE_DDL = (
    "CREATE TABLE IF NOT EXISTS students ("
    "id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, "
    "batch_id INTEGER NOT NULL, created_at DATETIME NOT NULL)"
)
BATCH_PAGE_LIMIT = 100
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
AFTER_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"
AFTER_FORMAT_HUMAN = "YYYY-MM-DDTHH:MM:SS.SSS"


def format_timestamp(moment: datetime) -> str:
    """Render a UTC instant as the sources store it (microseconds)."""
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> datetime:
    """Parse a source timestamp (space or ``T`` separated, up to microseconds) as UTC."""
    return datetime.fromisoformat(text.replace(" ", "T")).replace(tzinfo=UTC)


def format_after(moment: datetime) -> str:
    """Render an instant as the batch API's ``after`` parameter (milliseconds, truncated)."""
    return moment.astimezone(UTC).strftime(AFTER_FORMAT)[:-3]
