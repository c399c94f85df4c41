"""The README's screenshots of MLflow's Model Registry after two monthly knowledge refreshes.

Run from the checkout: `.venv/bin/python docs/refresh_screenshot.py` (needs
what `docs/screenshots.py` needs). It starts a Prefect and an MLflow server as
that script does, builds a local mirror of two monthly dumps cut from the real
fixture pages (the test suite's `tests/refresh_mirror.py`), runs `pit refresh`
once per month with the smoke preset shrunk as in `tests/test_refresh.py`,
prints the two months' figures, and writes `docs/images/mlflow-registry.png`
(the registered model's versions with their aliases and tags) and
`docs/images/mlflow-registry-version.png` (version 2 with its tags). The first
month's gate is open, so that there is a `champion` to continue; the second
month meets the default gate (gain >= 0, forgetting <= 5 points) and is
promoted or rejected on its figures. A minute or two on a laptop CPU.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from screenshots import (
    IMAGES,
    PAGE_TIMEOUT_MS,
    ROOT,
    browser,
    pit,
    services,
    wrote,
)

sys.path.insert(0, str(ROOT / "tests"))  # the test suite's mirror of the real fixture pages

from refresh_mirror import NEW, OLD, monthly_pages, write_month  # noqa: E402

from pit.refresh.outcome import FIGURES  # noqa: E402
from pit.services import Server  # noqa: E402

NAME = "pit-films"
MONTHS = (("20230101", ["--min-gain", "-100", "--max-forgetting", "100"]), ("20230201", []))
REGISTRY_VIEWPORT = {"width": 1600, "height": 1060}
VERSION_VIEWPORT = {"width": 1400, "height": 1500}
TINY = ["data.retention_questions=6", "base.epochs=2", "train.test_doc_epochs=1",
        "eval.train_qa_sample=0", "eval.cloze=false"]


def refresh(mirror: Path, home: Path, env: dict[str, str], date: str, gate: list[str]) -> dict:
    """One `pit refresh` of the mirror's newest dump, `date`; its results document."""
    results = home / f"results-{date}.json"
    sets = [a for s in TINY for a in ("--set", s)]
    pit(["refresh", "--mirror", str(mirror), "--category", NEW, "--old-category", OLD,
         "--registered-model", NAME, "--cache", str(home / "dumps"), "--workers", "1",
         "--set", f"workdir={home / 'work'}", *sets, *gate, "--results", str(results)],
        env, home)
    return json.loads(results.read_text())


def figures_table(docs: list[dict], verdicts: list[str]) -> str:
    """The months' figures (percent exact match) as a Markdown table."""
    head = ["dump", "status", "version", *FIGURES, "gate"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for doc, verdict in zip(docs, verdicts, strict=True):
        m = doc["metrics"]
        cells = [doc["dump_date"], doc["status"], doc["model_version"],
                 *("n/a" if m[k] is None else f"{m[k]:.1f}" for k in FIGURES),
                 f"{verdict}: {doc['gate_reason']}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def open_page(chromium, url: str, ready: str, viewport: dict[str, int]):
    """`url` in a new page once `ready` shows, the assistant's panel closed."""
    page = chromium.new_page(viewport=viewport)
    page.goto(url, timeout=PAGE_TIMEOUT_MS)
    page.get_by_text(ready).first.wait_for(timeout=PAGE_TIMEOUT_MS)
    page.get_by_role("button", name="Close", exact=True).click()
    page.mouse.move(viewport["width"] // 2, viewport["height"] - 10)  # no hover
    return page


def shoot_registry(chromium, mlflow: Server, aliases: list[str]) -> Path:
    """The registered model's page: every version with its aliases and tags."""
    page = open_page(chromium, f"{mlflow.url}/#/models/{NAME}", "Version 1", REGISTRY_VIEWPORT)
    for alias in aliases:
        page.get_by_text(f"@ {alias}", exact=True).wait_for(timeout=PAGE_TIMEOUT_MS)
    path = IMAGES / "mlflow-registry.png"
    page.screenshot(path=path, animations="disabled")
    page.close()
    return path


def shoot_version(chromium, mlflow: Server, version: str) -> Path:
    """A version's page: its aliases, source run and every tag, the month's figures first."""
    page = open_page(chromium, f"{mlflow.url}/#/models/{NAME}/versions/{version}",
                     "gate_reason", VERSION_VIEWPORT)
    # MLflow caps the tags table at five rows with a scroll bar of its own: unroll it.
    page.add_style_tag(content=".editable-table .du-bois-light-table-body "
                               "{max-height: none !important; overflow-y: visible !important}")
    page.get_by_text("pit.parent_version", exact=True).wait_for(timeout=PAGE_TIMEOUT_MS)
    path = IMAGES / "mlflow-registry-version.png"
    page.screenshot(path=path, animations="disabled")
    page.close()
    return path


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="pit-refresh-screenshot-") as tmp:
        home = Path(tmp)
        pages = monthly_pages()
        with services(home) as (_, mlflow, env):
            docs = []
            for i, (date, gate) in enumerate(MONTHS):
                write_month(home / "mirror", date, pages[i])
                print(f"refreshing from the {date} dump ...")
                docs.append(refresh(home / "mirror", home, env, date, gate))
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=mlflow.url, registry_uri=mlflow.url)
            verdicts = [client.get_model_version(NAME, d["model_version"]).tags["gate_verdict"]
                        for d in docs]
            print(figures_table(docs, verdicts))
            aliases = sorted(client.get_registered_model(NAME).aliases)
            with browser() as chromium:
                wrote(shoot_registry(chromium, mlflow, aliases))
                wrote(shoot_version(chromium, mlflow, docs[-1]["model_version"]))


if __name__ == "__main__":
    main()
