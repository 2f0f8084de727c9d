"""Support for the dashboard tests: a dashboard child process, headless Chromium, waiting."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.support import unavailable
from tests.support.wait import wait_until

T = TypeVar("T")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "dashboard"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class DashboardProcess:
    """``cohortflow dashboard`` as a real child process, ready when entered."""

    def __init__(self, warehouse: str, data: Path, batches_url: str, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            *(sys.executable, "-m", "cohortflow", "dashboard", "--warehouse", warehouse),
            *("--students-db", str(data / "students.db"), "--test-runs-log", str(data / "test_runs.log")),
            *("--batches-url", batches_url, "--port", str(self.port), *extra),
        ]
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> DashboardProcess:
        self.proc = subprocess.Popen(self.command, stderr=subprocess.PIPE, text=True)
        wait_until(self._healthy, 60, "the dashboard to answer /healthz", interval=0.1)
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, self.proc.communicate()[1]
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        _, self.stderr = self.proc.communicate(timeout=30)


def chromium() -> Any:
    """A headless Debian chromium driven by Selenium through Debian's chromium-driver."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        unavailable("chromium and chromium-driver are not installed (scripts/ensure-services installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(driver))


def screenshot(browser: Any, name: str) -> Path:
    """Save a screenshot as a test artefact under artifacts/dashboard/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    browser.save_screenshot(str(path))
    return path
