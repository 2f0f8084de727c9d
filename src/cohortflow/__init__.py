"""cohortflow: exactly-once streaming analytics for a coding school.

Three sources (a students SQLite table, a batch HTTP API, a test-run log) flow
through one parse and one warehouse apply into `batches` and `students` tables.
"""

__version__ = "0.1.0"
