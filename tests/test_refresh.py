"""`pit refresh` month after month against a local dump mirror and a real MLflow registry.

The mirror holds monthly dumps cut from the real fixture pages, laid out as
Wikimedia's (`enwiki/<YYYYMMDD>/` with a `dumpstatus.json`; see
`refresh_mirror`): the films of the 1980s and later are the knowledge kept
current, the earlier films the old world asked about to measure forgetting.
As an operator meets it, month by month: the first run trains, scores and
promotes; a run with no new dump does nothing; a new dump gives a new
version, promoted over the first; an impossible gate leaves `champion`
where it was and tags the version with the reason. The small embedded
model's figures mean nothing here: the gate is opened wide where a test
needs a promotion, and made impossible where it needs a rejection.

A refresh killed mid-training (SIGKILL of the whole `pit refresh` process
group once the month's documents stage has a checkpoint) and run again
resumes that stage from its checkpoint and registers exactly one version.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from refresh_mirror import NEW, OLD, monthly_pages, write_month
from typer.testing import CliRunner

from pit.cli import app
from pit.storage import Store

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.retention_questions=6", "base.epochs=2", "train.test_doc_epochs=1",
        "eval.train_qa_sample=0", "eval.cloze=false"]
OPEN_GATE = ["--min-gain", "-100", "--max-forgetting", "100"]
RESULT_KEYS = {"status", "dump_date", "model_version", "gate_reason", "metrics",
               "registered_model", "mlflow_run_id"}
FIGURES = {"new_em", "new_em_gain", "retention_em", "forgetting"}


def refresh_args(mirror: Path, work: Path, name: str, results: Path, *extra: str) -> list[str]:
    sets = [a for s in TINY for a in ("--set", s)]
    return ["refresh", "--mirror", str(mirror), "--category", NEW, "--old-category", OLD,
            "--registered-model", name, "--cache", str(work / "dumps"), "--workers", "1",
            "--set", f"workdir={work}", *sets, "--results", str(results), *extra]


def stored_keys(work: Path) -> set[str]:
    root = work / "artifacts"
    return {str(p.relative_to(root)) for p in root.glob("*/*") if "tmp-" not in p.name}


@pytest.fixture(scope="module")
def months(tmp_path_factory, mlflow_server, prefect_harness):
    """Four refreshes in a row: month 1, no new dump, month 2, month 3 behind an impossible gate."""
    tmp = tmp_path_factory.mktemp("refresh")
    mirror, work = tmp / "mirror", tmp / "work"
    name = f"films-{uuid.uuid4().hex[:6]}"
    pages = monthly_pages()
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    runs: dict[str, dict] = {}

    def run(label: str, *extra: str) -> None:
        results = tmp / f"{label}.json"
        started = time.monotonic()
        out = CliRunner().invoke(app, refresh_args(mirror, work, name, results, *extra))
        assert out.exit_code == 0, out.output + repr(out.exception)
        runs[label] = {"doc": json.loads(results.read_text()), "output": out.output,
                       "seconds": time.monotonic() - started}

    try:
        write_month(mirror, "20230101", pages[0])
        write_month(mirror, "20230201", pages[1], status="in-progress")
        run("first", *OPEN_GATE)
        before = stored_keys(work)
        run("idle", *OPEN_GATE)
        runs["idle"]["new_keys"] = stored_keys(work) - before
        write_month(mirror, "20230201", pages[1])
        run("second", *OPEN_GATE)
        write_month(mirror, "20230301", pages[2])
        run("gated", "--min-gain", "1000", "--max-forgetting", "100")
    finally:
        mp.undo()
    return name, runs, MlflowClient(mlflow_server.url), work


def version(client: MlflowClient, name: str, number: str):
    return client.get_model_version(name, number)


def test_the_first_month_trains_scores_and_promotes(months):
    name, runs, client, _ = months
    doc = runs["first"]["doc"]
    assert set(doc) == RESULT_KEYS and set(doc["metrics"]) == FIGURES
    assert (doc["status"], doc["dump_date"], doc["model_version"]) == ("promoted", "20230101", "1")
    assert all(isinstance(v, float) and -100 <= v <= 100 for v in doc["metrics"].values())
    tags = version(client, name, "1").tags
    assert tags["dump_date"] == "20230101" and tags["gate_verdict"] == "promoted"
    assert tags["pit.parent_version"] == "" and tags["pit.start_model"].startswith("models/base-")
    for figure in FIGURES:
        assert float(tags[figure]) == pytest.approx(doc["metrics"][figure], abs=0.01)
    assert version(client, name, "1").source == f"runs:/{doc['mlflow_run_id']}/model"
    artifacts = {a.path for a in client.list_artifacts(doc["mlflow_run_id"], "model")}
    assert "model/model.safetensors" in artifacts


def test_a_run_with_no_new_finished_dump_is_a_quick_no_op(months):
    name, runs, client, _ = months
    idle = runs["idle"]
    assert idle["doc"]["status"] == "no-new-dump"
    assert idle["doc"]["dump_date"] == "20230101"  # 20230201 was still in progress
    assert idle["doc"]["model_version"] is None and idle["doc"]["mlflow_run_id"] is None
    assert idle["new_keys"] == set(), "a run with nothing to learn built something"
    assert idle["seconds"] < 0.5 * runs["first"]["seconds"], (idle["seconds"],
                                                              runs["first"]["seconds"])


def test_a_new_dump_registers_a_new_version_trained_from_the_champion(months):
    name, runs, client, work = months
    doc = runs["second"]["doc"]
    assert (doc["status"], doc["dump_date"], doc["model_version"]) == ("promoted", "20230201", "2")
    tags = version(client, name, "2").tags
    first = version(client, name, "1").tags
    assert tags["pit.parent_version"] == "1"
    assert tags["pit.start_model"] == first["pit.model_key"]
    assert tags["dataset_fingerprint"] != first["dataset_fingerprint"]
    card = json.loads(next((work / "artifacts" / "datasets").glob(
        "refresh-20230201-*/card.json")).read_text())
    assert card["meta"]["changes"] == {"new": 6, "changed": 1, "removed": 0}
    assert card["stats"]["films/test/docs"] == 7


def test_an_impossible_gate_keeps_the_champion_and_tags_the_reason(months):
    name, runs, client, _ = months
    doc = runs["gated"]["doc"]
    assert (doc["status"], doc["dump_date"], doc["model_version"]) == ("rejected", "20230301", "3")
    assert "below the minimum +1000.0" in doc["gate_reason"]
    aliases = {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}
    assert aliases == {"champion": "2", "previous-champion": "1", "challenger": "3"}
    tags = version(client, name, "3").tags
    assert tags["gate_verdict"] == "rejected" and tags["gate_reason"] == doc["gate_reason"]
    assert tags["pit.parent_version"] == "2"


def test_each_month_is_one_run_of_one_experiment_with_its_figures_at_its_month(months):
    name, runs, client, _ = months
    exp = client.get_experiment_by_name(f"refresh-{name}")
    found = {r.info.run_id: r for r in client.search_runs([exp.experiment_id])}
    ids = [runs[m]["doc"]["mlflow_run_id"] for m in ("first", "second", "gated")]
    assert set(found) == set(ids)
    assert {r.info.status for r in found.values()} == {"FINISHED"}
    for month, run_id in enumerate(ids):
        history = client.get_metric_history(run_id, "refresh/new_em")
        assert [m.step for m in history] == [month]
    assert len(client.search_model_versions(f"name='{name}'")) == 3


def test_the_state_records_every_processed_dump_last(months):
    name, runs, _, work = months
    state = json.loads(Store(str(work / "artifacts")).read_file(f"refresh/{name}/state",
                                                                "state.json"))
    assert [(m["dump_date"], m["status"], m["model_version"]) for m in state["months"]] == [
        ("20230101", "promoted", "1"), ("20230201", "promoted", "2"),
        ("20230301", "rejected", "3")]


def test_the_month_is_published_as_a_prefect_artifact_with_its_links(months, mlflow_server):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    name, runs, client, _ = months
    uri = mlflow_server.url
    with get_client(sync_client=True) as prefect:
        found = prefect.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[f"knowledge-refresh-{name}"])))
    texts = [a.data for a in found]
    rejected = next(t for t in texts if "20230301" in t)
    assert "rejected" in rejected and "| new-knowledge EM" in rejected
    run_id = runs["gated"]["doc"]["mlflow_run_id"]
    assert f"({uri}/#/experiments/" in rejected and run_id in rejected
    assert f"{uri}/#/models/{name}/versions/3" in rejected


# --- killed mid-training ------------------------------------------------------------------

KILL_STAGE = ["--set", "train.doc_batch_size=1", "--set", "checkpoint.every_steps=2",
              "--set", "train.test_doc_epochs=3"]


def _env(tmp_path: Path, tracking_uri: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PIT_"))}
    return {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PIT_PROGRESS": "0",
            "PREFECT_HOME": str(tmp_path / "prefect"), "MLFLOW_TRACKING_URI": tracking_uri}


def _documents_stage_checkpoint(work: Path) -> bool:
    """Whether the stage that learns the month's documents has published a checkpoint."""
    return any((work / "artifacts" / "checkpoints").glob("s1-*/step-*/MANIFEST.json"))


def test_a_refresh_killed_mid_training_resumes_and_registers_one_version(tmp_path,
                                                                          mlflow_server):
    client = MlflowClient(mlflow_server.url)
    mirror, work = tmp_path / "mirror", tmp_path / "work"
    write_month(mirror, "20230101", monthly_pages()[0])
    name = f"killed-{uuid.uuid4().hex[:6]}"
    results = tmp_path / "results.json"
    cmd = [sys.executable, "-m", "pit.cli",
           *refresh_args(mirror, work, name, results, *OPEN_GATE, *KILL_STAGE)]
    env = _env(tmp_path, mlflow_server.url)

    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        deadline = time.time() + 600
        while not _documents_stage_checkpoint(work):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-5000:]
            assert time.time() < deadline, "no checkpoint of the documents stage in 600 s"
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        log.close()
    assert not list((work / "artifacts" / "stages").glob("s1-*/MANIFEST.json")), \
        "the documents stage finished before the kill"
    assert client.search_model_versions(f"name='{name}'") == []
    assert Store(str(work / "artifacts")).read_manifest(f"refresh/{name}/state") is None

    again = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-6000:]
    doc = json.loads(results.read_text())
    assert (doc["status"], doc["model_version"]) == ("promoted", "1")
    (stage,) = (work / "artifacts" / "stages").glob("s1-*/MANIFEST.json")
    assert json.loads(stage.read_text())["resumed_from_step"] > 0
    assert [str(v.version) for v in client.search_model_versions(f"name='{name}'")] == ["1"]
    exp = client.get_experiment_by_name(f"refresh-{name}")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_id == doc["mlflow_run_id"] and run.info.status == "FINISHED"
    assert run.data.tags["pit.attempts"] == "2"
