"""`pit ui` as a user runs it: a real Prefect server and MLflow server, stopped together."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from services import free_port

from pit.errors import ServiceError
from pit.services import check_ports, default_backend_store_uri, mlflow_server, prefect_server
from pit.tracking import Tracker, tracking_uri

ROOT = Path(__file__).resolve().parents[1]
# Both servers start in 4-11 s on an idle laptop; a busy shared machine takes much longer.
READY_TIMEOUT = 150.0
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def two_ports() -> tuple[int, int]:
    a = free_port()
    b = free_port()
    while b == a or a == 4200:
        a, b = free_port(), free_port()
    return a, b


def get(url: str) -> tuple[int, bytes]:
    with _DIRECT.open(url, timeout=5) as r:
        return r.status, r.read()


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def env_for(tmp_path: Path) -> dict[str, str]:
    """The user's environment, with Prefect's home (its database) kept inside the test."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    env.update(PYTHONPATH=str(ROOT), PREFECT_HOME=str(tmp_path / "prefect-home"))
    return env


def servers_started_with(*ports: int) -> list[psutil.Process]:
    """Processes of this machine whose command line names one of `ports` (unique to a test)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if any(str(port) in cmd for port in ports) and any(
                "prefect" in c or "mlflow" in c or "uvicorn" in c for c in cmd):
            found.append(p)
    return found


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class PitUi:
    """`pit ui` in a subprocess whose output lines are collected as they come."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pit.cli", "ui", *args], cwd=tmp_path, env=env_for(tmp_path),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.errors: list[str] = []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines),
                         daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.errors),
                         daemon=True).start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines + self.errors)

    def wait_for(self, text: str, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                time.sleep(0.5)  # let the readers take the last lines
                pytest.fail(f"pit ui exited with {self.proc.returncode}:\n{self.output}")
            time.sleep(0.2)
        pytest.fail(f"pit ui printed no {text!r} within {timeout:.0f} s:\n{self.output}")

    def kill(self) -> None:
        """Cleanup after a failed test: the servers' groups and pit ui itself."""
        if self.proc.poll() is None:
            for child in psutil.Process(self.proc.pid).children():
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    try:
                        os.killpg(child.pid, sig)
                    except ProcessLookupError:
                        break
                    time.sleep(2)
            self.proc.kill()
            self.proc.wait()


def test_default_store_is_where_pit_compare_writes(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workdir = tmp_path / "runs"
    assert default_backend_store_uri(workdir) == tracking_uri(None, str(workdir))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/mlflow.db")
    assert default_backend_store_uri(workdir) == "sqlite:////elsewhere/mlflow.db"
    # An exported address of a tracking server names no store: the file is still served.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert default_backend_store_uri(workdir) == f"sqlite:///{workdir.resolve() / 'mlflow.db'}"


def test_one_port_for_both_servers_is_refused_before_anything_starts(tmp_path):
    port = free_port()
    servers = [prefect_server(port, tmp_path), mlflow_server(port, "sqlite:///x.db", "file:///x",
                                                            tmp_path)]
    with pytest.raises(ServiceError, match=f"--prefect-port and --mlflow-port are both {port}"):
        check_ports(servers)
    assert all(s.proc is None for s in servers)


@pytest.mark.integration
@pytest.mark.slow
def test_ui_serves_both_on_other_ports_and_ctrl_c_stops_both(tmp_path):
    prefect_port, mlflow_port = two_ports()
    ui = PitUi(tmp_path, "--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port))
    try:
        ui.wait_for("Press Ctrl-C")
        prefect = f"http://127.0.0.1:{prefect_port}"
        mlflow = f"http://127.0.0.1:{mlflow_port}"
        assert f"Prefect UI: {prefect}" in ui.lines
        assert f"  export PREFECT_API_URL={prefect}/api" in ui.lines
        assert f"  export MLFLOW_TRACKING_URI={mlflow}" in ui.lines
        assert get(f"{prefect}/api/health") == (200, b"true")
        assert get(f"{mlflow}/health")[0] == 200
        # What the browser's UI asks first: where its API is. Not 4200, or the page stays blank.
        status, body = get(f"{prefect}/ui-settings")
        assert status == 200 and json.loads(body)["api_url"] == f"{prefect}/api"

        # A run that pit writes without a server (as `pit demo` does) shows up in the server.
        store = tracking_uri(None, str(tmp_path / "pit-runs"))
        run_id = Tracker(store, "pit").start_run("written-without-a-server")
        from mlflow.tracking import MlflowClient

        assert MlflowClient(tracking_uri=mlflow).get_run(run_id).info.run_name == \
            "written-without-a-server"

        started = psutil.Process(ui.proc.pid).children(recursive=True)
        groups = {os.getpgid(p.pid) for p in started}
        assert len(groups) == 2 and os.getpgid(ui.proc.pid) not in groups

        ui.proc.send_signal(signal.SIGINT)
        assert ui.proc.wait(60) == 0, ui.output
        assert not any(group_alive(g) for g in groups)
        assert not any(p.is_running() for p in started)
        assert not listening(prefect_port) and not listening(mlflow_port)
        time.sleep(0.5)
        assert "Stopped." in ui.lines
    finally:
        ui.kill()


@pytest.mark.integration
def test_prefect_port_in_use_is_named_and_nothing_starts(tmp_path):
    prefect_port, mlflow_port = two_ports()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", prefect_port))
        taken.listen()
        result = subprocess.run(
            [sys.executable, "-m", "pit.cli", "ui", "--prefect-port", str(prefect_port),
             "--mlflow-port", str(mlflow_port)],
            cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    message = " ".join(result.stderr.split())  # as printed, wrapped to the terminal
    assert f"port {prefect_port} (--prefect-port) on 127.0.0.1 is already in use" in message
    assert "pick a free port, e.g. --prefect-port " in message
    assert not listening(mlflow_port)
    assert not (tmp_path / "pit-runs" / "logs").exists()
    assert servers_started_with(prefect_port, mlflow_port) == []


@pytest.mark.integration
@pytest.mark.slow
def test_mlflow_failing_to_start_stops_prefect_and_names_the_option(tmp_path):
    prefect_port, mlflow_port = two_ports()
    ui = PitUi(tmp_path, "--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port),
               "--backend-store-uri", "nosuch://store")
    try:
        assert ui.proc.wait(READY_TIMEOUT) == 2, ui.output
        time.sleep(0.5)
        message = " ".join(" ".join(ui.errors).split())
        assert f"MLflow server on 127.0.0.1:{mlflow_port} exited while starting" in message
        assert "check --backend-store-uri (nosuch://store)" in message
        assert "nosuch" in message.split("last lines:")[1]  # MLflow's own reason, from its log
        assert not listening(prefect_port) and not listening(mlflow_port)
        assert servers_started_with(prefect_port, mlflow_port) == []
    finally:
        ui.kill()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# What the Prefect UI shows when it cannot reach its API: the V1 UI, then the V2 UI.
NO_API = ("Can't connect to Server API", "Unable to connect to Prefect server")
LOCAL = ("http://127.0.0.1:", "http://localhost:", "ws://127.0.0.1:", "ws://localhost:")


def open_prefect_ui(browser, url: str, version: str) -> tuple[str, list[str]]:
    """The text of the Prefect UI's dashboard (`version` v1 or v2), and its requests to another
    local server than `url`'s.

    A UI that does not know its API's port sends its requests to 4200.
    """
    context = browser.new_context()
    context.add_cookies([{"name": "prefect_ui_version", "value": version, "url": url}])
    page = context.new_page()
    elsewhere: list[str] = []
    page.on("request", lambda r: r.url.startswith(url) or not r.url.startswith(LOCAL)
            or elsewhere.append(r.url))
    page.goto(url, wait_until="networkidle", timeout=60_000)
    page.get_by_text("Dashboard").first.wait_for(timeout=30_000)
    page.wait_for_timeout(2_000)
    body = page.inner_text("body")
    context.close()
    return body, elsewhere


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                    reason="needs Playwright: pip install playwright")
@pytest.mark.skipif(CHROMIUM is None, reason="needs a system Chromium: apt-get install chromium")
def test_prefect_ui_in_a_browser_reaches_its_api_on_another_port(tmp_path):
    from playwright.sync_api import sync_playwright

    prefect_port, mlflow_port = two_ports()
    prefect = f"http://127.0.0.1:{prefect_port}"
    ui = PitUi(tmp_path, "--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port))
    try:
        ui.wait_for("Press Ctrl-C")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
            try:
                for version in ("v2", "v1"):  # the default UI, and the one the issue saw fail
                    body, elsewhere = open_prefect_ui(browser, prefect, version)
                    assert not any(text in body for text in NO_API), (version, body[:300])
                    assert elsewhere == [], (version, elsewhere)
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{mlflow_port}", wait_until="networkidle",
                          timeout=60_000)
                page.get_by_text("Experiments").first.wait_for(timeout=30_000)
            finally:
                browser.close()
        ui.proc.send_signal(signal.SIGINT)
        assert ui.proc.wait(60) == 0, ui.output
    finally:
        ui.kill()
