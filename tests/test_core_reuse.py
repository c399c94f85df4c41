"""`pit compare --data` on a published data set; finished work is found again by its key.

One data set is published with `pit data synth`, then compared on twice:

1. `pit` and `pit--` together: their first stages are the same work (same
   stage, model, data and seed), so it trains once and `pit--` reuses it,
   with the stage's per-epoch metrics logged to its own run;
2. `pit` again in a new comparison, after its last stage's output was lost
   (as when the first comparison was killed during that stage): the first
   stage is found and reused, only the lost one trains again.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from pit.cli import app
from pit.data.dataset import KnowledgeDataset
from pit.storage import MANIFEST

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def invoke(*args: str) -> str:
    out = CliRunner().invoke(app, list(args))
    assert out.exit_code == 0, out.output + repr(out.exception)
    return out.output


def manifests(root: Path, kind: str) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text())
            for p in sorted((root / kind).glob(f"*/{MANIFEST}"))}


@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_overrides, prefect_harness):
    work = tmp_path_factory.mktemp("reuse")
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    invoke("data", "synth", "--preset", "smoke", "--out", str(work / "films"), *sets)
    common = ["--preset", "smoke", "--data", str(work / "films"), "--set", f"workdir={work}",
              "--set", f"tracking.tracking_uri=sqlite:///{work / 'mlflow.db'}", *sets]
    first = work / "first.json"
    invoke("compare", "--methods", "pit,pit--", "--results", str(first), *common)
    return work, common, json.loads(first.read_text())


def test_compare_trains_on_the_published_folder_and_builds_no_world(published):
    work, _, doc = published
    assert doc["dataset"]["key"] == str(work / "films")
    assert doc["dataset"]["fingerprint"] == KnowledgeDataset.load(work / "films").fingerprint
    store = work / "artifacts"
    assert not (store / "datasets").exists()
    assert len(manifests(store, "models")) == 1
    for slug in ("pit", "pit--"):
        assert isinstance(doc["methods"][slug]["retention_em"], float)


def test_a_stage_shared_by_two_recipes_trains_once(published):
    work, _, doc = published
    stages = manifests(work / "artifacts", "stages")
    # pit: 2 stages, pit--: 3 stages, the first one shared
    assert len(stages) == 4
    shared = [m for name, m in stages.items() if name.startswith("s0-")]
    assert len(shared) == 1 and shared[0]["trained_for"] == "pit"
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    pit = client.get_run(doc["methods"]["pit"]["mlflow_run_id"])
    minus = client.get_run(doc["methods"]["pit--"]["mlflow_run_id"])
    assert minus.data.tags["pit.stage0.model"] == pit.data.tags["pit.stage0.model"]
    record = json.loads(Path(client.download_artifacts(minus.info.run_id,
                                                       "stages/stage-0.json")).read_text())
    assert record["reused"] is True and record["trained_for"] == "pit"
    for name in ("loss_doc", "loss_qa"):
        ours = client.get_metric_history(pit.info.run_id, name)
        theirs = client.get_metric_history(minus.info.run_id, name)
        assert [(m.step, m.value) for m in ours if m.step == 1] == \
            [(m.step, m.value) for m in theirs if m.step == 1]


def test_a_comparison_run_again_after_a_kill_reuses_the_stages_it_finished(published, caplog):
    work, common, doc = published
    store = work / "artifacts"
    before = manifests(store, "stages")
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    pit = client.get_run(doc["methods"]["pit"]["mlflow_run_id"])
    first_key = pit.data.tags["pit.stage0.model"]
    last_key = pit.data.tags["pit.stage1.model"]
    (Path(last_key) / MANIFEST).unlink()  # killed before its last stage was published

    again = work / "again.json"
    caplog.set_level(logging.INFO, logger="pit")
    invoke("compare", "--methods", "pit", "--results", str(again), *common)
    redo = json.loads(again.read_text())
    assert redo["mlflow_parent_run_id"] != doc["mlflow_parent_run_id"]
    after = manifests(store, "stages")
    assert after[Path(first_key).name]["published_at"] == \
        before[Path(first_key).name]["published_at"]
    assert Path(last_key).name in after
    assert f"pit stage 0 (seed 0) is already published at {first_key}" in caplog.text
    assert "pit stage 1 (seed 0) is already published" not in caplog.text
    run = client.get_run(redo["methods"]["pit"]["mlflow_run_id"])
    assert run.data.tags["pit.stage0.model"] == first_key
    assert run.data.tags["pit.stage1.model"] == last_key
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss_qa")]
    assert sorted(steps) == [1, 2, 3], "the reused stage's epoch 1 is logged to the new run, " \
        "beside the retrained stage's epochs 2 and 3 (its train QA that keep the format)"
    ppl = [m.step for m in client.get_metric_history(run.info.run_id, "test_doc_ppl")]
    assert sorted(ppl) == [1, 2, 3]
    assert redo["methods"]["pit"]["exact_match"] == doc["methods"]["pit"]["exact_match"]
