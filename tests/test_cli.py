"""Meta-tests of the command line: every command documents itself."""

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cohortflow.cli import _config, main
from cohortflow.options import DEFAULTS, FIELDS, envvar

README = Path(__file__).resolve().parents[1] / "README.md"


def _commands() -> list[str]:
    return sorted(main.commands)


def test_the_group_has_help_text() -> None:
    assert main.help and main.help.strip()
    assert CliRunner().invoke(main, ["--help"]).exit_code == 0


@pytest.mark.parametrize("name", _commands())
def test_every_command_has_help_text(name: str) -> None:
    command = main.commands[name]
    assert command.help and command.help.strip(), f"`cohortflow {name}` has no help text"
    for param in command.params:
        assert isinstance(param, click.Option), f"`cohortflow {name}`: document {param.name} as an option"
        if not param.hidden:
            assert param.help and param.help.strip(), f"`cohortflow {name} {param.opts[0]}` has no help text"
            assert not param.envvar or param.show_envvar, f"`{name} {param.opts[0]}`: show its env var"
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("name", ["run", "status", "report", "demo"])
def test_options_of_config_fields_take_the_config_default_and_env_var(name: str) -> None:
    fields = [p for p in main.commands[name].params if p.name in FIELDS]
    assert fields
    for param in fields:
        assert param.default == getattr(DEFAULTS, param.name), param.name
        assert param.envvar == envvar(param.name), param.name


def test_run_has_an_option_for_every_setting_the_readme_lists() -> None:
    help_text = CliRunner().invoke(main, ["run", "--help"], terminal_width=200).output
    listed = re.findall(r"`(COHORTFLOW_[A-Z_]+)`", README.read_text())
    assert len(listed) >= 9
    for name in listed:
        assert name in help_text, f"`run --help` does not show {name}"


def test_config_refuses_unknown_settings() -> None:
    with pytest.raises(TypeError):
        _config(warehouse="w.db", commit_every="1s")


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
