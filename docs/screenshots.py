"""The README's screenshots of the Prefect and MLflow UIs, taken from a real comparison.

Run from the checkout: `.venv/bin/python docs/screenshots.py` (needs the
`playwright` package and a system Chromium). It starts a Prefect server and an
MLflow server on free ports of 127.0.0.1 with homes in a temporary folder (as
`pit ui` does, so the Prefect UI finds its API), runs `pit deploy` and one tiny
comparison against them, opens both UIs in headless Chromium, writes
`docs/images/prefect-compare-form.png` and `docs/images/mlflow-runs.png`, and
stops everything it started. A few minutes on a laptop CPU.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's pit, whatever the environment has installed

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from pit.services import (  # noqa: E402
    HOST,
    Server,
    _StopSignals,
    check_ports,
    mlflow_server,
    prefect_server,
    start,
    stop,
)
from pit.tracking import PARENT_TAG, Tracker  # noqa: E402

IMAGES = ROOT / "docs" / "images"
VIEWPORT = {"width": 1400, "height": 900}
METHODS = ("cpt", "pit")
COMPARE = ["--preset", "smoke", "--methods", ",".join(METHODS),
           "--set", "world.n_old=6", "--set", "world.n_train=6", "--set", "world.n_test=4",
           "--set", "world.n_cross=4", "--set", "data.retention_questions=6",
           "--set", "base.epochs=2", "--set", "train.test_doc_epochs=2"]
# A busy machine renders slowly; these bound a wait for text, they are not sleeps.
PAGE_TIMEOUT_MS = 120_000
COMMAND_TIMEOUT_S = 1800
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports, none of them the servers' usual 4200 and 5000."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in (4200, 5000, *ports):
            ports.append(port)
    return ports


def pit(args: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run the pit CLI of this checkout; its output, or SystemExit with it on failure."""
    out = subprocess.run([sys.executable, "-m", "pit.cli", *args], env=env, cwd=cwd,
                         capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    if out.returncode != 0:
        raise SystemExit(f"pit {args[0]} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out.stdout


def api(prefect: Server, path: str, body: dict) -> list[dict]:
    request = urllib.request.Request(f"{prefect.url}/api{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with _DIRECT.open(request, timeout=30) as response:
        return json.load(response)


def field(page, label: str):
    """A field of Prefect's parameter form: its label, description, type tabs and input."""
    return page.get_by_text(label, exact=True).locator(
        "xpath=ancestor::div[.//button[@role='tab']][1]")


def shoot_prefect_form(browser, prefect: Server) -> Path:
    """compare-methods' Custom run page: the methods of the comparison picked from their
    drop-down, the presets' drop-down open.

    It is the V2 UI's page, the one a browser without a saved preference gets.
    """
    deployments = api(prefect, "/deployments/filter",
                      {"deployments": {"name": {"any_": ["compare-methods"]}}})
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(f"{prefect.url}/v2/deployments/deployment/{deployments[0]['id']}/run",
              timeout=PAGE_TIMEOUT_MS)
    page.get_by_text("Methods (Optional)", exact=True).wait_for(timeout=PAGE_TIMEOUT_MS)
    methods = field(page, "Methods (Optional)")
    methods.get_by_role("tab", name="list", exact=True).click()
    methods.get_by_text("Select", exact=True).click()
    for slug in METHODS:
        page.get_by_role("option", name=slug, exact=True).click()
    page.keyboard.press("Escape")
    for slug in METHODS:
        methods.get_by_text(slug, exact=True).wait_for()
    field(page, "Preset (Optional)").locator("button[aria-haspopup=listbox]").click()
    page.get_by_role("option", name="demo", exact=True).wait_for()
    path = IMAGES / "prefect-compare-form.png"
    page.screenshot(path=path, animations="disabled")
    page.close()
    return path


def shoot_mlflow_runs(browser, mlflow: Server, parent_run_id: str) -> Path:
    """The comparison's experiment in the model-training view: the parent run expanded to its
    recipes' nested runs, each row listing all its data set inputs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow.url)
    parent = client.get_run(parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent_run_id}'")
    inputs = sum(len(r.inputs.dataset_inputs) for r in [parent, *children])
    experiment = client.get_experiment(parent.info.experiment_id)
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(Tracker(mlflow.url, experiment.name).experiment_url(), timeout=PAGE_TIMEOUT_MS)
    page.get_by_text(parent.info.run_name, exact=True).wait_for(timeout=PAGE_TIMEOUT_MS)
    page.get_by_role("button", name="Close", exact=True).click()  # the assistant's panel
    # Rows expanded before the parent opens: a nested row laid out while the rows grow keeps
    # a stale "+1" in place of its second input.
    page.get_by_text("Expand rows", exact=True).click()
    page.locator("[role=gridcell][col-id='attributes.`Run Name`']").filter(
        has_text=parent.info.run_name).locator("button").first.click()
    for run in children:
        page.get_by_text(run.info.run_name, exact=True).wait_for(timeout=PAGE_TIMEOUT_MS)
    datasets = page.locator("[role=gridcell][col-id='attributes.`Dataset`']")
    expect(datasets.locator("[data-testid=open-dataset-drawer]")).to_have_count(
        inputs, timeout=PAGE_TIMEOUT_MS)
    expect(datasets.get_by_text(re.compile(r"^\+\d+$"))).to_have_count(0)
    page.mouse.move(VIEWPORT["width"] // 2, VIEWPORT["height"] - 10)  # no hover, no focus ring
    page.evaluate("document.activeElement && document.activeElement.blur()")
    path = IMAGES / "mlflow-runs.png"
    page.screenshot(path=path, animations="disabled")
    page.close()
    return path


@contextmanager
def services(home: Path) -> Iterator[tuple[Server, Server, dict[str, str]]]:
    """A Prefect and an MLflow server on free ports with their homes under `home`, and the
    environment that points the pit CLI at them; both stopped on the way out."""
    prefect_port, mlflow_port = free_ports(2)
    prefect = prefect_server(prefect_port, home / "logs")
    prefect.env["PREFECT_HOME"] = str(home / "prefect")
    mlflow = mlflow_server(mlflow_port, f"sqlite:///{home / 'mlflow.db'}",
                           (home / "mlartifacts").as_uri(), home / "logs")
    servers = [prefect, mlflow]
    check_ports(servers)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(PYTHONPATH=str(ROOT), PREFECT_HOME=str(home / "prefect"),
               PREFECT_API_URL=f"{prefect.url}/api", MLFLOW_TRACKING_URI=mlflow.url,
               PIT_PROGRESS="0")
    try:
        with _StopSignals().installed() as signals:
            print(f"starting Prefect on {prefect.url} and MLflow on {mlflow.url} ...")
            if not start(servers, signals):
                raise SystemExit(130)
        yield prefect, mlflow, env
    finally:
        stop(servers)


@contextmanager
def browser() -> Iterator:
    """Headless system Chromium (Playwright's own download is not needed)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs a system Chromium: apt-get install chromium")
    IMAGES.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def wrote(path: Path) -> None:
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KB)")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="pit-screenshots-") as tmp:
        home = Path(tmp)
        with services(home) as (prefect, mlflow, env):
            pit(["deploy", "--file", str(ROOT / "infra" / "prefect.yaml")], env, home)
            print("deployed; running a tiny comparison ...")
            results = home / "results.json"
            pit(["compare", *COMPARE, "--set", f"workdir={home / 'work'}",
                 "--results", str(results)], env, home)
            parent_run_id = json.loads(results.read_text())["mlflow_parent_run_id"]
            with browser() as chromium:
                wrote(shoot_prefect_form(chromium, prefect))
                wrote(shoot_mlflow_runs(chromium, mlflow, parent_run_id))

if __name__ == "__main__":
    main()
