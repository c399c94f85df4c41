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
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import typer
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient
from refresh_mirror import NEW, OLD, monthly_pages, write_month
from services import kill_group_when
from typer.testing import CliRunner

from pit.cli import app
from pit.config import DataConfig
from pit.data.dataset import KnowledgeDataset
from pit.data.views import retention_questions
from pit.errors import DataError
from pit.recipe import select_recipes
from pit.refresh import (
    REFRESH_RECIPES,
    Gate,
    RefreshParams,
    Verdict,
    changes,
    earlier_questions,
    month_dataset,
    newer_dump,
)
from pit.refresh.registry import CHAMPION, Registry
from pit.storage import Store


def integration(test):
    """Marks a test that trains and talks to a real MLflow server (and Prefect)."""
    return pytest.mark.slow(pytest.mark.integration(test))

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
    """Refreshes in a row: month 1; no new dump; month 2; month 2 again as if its state had
    not been written (a crash after registering); month 3 behind an impossible gate."""
    tmp = tmp_path_factory.mktemp("refresh")
    mirror, work = tmp / "mirror", tmp / "work"
    name = f"films-{uuid.uuid4().hex[:6]}"
    pages = monthly_pages()
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    runs: dict[str, dict] = {}

    def run(label: str, *extra: str) -> None:
        results = tmp / f"{label}.json"
        out = CliRunner().invoke(app, refresh_args(mirror, work, name, results, *extra))
        assert out.exit_code == 0, out.output + repr(out.exception)
        runs[label] = {"doc": json.loads(results.read_text()), "output": out.output}

    try:
        write_month(mirror, "20230101", pages[0])
        write_month(mirror, "20230201", pages[1], status="in-progress")
        run("first", *OPEN_GATE)
        before = stored_keys(work)
        run("idle", *OPEN_GATE)
        runs["idle"]["new_keys"] = stored_keys(work) - before
        state = work / "artifacts" / "refresh" / name / "state"
        shutil.copytree(state, tmp / "state-after-first")
        write_month(mirror, "20230201", pages[1])
        run("second", *OPEN_GATE)
        shutil.rmtree(state)
        shutil.copytree(tmp / "state-after-first", state)
        before = stored_keys(work)
        run("second-again", *OPEN_GATE)
        runs["second-again"]["new_keys"] = stored_keys(work) - before
        write_month(mirror, "20230301", pages[2])
        run("gated", "--min-gain", "1000", "--max-forgetting", "100")
    finally:
        mp.undo()
    return name, runs, MlflowClient(mlflow_server.url), work


def version(client: MlflowClient, name: str, number: str):
    return client.get_model_version(name, number)


@integration
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


@integration
def test_a_run_with_no_new_finished_dump_builds_and_registers_nothing(months):
    name, runs, client, _ = months
    idle = runs["idle"]
    assert idle["doc"]["status"] == "no-new-dump"
    assert idle["doc"]["dump_date"] == "20230101"  # 20230201 was still in progress
    assert idle["doc"]["model_version"] is None and idle["doc"]["mlflow_run_id"] is None
    assert idle["new_keys"] == set(), "a run with nothing to learn built something"


@integration
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


@integration
def test_a_month_run_again_after_registering_finds_its_version_instead_of_a_second(months):
    name, runs, client, _ = months
    first, again = runs["second"], runs["second-again"]
    assert again["doc"] == first["doc"]
    assert again["new_keys"] == set(), "the month trained or scored again"
    assert [str(v.version) for v in client.search_model_versions(
        f"name='{name}' and tags.dump_date = '20230201'")] == ["2"]


@integration
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


@integration
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


@integration
def test_the_state_records_every_processed_dump_last(months):
    name, runs, _, work = months
    state = json.loads(Store(str(work / "artifacts")).read_file(f"refresh/{name}/state",
                                                                "state.json"))
    assert [(m["dump_date"], m["status"], m["model_version"]) for m in state["months"]] == [
        ("20230101", "promoted", "1"), ("20230201", "promoted", "2"),
        ("20230301", "rejected", "3")]


@integration
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


@integration
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

    kill_group_when(cmd, env, ROOT, tmp_path / "first.log",
                    lambda: _documents_stage_checkpoint(work),
                    "checkpoint of the documents stage")
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


# --- the pieces, without services ---------------------------------------------------------


def test_the_gate_wants_enough_gain_and_little_forgetting_and_says_why():
    gate = Gate(min_gain=1.0, max_forgetting=5.0)
    assert gate.judge(2.0, 5.0) == Verdict(True, "new-knowledge EM gain +2.0 >= +1.0; "
                                                 "forgetting 5.0 <= 5.0")
    low = gate.judge(0.5, 0.0)
    assert not low.passed and low.reason == "new-knowledge EM gain +0.5 is below the minimum +1.0"
    both = gate.judge(0.0, 7.5)
    assert both.status == "rejected" and "forgetting 7.5 exceeds the maximum 5.0" in both.reason
    assert "below the minimum" in both.reason
    blind = gate.judge(3.0, None)
    assert not blind.passed and "data.retention_questions" in blind.reason


def _snapshot(pages: dict[int, int], old: dict[int, int], date: str) -> KnowledgeDataset:
    """A snapshot of category pages and old pages (page id -> revision), two questions each."""
    docs, qa = [], []
    for split, group in (("test", pages), ("old", old)):
        for pid, rev in group.items():
            doc_id = f"enwiki-{pid}"
            docs.append({"doc_id": doc_id, "entity_id": str(pid), "title": f"Film {pid}",
                         "text": f"Film {pid}, revision {rev}.", "domain": "films",
                         "split": split if split == "old" else ("test" if pid % 2 else "train"),
                         "source": {"page_id": pid, "revision_id": rev, "dump_date": date}})
            qa += [{"qa_id": f"{doc_id}-q{i}", "doc_id": doc_id, "entity_id": str(pid),
                    "question": f"Q{i} of film {pid}?", "answers": [f"A{i}"], "split": "x",
                    "generator": "infobox"} for i in range(2)]
    return KnowledgeDataset(docs=docs, qa=qa, meta={"dump_date": date})


def test_the_month_learns_new_and_changed_pages_and_trains_on_the_earlier_ones():
    data = DataConfig(retention_questions=2)
    old = {1: 10, 2: 20}
    first = _snapshot({100: 1, 101: 1}, old, "20230101")
    month0 = month_dataset(first, None, data)
    assert {d["entity_id"] for d in month0.docs_where("test")} == {"100", "101"}
    # First month: the old world stands in as the train side, the probe questions left out.
    probe = {q["qa_id"] for q in retention_questions(month0, data)}
    assert len(probe) == 2 and {q["split"] for q in month0.qa if q["qa_id"] in probe} == {"old"}
    assert {d["entity_id"] for d in month0.docs_where("train")} == {"1", "2"}
    assert {q["qa_id"] for q in month0.qa_where("train")} == {
        q["qa_id"] for q in month0.qa_where("old")} - probe
    assert earlier_questions(month0, data) == []

    second = _snapshot({100: 1, 101: 2, 102: 1}, old, "20230201")
    month1 = month_dataset(second, first, data)
    assert changes(second, first) == {"new": [102], "changed": [101], "removed": []}
    assert {d["entity_id"] for d in month1.docs_where("test")} == {"101", "102"}
    assert {d["entity_id"] for d in month1.docs_where("train")} == {"100"}
    assert {d["entity_id"] for d in month1.docs_where("old")} == {"1", "2"}
    assert all(q["split"] == "test" for q in month1.qa if q["entity_id"] in ("101", "102"))
    assert {q["entity_id"] for q in earlier_questions(month1, data)} == {"100"}
    assert [q["qa_id"] for q in retention_questions(month1, data)] == [
        q["qa_id"] for q in retention_questions(month0, data)], "the probe set moved"


def test_every_refresh_recipe_is_shipped_and_learns_the_month_s_documents():
    for slug in REFRESH_RECIPES:
        (recipe,) = select_recipes([slug])
        assert any(st.reads_test_docs for st in recipe.stages), slug


def test_replay_adds_old_documents_to_the_stage_that_learns_new_ones():
    params = RefreshParams(mirror="m", category="c", registered_model="r", replay=0.5)
    recipe = params.recipe_for()
    assert [st.source_names for st in recipe.stages] == [
        ["train_qa", "train_docs"], ["test_docs", "train_qa", "replay"]]
    assert params.config().train.replay_share == 0.5
    plain = RefreshParams(mirror="m", category="c", registered_model="r").recipe_for()
    assert plain == select_recipes(["pit"])[0]


def test_bad_options_are_reported_together_and_exit_2(tmp_path):
    params = RefreshParams(mirror=" ", category="(", old_category="[",
                           registered_model="films refresh")
    assert len(params.problems()) == 4
    out = CliRunner().invoke(app, ["refresh", "--mirror", str(tmp_path), "--category", "(",
                                   "--registered-model", "a b"])
    assert out.exit_code == 2
    assert "category regex '('" in out.output and "registered_model 'a b'" in out.output


def test_the_newest_finished_dump_after_the_last_processed_is_found(tmp_path):
    pages = monthly_pages()
    with pytest.raises(DataError, match="no enwiki/YYYYMMDD dump folders"):
        (tmp_path / "mirror" / "enwiki").mkdir(parents=True)
        newer_dump(str(tmp_path / "mirror"), "enwiki", None)
    write_month(tmp_path / "mirror", "20230101", pages[0])
    write_month(tmp_path / "mirror", "20230201", pages[1])
    write_month(tmp_path / "mirror", "20230301", pages[2], status="in-progress")
    assert newer_dump(str(tmp_path / "mirror"), "enwiki", None).date == "20230201"
    assert newer_dump(str(tmp_path / "mirror"), "enwiki", "20230101").date == "20230201"
    assert newer_dump(str(tmp_path / "mirror"), "enwiki", "20230201") is None


def test_the_cli_and_the_flow_offer_the_same_described_options():
    from flows.refresh import knowledge_refresh

    command = typer.main.get_command(app).commands["refresh"]
    renamed = {"config": "config_file", "set_": "overrides"}
    options = {renamed.get(p.name, p.name): p for p in command.params if p.name != "results"}
    assert set(options) == set(RefreshParams.model_fields)
    for name, field in RefreshParams.model_fields.items():
        assert field.description, name
        if name != "overrides":
            assert field.description in options[name].help, name
        if not field.is_required() and name not in ("preset", "overrides"):
            assert options[name].default == field.default, name
    schema = knowledge_refresh.parameters.model_dump()["definitions"]["RefreshParams"]
    assert all(p.get("description") for p in schema["properties"].values())
    # Closed choices are enums, which the Prefect UI shows as drop-downs.
    assert set(schema["properties"]["recipe"]["enum"]) == set(REFRESH_RECIPES)


@pytest.mark.integration
def test_champion_moves_only_from_the_version_a_month_started_from(mlflow_server):
    registry = Registry(mlflow_server.url, f"aliases-{uuid.uuid4().hex[:6]}")
    exp = registry.client.create_experiment(f"aliases-{uuid.uuid4().hex[:6]}")
    passed = Verdict(True, "enough gain, little forgetting")

    def register(dump_date: str, parent: str) -> ModelVersion:
        run_id = registry.client.create_run(exp).info.run_id
        tags = {"dump_date": dump_date, "dataset_fingerprint": f"fp-{dump_date}",
                "gate_verdict": "promoted", "gate_reason": passed.reason,
                "pit.parent_version": parent}
        return registry.register(f"runs:/{run_id}/model", run_id, tags, dump_date)

    def aliases() -> dict[str, str]:
        got = registry.client.get_registered_model(registry.name).aliases
        return {k: str(v) for k, v in got.items()}

    assert registry.alias(CHAMPION) is None  # no registered model yet
    first = register("20230101", "")
    assert registry.promote(first, passed).status == "promoted"
    late, early = register("20230201", "1"), register("20230202", "1")
    assert registry.promote(early, passed).status == "promoted"
    assert aliases() == {"champion": "3", "previous-champion": "1", "challenger": "3"}
    # Trained from version 1, compared with it: not promoted over version 3.
    moved = registry.promote(late, passed)
    assert moved.status == "rejected" and "champion moved from 1 to 3" in moved.reason
    assert aliases() == {"champion": "3", "previous-champion": "1", "challenger": "2"}
    assert registry.client.get_model_version(registry.name, "2").tags["gate_verdict"] == \
        "rejected"
    # An attempt that gets this far again changes nothing.
    assert registry.promote(early, passed).status == "promoted"
    assert aliases()["champion"] == "3" and aliases()["previous-champion"] == "1"
    assert registry.find("20230202", "fp-20230202").version == early.version
    assert registry.find("20230202", "fp-other") is None
