"""The smoke comparison end to end: CLI -> Prefect flows -> real MLflow server -> results JSON."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient
from test_core_recipes import TABLE_SLUGS
from typer.testing import CliRunner

from pit.cli import app

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, mlflow_server, prefect_harness):
    work = tmp_path_factory.mktemp("smoke")
    results = work / "r.json"
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    try:
        out = CliRunner().invoke(app, ["compare", "--preset", "smoke", "--results", str(results),
                                       "--set", f"workdir={work}",
                                       "--set", "tracking.experiment=smoke-e2e"])
    finally:
        mp.undo()
    assert out.exit_code == 0, out.output + repr(out.exception)
    return json.loads(results.read_text()), MlflowClient(mlflow_server.url), out.output


def test_results_json_holds_every_slug_with_numeric_metrics(smoke_run):
    doc, _, _ = smoke_run
    assert doc["preset"] == "smoke" and doc["model"] == "embedded"
    assert doc["dataset"]["fingerprint"]
    assert list(doc["methods"]) == TABLE_SLUGS
    for slug, res in doc["methods"].items():
        for key in ("exact_match", "answer_recall", "rouge_l", "f1", "test_doc_ppl",
                    "retention_em", "forgetting"):
            assert isinstance(res[key], float), (slug, key)
        assert 0 <= res["exact_match"] <= 100
        assert res["test_doc_ppl"] > 1
        assert len(res["per_seed"]) == 1 and res["mlflow_run_id"]


def test_mlflow_holds_a_parent_with_one_nested_run_per_recipe(smoke_run):
    doc, client, _ = smoke_run
    parent = client.get_run(doc["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED"
    exp = parent.info.experiment_id
    children = client.search_runs(
        [exp], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'", max_results=100)
    assert sorted(r.data.tags["recipe"] for r in children) == sorted(TABLE_SLUGS)
    assert all(r.info.status == "FINISHED" for r in children)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"comparison.json", "comparison.png"} <= artifacts


def test_nested_run_has_params_per_epoch_metrics_and_predictions(smoke_run):
    doc, client, _ = smoke_run
    run = client.get_run(doc["methods"]["pit"]["mlflow_run_id"])
    assert run.data.params["recipe"] == "pit"
    assert run.data.params["dataset_fingerprint"] == doc["dataset"]["fingerprint"]
    assert "train.doc_lr" in run.data.params
    # smoke: 1 PIT epoch (scored at the stage's end), then 2 test-document epochs, each scored
    ppl_steps = [m.step for m in client.get_metric_history(run.info.run_id, "test_doc_ppl")]
    assert ppl_steps == [1, 2, 3]
    fmt = [m.step for m in client.get_metric_history(run.info.run_id, "train_qa_em")]
    assert fmt == [1, 2, 3], "the answer format is checked after every stage"
    loss_steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss_doc")]
    assert loss_steps == [1, 2, 3]
    assert "predictions.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert run.data.metrics["exact_match"] == pytest.approx(doc["methods"]["pit"]["exact_match"])


def test_table_is_printed_beside_the_paper(smoke_run):
    _, _, output = smoke_run
    assert "pit++" in output and "48.1 / 54.4 / 66.4" in output
