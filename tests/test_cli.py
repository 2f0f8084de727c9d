"""Meta-tests of the command line: every command documents itself."""

import click
import pytest
from click.testing import CliRunner

from cohortflow.cli import main


def _commands() -> list[str]:
    return sorted(main.commands)


@pytest.mark.parametrize("name", _commands())
def test_every_command_has_help_text(name: str) -> None:
    command = main.commands[name]
    assert command.help and command.help.strip(), f"`cohortflow {name}` has no help text"
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert param.help, f"`cohortflow {name} {param.opts[0]}` has no help text"
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert "0.1.0" in result.output
