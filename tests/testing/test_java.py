"""Java 17+ is present and a real local Spark session starts, counts and stops."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import unavailable

MIN_JAVA = 17

# Run in a child process: a JVM started here would stay up for the whole pytest
# session with this test's settings, and a hang is killed by the timeout below.
_SPARK_CHECK = """
import json, time
started = time.monotonic()
from pyspark.sql import SparkSession
imported = time.monotonic()
spark = (
    SparkSession.builder.master("local[2]")
    .appName("cohortflow-java-check")
    .config("spark.ui.enabled", "false")
    .config("spark.driver.host", "127.0.0.1")
    .config("spark.driver.bindAddress", "127.0.0.1")
    .config("spark.sql.shuffle.partitions", "2")
    .getOrCreate()
)
ready = time.monotonic()
count = spark.range(10).count()
counted = time.monotonic()
spark.stop()
print(json.dumps({
    "count": count,
    "import_s": round(imported - started, 2),
    "session_start_s": round(ready - imported, 2),
    "count_s": round(counted - ready, 2),
    "stop_s": round(time.monotonic() - counted, 2),
}))
"""


def _java() -> str | None:
    """Return the java Spark will launch: $JAVA_HOME/bin/java, else java on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = Path(home) / "bin" / "java"
        return str(candidate) if os.access(candidate, os.X_OK) else None
    return shutil.which("java")


def _java_major(java: str) -> int | None:
    banner = subprocess.run(
        [java, "-version"], capture_output=True, text=True, timeout=60, check=False
    ).stderr
    match = re.search(r'version "(?:1\.)?(\d+)', banner)
    return int(match.group(1)) if match else None


def test_java_17_or_newer_is_present() -> None:
    java = _java()
    if java is None:
        unavailable("no java (JAVA_HOME or PATH); run `scripts/ensure-services`")
    major = _java_major(java)
    if major is None or major < MIN_JAVA:
        reason = f"{java} is Java {major}, Spark 4 needs {MIN_JAVA}+"
        unavailable(f"{reason}; run `scripts/ensure-services`")


@pytest.mark.spark
@pytest.mark.timeout(240)
def test_local_spark_session_counts(record_property: pytest.RecordProperty) -> None:
    if importlib.util.find_spec("pyspark") is None:
        unavailable("pyspark is not installed: pip install 'cohortflow[spark]'")
    if _java() is None:
        unavailable("no java for Spark; run `scripts/ensure-services`")
    python = {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    env = {**os.environ, **python, "SPARK_LOCAL_IP": "127.0.0.1"}
    done = subprocess.run(
        [sys.executable, "-c", _SPARK_CHECK],
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    timings = json.loads(done.stdout.strip().splitlines()[-1])
    assert timings.pop("count") == 10
    for name, seconds in timings.items():
        record_property(name, seconds)
    print(f"spark timings: {timings}")
