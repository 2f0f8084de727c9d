"""Our errors cross the JVM as text and come back with their type; other failures become one line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

pytest.importorskip("pyspark")  # the engine package imports it; the [spark] extra is in dev

from cohortflow.engines.spark.failures import CarriedError, carried_iter, explain, recover
from cohortflow.errors import EngineError, SourceReset, SourceUnavailable, WarehouseLocked

JVM_NOISE = (
    "py4j.protocol.Py4JJavaError: An error occurred while calling o123.toArrow.\n"
    "org.apache.spark.SparkException: Job aborted due to stage failure: Task 0 in stage 3.0 failed\n"
    '  File "/x/pyspark/worker.py", line 1, in main\n'
)


def _through_the_jvm(error: Exception) -> str:
    """What the driver sees: the worker's traceback text inside a JVM error chain."""
    return f"{JVM_NOISE}cohortflow.engines.spark.failures.CarriedError: {error}\n\tat org.apache.spark.Foo"


def test_a_reset_comes_back_as_a_source_reset_with_its_source_and_hint() -> None:
    original = SourceReset("test_runs.log", "it shrank from 10 to 5 bytes {odd: } text")
    back = recover(_through_the_jvm(CarriedError(original)))
    assert isinstance(back, SourceReset)
    assert back.source == "test_runs.log"
    assert str(back) == str(original)


def test_other_errors_keep_their_class_and_hint() -> None:
    for original in (SourceUnavailable("`students.db` is locked"), WarehouseLocked("held by pid 7")):
        back = explain(Exception(_through_the_jvm(CarriedError(original))))
        assert type(back) is type(original)
        assert str(back) == str(original)


def test_a_generator_reader_carries_errors_raised_while_iterated() -> None:
    @carried_iter
    def read() -> Iterator[int]:
        yield 1
        source = "students.db"
        raise SourceReset(source, "ids restarted")

    rows = read()
    assert next(rows) == 1
    with pytest.raises(CarriedError) as caught:
        next(rows)
    assert isinstance(recover(str(caught.value)), SourceReset)


def test_a_missing_package_is_one_line_with_the_pip_install_fix() -> None:
    text = (
        f"{JVM_NOISE}Traceback (most recent call last):\n"
        "ModuleNotFoundError: No module named 'pandas'\n"
        "pyspark.errors.exceptions.captured.StreamingQueryException: [STREAM_FAILED] query terminated\n"
    )
    error = explain(Exception(text))
    assert isinstance(error, EngineError)
    assert "\n" not in str(error)
    assert "No module named 'pandas'" in str(error)
    assert "pip install 'cohortflow[spark]'" in str(error)


def test_an_unknown_failure_names_its_innermost_cause_and_points_at_verbose() -> None:
    error = explain(Exception(f"{JVM_NOISE}java.lang.OutOfMemoryError: Java heap space\n\tat x"))
    assert str(error).startswith("the Spark query failed: OutOfMemoryError: Java heap space")
    assert "--verbose" in str(error)


def test_a_python_exception_raised_on_the_driver_is_named_with_its_fix() -> None:
    class PySparkImportError(ImportError):
        pass

    error = explain(PySparkImportError("[PACKAGE_NOT_INSTALLED] Pandas >= 2.2.0 must be installed."))
    assert "PySparkImportError: [PACKAGE_NOT_INSTALLED] Pandas >= 2.2.0 must be installed" in str(error)
    assert str(error).endswith("pip install 'cohortflow[spark]'")


WORKER = """
import socket
from pyspark.serializers import read_int, write_int
from cohortflow.engines.spark.sources import behave_as_worker
behave_as_worker()
ours, jvm = socket.socketpair()
{before}
stream = ours.makefile("rwb", 65536)
try:
    read_int(stream)  # like pyspark's source runner: wait for the JVM's next call
except BaseException:
    write_int(-2, stream)  # report the error to the JVM, which is gone
    stream.flush()
"""


@pytest.mark.parametrize(
    ("before", "printed"),
    [
        ("jvm.close()  # the query stopped", ""),
        ("ours.close()  # our own bug: a closed socket is no hang-up", "Bad file descriptor"),
    ],
    ids=["hang-up", "own-bug"],
)
def test_a_worker_the_jvm_hung_up_on_dies_silently_other_errors_print(before: str, printed: str) -> None:
    died = subprocess.run(
        [sys.executable, "-c", WORKER.format(before=before)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert died.returncode == 1
    if printed:
        assert "Traceback" in died.stderr and printed in died.stderr
    else:
        assert died.stderr == ""
