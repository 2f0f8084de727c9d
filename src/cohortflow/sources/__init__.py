"""Incremental readers of the three upstream sources, each with a typed cursor."""

from cohortflow.sources.batches import BatchApi, BatchesCursor
from cohortflow.sources.logcursor import LogCursor
from cohortflow.sources.runlog import RunLog
from cohortflow.sources.students import StudentsCursor, StudentsTable

__all__ = [
    "BatchApi",
    "BatchesCursor",
    "LogCursor",
    "RunLog",
    "StudentsCursor",
    "StudentsTable",
]
