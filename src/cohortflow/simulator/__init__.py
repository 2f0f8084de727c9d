"""The simulated upstream: students writer, batch API server, test-run log writer.

It shares nothing with the pipeline but the data contract (`cohortflow.contract`).
"""
