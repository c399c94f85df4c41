"""The local servers behind `pit ui`: a Prefect server and an MLflow server on 127.0.0.1.

Each runs as a subprocess (`pit/` never imports Prefect) in a process group
of its own. Ctrl-C in the terminal then reaches `pit ui` alone, which stops
each group whole, the servers' own workers included: SIGTERM, then SIGKILL
after a grace period. Both listen on 127.0.0.1 only, never on the network.

The Prefect UI is a page in the browser that asks `/ui-settings` where its
API is. Prefect answers with PREFECT_SERVER_API_PORT (4200 unless set), not
the port given to `prefect server start --port`, so a server on another port
serves a blank UI that reports "Can't connect to Server API at
http://127.0.0.1:4200/api". `pit ui` sets PREFECT_SERVER_UI_API_URL (and the
server's own API address) to the port it really uses.

Prefect's home, which holds its database, stays Prefect's default
(PREFECT_HOME, ~/.prefect): the temporary local API that `pit compare` runs
on without PREFECT_API_URL writes there, so earlier flow runs show up, as
they do for anyone who runs `prefect server start`. MLflow's default store is
likewise the SQLite file `pit compare` writes to without a tracking server.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pit.errors import ServiceError
from pit.train.signals import stop_group

HOST = "127.0.0.1"
# Prefect migrates a new database on its first start; a busy laptop takes a while.
START_TIMEOUT_SECONDS = 120.0
STOP_GRACE_SECONDS = 15.0
_POLL_SECONDS = 0.5
# Health checks go straight to 127.0.0.1, never through an HTTP proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Server:
    """One server: how to start it, where it answers, where its output goes."""

    name: str
    port: int
    port_option: str
    command: list[str]
    env: dict[str, str]
    health_path: str
    log_path: Path
    hint: str  # what to check when it fails to start
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command, env={**os.environ, **self.env}, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def answers(self) -> bool:
        try:
            with _DIRECT.open(self.url + self.health_path, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def exit_code(self) -> int | None:
        """None while it runs (or was never started)."""
        return None if self.proc is None else self.proc.poll()

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        if self.proc is not None:
            stop_group(self.proc, grace)

    def log_tail(self, lines: int = 12) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join("    " + line for line in text.splitlines()[-lines:])


def prefect_server(port: int, log_dir: Path) -> Server:
    api = f"http://{HOST}:{port}/api"
    return Server(
        name="Prefect server", port=port, port_option="--prefect-port",
        command=[sys.executable, "-m", "prefect", "server", "start",
                 "--host", HOST, "--port", str(port)],
        env={
            "PREFECT_SERVER_API_HOST": HOST,
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_SERVER_UI_API_URL": api,
            # A PREFECT_API_URL exported for another server must not leak into this one.
            "PREFECT_API_URL": api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": os.environ.get(
                "PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
        },
        health_path="/api/health", log_path=log_dir / "prefect-server.log",
        hint="if its port is taken, pick another with --prefect-port",
    )


def mlflow_server(port: int, backend_store_uri: str, artifacts_destination: str,
                  log_dir: Path) -> Server:
    return Server(
        name="MLflow server", port=port, port_option="--mlflow-port",
        command=[sys.executable, "-m", "mlflow", "server", "--host", HOST,
                 "--port", str(port), "--workers", "1",
                 "--backend-store-uri", backend_store_uri,
                 "--artifacts-destination", artifacts_destination],
        # Its job runner starts more processes and needs extra packages; pit needs none of it.
        env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        health_path="/health", log_path=log_dir / "mlflow-server.log",
        hint=f"check --backend-store-uri ({backend_store_uri}) and --artifacts-destination "
             f"({artifacts_destination}); if its port is taken, pick another with --mlflow-port",
    )


def default_backend_store_uri(workdir: str | Path) -> str:
    """Where `pit compare` writes its runs without a tracking server, so they show up here.

    That is `pit.tracking.tracking_uri`'s choice: MLFLOW_TRACKING_URI when it
    names a store (a database, a folder), else `<workdir>/mlflow.db`. An
    http(s) tracking URI names a server, maybe this very one, not a store.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI", "")
    if env and not env.startswith(("http://", "https://")):
        return env
    path = Path(workdir).resolve() / "mlflow.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def default_artifacts_destination(workdir: str | Path) -> str:
    return (Path(workdir).resolve() / "mlartifacts").as_uri()


def _bind_error(port: int) -> OSError | None:
    with socket.socket() as s:
        # As the servers do: a port that a stopped server left in TIME_WAIT is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError as e:
            return e
    return None


def _free_port_near(port: int, taken: set[int]) -> int | None:
    for candidate in range(max(port + 1, 1024), min(port + 200, 65536)):
        if candidate not in taken and _bind_error(candidate) is None:
            return candidate
    return None


def check_ports(servers: list[Server]) -> None:
    """Raise one ServiceError naming every port that cannot be used, before anything starts."""
    problems = []
    ports = [s.port for s in servers]
    for i, s in enumerate(servers):
        if s.port in ports[:i]:
            other = servers[ports.index(s.port)]
            problems.append(f"{other.port_option} and {s.port_option} are both {s.port}; "
                            "give each server its own port")
            continue
        error = _bind_error(s.port)
        if error is None:
            continue
        free = _free_port_near(s.port, set(ports))
        instead = f", e.g. {s.port_option} {free}" if free else ""
        if error.errno == errno.EADDRINUSE:
            problems.append(f"port {s.port} ({s.port_option}) on {HOST} is already in use; "
                            f"stop what listens there or pick a free port{instead}")
        else:
            problems.append(f"cannot listen on {HOST}:{s.port} ({s.port_option}): "
                            f"{error.strerror}; pick another port{instead}")
    if problems:
        raise ServiceError("cannot start pit ui:\n" + "\n".join(f"  - {p}" for p in problems))


class _StopSignals:
    """Records SIGINT and SIGTERM instead of acting on them, so stopping is never cut short."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None

    def _record(self, signum: int, frame: types.FrameType | None) -> None:
        if self.received is None:
            self.received = signum

    @contextmanager
    def installed(self) -> Iterator[_StopSignals]:
        previous = {s: signal.signal(s, self._record) for s in self.SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def _failure(server: Server, what: str) -> ServiceError:
    tail = server.log_tail()
    last = f"; last lines:\n{tail}" if tail else ""
    return ServiceError(f"{server.name} on {HOST}:{server.port} {what}; {server.hint}. "
                        f"Its log is {server.log_path}{last}")


def start(servers: list[Server], signals: _StopSignals,
          timeout: float = START_TIMEOUT_SECONDS) -> bool:
    """Start every server and wait until all answer; False if a stop signal came first.

    Raises ServiceError if one exits or does not answer within `timeout`; the
    caller stops them all either way.
    """
    for s in servers:
        s.start()
    waiting = list(servers)
    deadline = time.monotonic() + timeout
    while waiting:
        if signals.received is not None:
            return False
        for s in list(waiting):
            code = s.exit_code()
            if code is not None:
                raise _failure(s, f"exited while starting (exit code {code})")
            if s.answers():
                waiting.remove(s)
        if waiting and time.monotonic() > deadline:
            s = waiting[0]
            raise _failure(s, f"did not answer {s.url}{s.health_path} within {timeout:.0f} s")
        if waiting:
            time.sleep(_POLL_SECONDS)
    return True


def wait(servers: list[Server], signals: _StopSignals) -> None:
    """Block until SIGINT or SIGTERM; raise ServiceError if a server stops on its own first."""
    while signals.received is None:
        for s in servers:
            code = s.exit_code()
            if code is not None:
                raise _failure(s, f"stopped on its own (exit code {code}); the other server "
                                  "was stopped too")
        time.sleep(_POLL_SECONDS)


def stop(servers: list[Server], grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop every server's process group at once, so the wait is one grace period, not two."""
    threads = [threading.Thread(target=s.stop, args=(grace,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def summary(prefect: Server, mlflow: Server, backend_store_uri: str) -> str:
    return "\n".join([
        f"Prefect UI: {prefect.url}",
        f"MLflow UI:  {mlflow.url}   (runs from {backend_store_uri})",
        "",
        "For `pit compare` to report into them, run in its shell:",
        f"  export PREFECT_API_URL={prefect.url}/api",
        f"  export MLFLOW_TRACKING_URI={mlflow.url}",
        "",
        f"Logs: {prefect.log_path}, {mlflow.log_path}",
        "Press Ctrl-C to stop both servers.",
    ])


def run_ui(prefect_port: int, mlflow_port: int, backend_store_uri: str | None,
           artifacts_destination: str | None, workdir: str | Path,
           show: Callable[[str], None]) -> None:
    """Start both servers, `show` their addresses, and block until Ctrl-C or SIGTERM.

    Returns once both are stopped. Raises ServiceError, with nothing left
    running, if a port is taken (checked before anything starts), a server
    fails to start, or one stops on its own.
    """
    workdir = Path(workdir)
    backend = backend_store_uri or default_backend_store_uri(workdir)
    artifacts = artifacts_destination or default_artifacts_destination(workdir)
    log_dir = workdir / "logs"
    prefect = prefect_server(prefect_port, log_dir)
    mlflow = mlflow_server(mlflow_port, backend, artifacts, log_dir)
    servers = [prefect, mlflow]
    check_ports(servers)
    with _StopSignals().installed() as signals:
        try:
            show(f"Starting the Prefect server on {HOST}:{prefect_port} and the MLflow server "
                 f"on {HOST}:{mlflow_port} ...")
            if start(servers, signals):
                show(summary(prefect, mlflow, backend))
                wait(servers, signals)
            show("Stopping both servers ...")
        finally:
            stop(servers)
    show("Stopped.")
