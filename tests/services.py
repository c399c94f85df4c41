"""Real services for tests: an `mlflow server` and the Prefect test harness, on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server in its own process group, logging to a file, stopped with the whole group."""

    name = "server"

    def __init__(self, cmd: list[str], env: dict[str, str], log: Path, health_url: str,
                 timeout: float = 120) -> None:
        self.log = open(log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: see {self.log.name}")
            try:
                with urllib.request.urlopen(health_url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"{self.name} did not answer on {health_url} in {timeout}s")

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


class MlflowServer(ServerProcess):
    """`mlflow server` with a SQLite store under `root`."""

    name = "mlflow server"

    def __init__(self, root: Path, artifacts_destination: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
            "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", artifacts_destination or (root / "artifacts").as_uri(),
        ]
        full_env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
        super().__init__(cmd, full_env, root / "server.log", f"{self.url}/health")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


class PrefectServer(ServerProcess):
    """`prefect server start` with its own database under `root`."""

    name = "prefect server"

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        root.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        self.env.update(PREFECT_HOME=str(root / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
               "--port", str(self.port)]
        super().__init__(cmd, dict(self.env), root / "server.log", f"{self.api_url}/health")
        self.env["PREFECT_API_URL"] = self.api_url


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory) -> Iterator[PrefectServer]:
    server = PrefectServer(tmp_path_factory.mktemp("prefect"))
    yield server
    server.stop()


def kill_group_when(cmd: list[str], env: dict[str, str], cwd: Path, log_path: Path,
                    ready: Callable[[], bool], what: str,
                    timeout: float = 600) -> dict[psutil.Process, str]:
    """Run `cmd` in a process group of its own and SIGKILL the group once `ready()`.

    Returns the processes the command had started by then, with their command
    lines (a killed process can no longer be asked for its own).
    """
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.time() + timeout
            while not ready():
                assert proc.poll() is None, log_path.read_text()[-5000:]
                assert time.time() < deadline, f"no {what} in {timeout:.0f} s"
                time.sleep(0.05)
            family = {p: " ".join(p.cmdline())
                      for p in psutil.Process(proc.pid).children(recursive=True)}
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    return family
