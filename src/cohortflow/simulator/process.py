"""Run the generator as a real child process (for tests and benchmarks of both sides).

    with SimulatorProcess(tmp_path / "data", "--seed", "1", "--interval-ms", "20") as sim:
        httpx.get(f"{sim.url}/batches")
        ...
    # leaving the block sends SIGTERM and checks the generator exited 0

The child gets ``--data-dir`` and ``--port 0`` (a free port) unless given;
`start` returns once the ``cohortflow-simulator ready port=N`` line arrives.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType

from cohortflow.errors import ConfigError

READY_PREFIX = "cohortflow-simulator ready port="


class SimulatorProcess:
    """A ``cohortflow generate`` child process that is ready when `start` returns."""

    ready_prefix = READY_PREFIX

    def __init__(self, data_dir: Path, *args: str, ready_timeout_s: float = 60.0) -> None:
        self.data_dir = Path(data_dir)
        self.args = list(args)
        self.ready_timeout_s = ready_timeout_s
        self.port = 0
        self.stderr = ""
        self._proc: subprocess.Popen[str] | None = None
        self._stderr_thread: threading.Thread | None = None
        self._stderr_lines: list[str] = []

    @property
    def url(self) -> str:
        """Base URL of the batch API."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The generator's pid."""
        return self._process().pid

    @property
    def running(self) -> bool:
        """True while the child has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The full command line of the child."""
        extra = [] if "--port" in self.args else ["--port", "0"]
        data = [] if "--data-dir" in self.args else ["--data-dir", str(self.data_dir)]
        return [sys.executable, "-m", "cohortflow", "generate", *data, *extra, *self.args]

    def start(self) -> SimulatorProcess:
        """Start the generator and wait for its ready line."""
        self._proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._stderr_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_thread.start()
        self.port = self._wait_ready()
        return self

    def _drain_stderr(self) -> None:
        stream = self._process().stderr
        assert stream is not None
        self._stderr_lines.extend(stream)

    def _wait_ready(self) -> int:
        found: list[str] = []
        reader = threading.Thread(target=self._read_ready, args=(found,), daemon=True)
        reader.start()
        reader.join(self.ready_timeout_s)
        if not found or not found[0].startswith(self.ready_prefix):
            self.kill()
            raise ConfigError(self._not_ready(found))
        return int(found[0][len(self.ready_prefix) :])

    def _not_ready(self, found: list[str]) -> str:
        """Why the generator is not ready: its own last words first, when it said any."""
        said = [line.strip() for line in self._stderr_lines if line.strip()]
        if found == [""] and said:  # it exited before its ready line: its error says why
            return f"the generator stopped before it was ready: {said[-1]}"
        waited = f"no ready line in {self.ready_timeout_s:.0f} s"
        got = f"its first line was {found[0]!r}" if found else waited
        return f"the generator did not get ready ({got}); its stderr: {' | '.join(said[-5:])}"

    def _read_ready(self, found: list[str]) -> None:
        stream = self._process().stdout
        assert stream is not None
        found.append(stream.readline().strip())

    def _process(self) -> subprocess.Popen[str]:
        if self._proc is None:
            msg = "the simulator process was not started"
            raise ConfigError(msg)
        return self._proc

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Send ``signum``, wait for the exit, return the exit status."""
        proc = self._process()
        if proc.poll() is None:
            proc.send_signal(signum)
        return self.wait(timeout_s)

    def wait(self, timeout_s: float = 30.0) -> int:
        """Wait for the child to exit; collect its stderr."""
        proc = self._process()
        code = proc.wait(timeout_s)
        if self._stderr_thread is not None:
            self._stderr_thread.join(timeout_s)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        self.stderr = "".join(self._stderr_lines)
        return code

    def kill(self) -> None:
        """SIGKILL the child (crash tests) and reap it."""
        proc = self._process()
        if proc.poll() is None:
            proc.kill()
        self.wait()

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        code = self.stop()
        if exc_type is None and code != 0:
            msg = f"the generator exited {code}: {self.stderr}"
            raise ConfigError(msg)


class FaultProxyProcess(SimulatorProcess):
    """A ``cohortflow api-faults`` child in front of ``upstream`` (see ``simulator.faults``)."""

    ready_prefix = "cohortflow-faults ready port="

    def __init__(self, upstream: str, *args: str, ready_timeout_s: float = 60.0) -> None:
        super().__init__(Path(), *args, ready_timeout_s=ready_timeout_s)
        self.upstream = upstream

    def command(self) -> list[str]:
        """The full command line of the child."""
        extra = [] if "--port" in self.args else ["--port", "0"]
        command = [sys.executable, "-m", "cohortflow", "api-faults", "--upstream", self.upstream]
        return [*command, *extra, *self.args]
