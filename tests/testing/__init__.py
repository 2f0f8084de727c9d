"""Tests of `cohortflow.testing` and of the services the suite runs for real."""
