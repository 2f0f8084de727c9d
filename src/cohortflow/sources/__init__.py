"""Incremental readers of the three upstream sources, each with a typed cursor."""

from cohortflow.sources.batches import BatchApi, BatchesCursor
from cohortflow.sources.students import StudentsCursor, StudentsTable
from cohortflow.sources.test_runs import LogCursor, TestRunLog

__all__ = [
    "BatchApi",
    "BatchesCursor",
    "LogCursor",
    "StudentsCursor",
    "StudentsTable",
    "TestRunLog",
]
