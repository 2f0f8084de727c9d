"""Click options built from `PipelineConfig`'s fields: one source of defaults and env var names.

    @config_option("students_db", help="Upstream students SQLite file (read only).")

gives ``--students-db`` with the dataclass's default, the ``COHORTFLOW_STUDENTS_DB``
environment variable (both shown in ``--help``) and a type fitted to the field.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import click

from cohortflow.config import PipelineConfig

F = TypeVar("F", bound=Callable[..., Any])

DEFAULTS = PipelineConfig()
_TYPES = typing.get_type_hints(PipelineConfig)
FIELDS = frozenset(field.name for field in dataclasses.fields(PipelineConfig))


def envvar(name: str) -> str:
    """The environment variable that sets the config field ``name``."""
    return f"COHORTFLOW_{name.upper()}"


def flag(name: str) -> str:
    """The command-line flag of the config field ``name``."""
    return "--" + name.replace("_", "-")


def config_option(name: str, **overrides: Any) -> Callable[[F], F]:
    """A click option for the config field ``name``; ``overrides`` (help, type, ...) win."""
    if name not in FIELDS:
        msg = f"PipelineConfig has no field {name!r}"
        raise ValueError(msg)
    default = getattr(DEFAULTS, name)
    settings: dict[str, Any] = {
        "default": default,
        "envvar": envvar(name),
        "show_default": True,
        "show_envvar": True,
    }
    kind = _TYPES[name]
    if isinstance(default, bool):
        settings["is_flag"] = True
    elif isinstance(default, Path):
        settings["type"] = click.Path(path_type=Path)
    elif typing.get_origin(kind) is Literal:
        settings["type"] = click.Choice(typing.get_args(kind))
    settings.update(overrides)
    return click.option(flag(name), name, **settings)
