"""CLI commands of the simulator (placeholder until the simulator lands)."""

import click


@click.command()
def generate() -> None:
    """Write the simulated sources (students.db, test_runs.log) and serve the batch API."""
    msg = "the simulator is not built yet"
    raise click.ClickException(msg)


@click.command()
def reset() -> None:
    """Delete all generated data in the data directory."""
    msg = "the simulator is not built yet"
    raise click.ClickException(msg)
