"""Helpers that tests and benchmarks share: real services, started and thrown away.

`pgserver.ThrowawayPostgres` runs a private PostgreSQL 15+ on a free loopback port.
Nothing here is imported by the pipeline itself.
"""
