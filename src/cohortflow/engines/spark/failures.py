"""Our errors across the JVM, and a failed query reduced to one line.

A reader that runs in a Spark Python worker cannot hand the driver a Python
exception: the JVM turns it into text inside a py4j error chain. So readers
raise :class:`CarriedError`, whose text is a marker plus the error's class
name and fields as JSON, and the driver rebuilds the very same
``CohortflowError`` subclass from it (:func:`recover`). The engine then
decides by type, as the embedded engine does. Anything else is reduced to its
root cause with a fix when we know one (:func:`root_cause`).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar

from cohortflow import errors
from cohortflow.errors import CohortflowError, EngineError

MARKER = "cohortflow-carried-error:"
_PYTHON_ERROR = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception|Exit)): (.+)$", re.MULTILINE)

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_VERBOSE = "run again with --verbose for the full trace"
# Root causes we know the fix of, by exception name in the chain.
_FIXES: dict[str, str] = {
    "ModuleNotFoundError": "install the Spark extra where the executors run: pip install 'cohortflow[spark]'",
    "PySparkImportError": "install the Spark extra where the executors run: pip install 'cohortflow[spark]'",
    "FileNotFoundError": "executors must see the sources at the same path as the driver (a shared disk)",
}


class CarriedError(Exception):
    """A CohortflowError made into text that survives the JVM (see :func:`recover`)."""

    def __init__(self, error: CohortflowError) -> None:
        fields = {"type": type(error).__name__, "message": error.message, "hint": error.hint}
        if isinstance(error, errors.SourceReset):
            fields["source"] = error.source
        super().__init__(MARKER + json.dumps(fields, ensure_ascii=True))


def carried(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate a reader method so that our errors cross the JVM with their type."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except CohortflowError as exc:
            raise CarriedError(exc) from exc

    return wrapper


def carried_iter(func: Callable[P, Iterator[T]]) -> Callable[P, Iterator[T]]:
    """:func:`carried` for a generator method (its errors rise while it is iterated)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        try:
            yield from func(*args, **kwargs)
        except CohortflowError as exc:
            raise CarriedError(exc) from exc

    return wrapper


def recover(text: str) -> CohortflowError | None:
    """The CohortflowError a reader carried in ``text``, rebuilt with its type (None if none)."""
    at = text.find(MARKER)
    if at < 0:
        return None
    try:
        fields: dict[str, Any] = json.JSONDecoder().raw_decode(text, at + len(MARKER))[0]
    except ValueError:
        return None
    cls = getattr(errors, str(fields.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, CohortflowError)):
        return None
    error = cls.__new__(cls)
    CohortflowError.__init__(error, str(fields["message"]), str(fields.get("hint", "")))
    if "source" in fields:
        error.source = fields["source"]  # type: ignore[attr-defined]
    return error


def explain(failure: BaseException) -> CohortflowError:
    """A failed query as one of our errors: the carried one, else the root cause with its fix."""
    if isinstance(failure, CohortflowError):
        return failure
    text = f"{type(failure).__name__}: {failure}"  # a Python exception's own name may be the root cause
    return recover(text) or root_cause(text)


def root_cause(text: str) -> EngineError:
    """The root cause named in a py4j/JVM chain, as one line with a fix.

    The first exception we know the fix of wins; else the innermost one named.
    """
    causes = _PYTHON_ERROR.findall(text)
    if causes:
        name, message = next(((n, m) for n, m in causes if n in _FIXES), causes[-1])
        return EngineError(
            f"the Spark query failed: {name}: {message.strip()[:300]}", _FIXES.get(name, _VERBOSE)
        )
    first = next((line.strip() for line in text.splitlines() if line.strip()), "no message")
    return EngineError(f"the Spark query failed: {first[:300]}", _VERBOSE)
