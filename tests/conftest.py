"""Shared fixtures: real PostgreSQL (tests.support.pg) and connection hygiene."""

pytest_plugins = ["tests.support.pg"]
