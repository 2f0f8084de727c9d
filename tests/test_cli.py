"""Meta-tests of the command line: every command documents itself."""

import subprocess
import sys
from pathlib import Path

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


def test_spark_engine_without_the_extra_says_what_to_install(tmp_path: Path) -> None:
    code = "import sys; sys.modules['pyspark'] = None; from cohortflow.cli import main; main()"
    run = ["run", "--engine", "spark", "--once", "--warehouse", str(tmp_path / "w.db")]
    done = subprocess.run(
        [sys.executable, "-c", code, *run], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "cohortflow: the spark engine needs an extra that is not installed: pip install 'cohortflow[spark]'"
    )
