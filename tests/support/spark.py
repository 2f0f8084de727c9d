"""pytest fixtures for Spark: Java or skip (fail in CI), and one standalone cluster per session.

Register once in ``tests/conftest.py``::

    pytest_plugins = ["tests.support.spark"]

``spark_cluster`` starts a Spark standalone master and two workers (one core
and 1 GiB each) as separate JVMs on 127.0.0.1, with PySpark's own
``bin/spark-class``, and yields the master URL (``spark://127.0.0.1:PORT``).
Executors therefore run in other JVMs than the driver, as on a real cluster.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import unavailable
from tests.support.wait import wait_until

WORKERS = 2


def require_java() -> None:
    """Skip (fail in CI) when Java is absent: the one skip-or-fail rule for Spark tests."""
    if shutil.which("java") is None:
        unavailable("Java 17+ is not installed (scripts/ensure-services installs it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _alive_workers(ui_port: int) -> int:
    try:
        status = httpx.get(f"http://127.0.0.1:{ui_port}/json/", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return 0
    return int(status.get("aliveworkers", 0))


class StandaloneCluster:
    """A Spark standalone master and workers, each its own JVM process."""

    def __init__(self, workdir: Path) -> None:
        import pyspark

        self.home = Path(pyspark.__file__).parent
        self.workdir = workdir
        self.port, self.ui_port = _free_port(), _free_port()
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """The master URL to pass as ``--spark-master``."""
        return f"spark://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the master and the workers; return once every worker registered."""
        self._spawn("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                    "--port", str(self.port), "--webui-port", str(self.ui_port))  # fmt: skip
        for n in range(WORKERS):
            work = self.workdir / f"worker-{n}"
            self._spawn(f"worker-{n}", "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                        "--cores", "1", "--memory", "1g", "--webui-port", "0",
                        "--work-dir", str(work), self.url)  # fmt: skip
        wait_until(self._ready, 180, f"{WORKERS} Spark workers to register with the master")

    def _ready(self) -> bool:
        for proc in self.processes:
            assert proc.poll() is None, f"a Spark daemon exited {proc.returncode}: see {self.workdir}"
        return _alive_workers(self.ui_port) == WORKERS

    def _spawn(self, name: str, main_class: str, *args: str) -> None:
        env = {**os.environ, "SPARK_HOME": str(self.home), "SPARK_LOCAL_IP": "127.0.0.1",
               "SPARK_DAEMON_MEMORY": "256m"}  # fmt: skip
        log = (self.workdir / f"{name}.log").open("wb")
        with log:
            self.processes.append(
                subprocess.Popen(
                    [str(self.home / "bin" / "spark-class"), main_class, *args],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # a Ctrl-C sent to a test's pipeline never reaches them
                )
            )

    def stop(self) -> None:
        """Stop the workers, then the master."""
        for proc in reversed(self.processes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Return the master URL of the session's standalone cluster (master + 2 workers)."""
    require_java()
    cluster = StandaloneCluster(tmp_path_factory.mktemp("spark-cluster"))
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.stop()
