"""MLflow as its users expect it, read back from a real `mlflow server` after `pit compare`.

One recipe (`pit`, two stages) on the smoke world, compared twice: the runs
table's Dataset column, the Models tabs, the run's source and the
experiment's view after the first; no second set of logged models after the
second, which reuses every stage into new runs.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

import pit
from pit.cli import app
from pit.lineage import STAGE_HASH_TAG
from pit.tracking import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING,
    Tracker,
    code_version,
    source_tags,
)

EXPERIMENT = "mlflow-ux"


@pytest.fixture(scope="module")
def compared(tmp_path_factory, tiny_overrides, mlflow_server, prefect_harness):
    work = tmp_path_factory.mktemp("mlflow-ux")
    common = ["compare", "--preset", "smoke", "--methods", "pit", "--set", f"workdir={work}",
              "--set", f"tracking.tracking_uri={mlflow_server.url}",
              "--set", f"tracking.experiment={EXPERIMENT}",
              *[a for o in tiny_overrides for a in ("--set", o)]]
    client = MlflowClient(mlflow_server.url)
    docs, models = [], []
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        for name in ("first", "second"):
            out = CliRunner().invoke(app, [*common, "--results", str(work / f"{name}.json")])
            assert out.exit_code == 0, out.output + repr(out.exception)
            docs.append(json.loads((work / f"{name}.json").read_text()))
            exp = client.get_experiment_by_name(EXPERIMENT).experiment_id
            models.append(list(client.search_logged_models([exp])))
    finally:
        mp.undo()
    return client, docs, models


@pytest.mark.slow
@pytest.mark.integration
def test_recipe_and_parent_runs_list_the_data_set_with_its_fingerprint(compared):
    client, (doc, _), _ = compared
    for run_id in (doc["methods"]["pit"]["mlflow_run_id"], doc["mlflow_parent_run_id"]):
        inputs = {i.tags[0].value: i.dataset for i in client.get_run(run_id).inputs.dataset_inputs}
        assert set(inputs) == {"training", "evaluation"}
        train = inputs["training"]
        assert train.name == "synthetic-world-seed-0"
        assert train.digest == doc["dataset"]["fingerprint"]
        source = Path(json.loads(train.source)["uri"])
        assert train.source_type == "local" and (source / "docs").is_dir()
        assert source.name == doc["dataset"]["key"].split("/")[-1]
        assert json.loads(inputs["evaluation"].profile)["questions"] > 0


@pytest.mark.slow
@pytest.mark.integration
def test_each_stage_is_a_logged_model_with_its_metrics_and_store_url(compared):
    client, (doc, _), (models, _) = compared
    run = client.get_run(doc["methods"]["pit"]["mlflow_run_id"])
    by_stage = {int(m.params["stage"]): m for m in models}
    assert sorted(by_stage) == [0, 1]
    assert {o.model_id for o in run.outputs.model_outputs} == {m.model_id for m in models}
    for index, model in by_stage.items():
        assert model.name == f"pit-stage{index}-seed0" and model.status == "READY"
        assert model.source_run_id == run.info.run_id
        assert model.tags["pit.model"] == run.data.tags[f"pit.stage{index}.model"]
        assert (Path(model.tags["pit.model"]) / "model.safetensors").is_file()
        assert model.tags["pit.checkpoints"] == run.data.tags[f"pit.stage{index}.checkpoints"]
        metrics = {m.key: m for m in model.metrics}
        assert {"loss_doc", "test_doc_ppl", "exact_match"} <= set(metrics)
        assert {m.dataset_digest for m in model.metrics} == {doc["dataset"]["fingerprint"]}
        history = client.get_metric_history(run.info.run_id, "test_doc_ppl")
        assert metrics["test_doc_ppl"].value == [m.value for m in history
                                                 if m.step == metrics["test_doc_ppl"].step][0]
    # smoke: stage 0 is one PIT epoch, stage 1 two test-document epochs; no point twice
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test_doc_ppl")] == [1, 2, 3]
    assert {m.step for m in by_stage[1].metrics} == {3}


@pytest.mark.slow
@pytest.mark.integration
def test_runs_name_their_code_version(compared):
    client, (doc, _), _ = compared
    tags = client.get_run(doc["methods"]["pit"]["mlflow_run_id"]).data.tags
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"]
    assert tags["pit.version"] == pit.__version__
    head = subprocess.run(["git", "-C", str(Path(pit.__file__).parent), "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert tags["mlflow.source.git.commit"] == head
    assert tags["mlflow.user"]


@pytest.mark.slow
@pytest.mark.integration
def test_experiment_opens_in_the_model_training_view(compared, mlflow_server):
    client, _, _ = compared
    assert client.get_experiment_by_name(EXPERIMENT).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    old = client.create_experiment("made-before-pit-set-its-kind")
    tracker = Tracker(mlflow_server.url, "made-before-pit-set-its-kind")
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    assert tracker.experiment_url() == (f"{mlflow_server.url}/#/experiments/{old}/runs"
                                        "?workflowType=machine_learning")


@pytest.mark.slow
@pytest.mark.integration
def test_a_second_comparison_links_the_same_models_and_logs_none_again(compared):
    client, (first, second), (before, after) = compared
    run = client.get_run(second["methods"]["pit"]["mlflow_run_id"])
    assert run.info.run_id != first["methods"]["pit"]["mlflow_run_id"]
    assert sorted(m.model_id for m in after) == sorted(m.model_id for m in before)
    assert len({m.tags[STAGE_HASH_TAG] for m in after}) == len(after) == 2
    assert {o.model_id for o in run.outputs.model_outputs} == {m.model_id for m in before}
    assert [len(m.metrics) for m in after] == [len(m.metrics) for m in before]
    assert {i.dataset.digest for i in run.inputs.dataset_inputs} == {
        i.dataset.digest
        for i in client.get_run(first["methods"]["pit"]["mlflow_run_id"]).inputs.dataset_inputs}


def test_a_prefect_worker_run_is_a_job_named_after_its_flow_run():
    tags = source_tags({"PREFECT__FLOW_RUN_ID": "0b1c"})
    assert tags["mlflow.source.type"] == "JOB"
    assert tags["mlflow.source.name"] == "prefect flow run 0b1c"


def test_code_outside_a_checkout_has_a_version_and_no_commit(tmp_path):
    plain, repo = tmp_path / "plain", tmp_path / "repo"
    plain.mkdir()
    assert code_version(plain) == {"pit.version": pit.__version__}
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "__init__.py").write_text("")
    assert code_version(repo) == {"pit.version": pit.__version__}, "untracked: not this code"
