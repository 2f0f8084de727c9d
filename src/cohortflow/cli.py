"""The `cohortflow` command line: parse options, call the library, report errors.

No logic lives here: each command forwards to a library function. Our own
exceptions become one red line on stderr and exit status 1.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from cohortflow.errors import CohortflowError


class _Group(click.Group):
    """A click group that turns CohortflowError into one readable line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CohortflowError as exc:
            click.secho(f"cohortflow: {exc}", fg="red", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cohortflow")
def main() -> None:
    """Exactly-once streaming analytics for a coding school's test runs."""


def _load_commands() -> None:
    from cohortflow.simulator.commands import generate, reset

    for command in (generate, reset):
        main.add_command(command)


_load_commands()
