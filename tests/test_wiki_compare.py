"""Real knowledge end to end: `pit data wiki` on the fixture dump, then `pit compare --data` on it.

The data set is built as a user builds one: films of the 1980s and later are
the new knowledge (train and test), earlier films the old world (the year
regexes of `test_wiki_old_world`). The comparison runs the smoke set of
recipes on it with the embedded small model, pre-trained from scratch on the
old split, through Prefect (the test harness) and a real `mlflow server`.
Recipes the data set cannot serve would be left out of the run and must fail
before any training with the message that names what is missing; on this
data set every recipe of the set runs, and the cross-domain setting (one
domain only) is the case that must fail up front.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from real_data import ENWIKI_FILMS
from typer.testing import CliRunner

from pit.artifacts import model_path
from pit.base import base_examples
from pit.cli import app
from pit.config_sources import load_config
from pit.data.checks import dataset_problems
from pit.data.dataset import KnowledgeDataset
from pit.data.views import retention_questions
from pit.keys import base_key
from pit.modeling import load_model
from pit.recipe import select_recipes
from pit.train.examples import ExampleBuilder
from pit.train.runner import examples_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]

DUMP = ENWIKI_FILMS / "enwikifilms-20220801-pages-articles-multistream.xml.bz2"
INDEX = ENWIKI_FILMS / "enwikifilms-20220801-pages-articles-multistream-index.txt.bz2"
NEW = r"^(19[89]\d|20\d\d) films$"
OLD = r"^19[0-7]\d films$"
SHRINK = ["data.retention_questions=6", "base.epochs=2", "train.test_doc_epochs=2"]
METRICS = ("exact_match", "answer_recall", "rouge_l", "f1", "test_doc_ppl", "retention_em",
           "forgetting")


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def flat(text: str) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(text.split())


def settings(work: Path, films: Path) -> list[str]:
    """The config of the comparison as `--set` pairs, so the test can rebuild it."""
    return [f"data.source={films}", f"workdir={work}", "tracking.experiment=wiki-e2e", *SHRINK]


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wiki") / "films"
    result = invoke("data", "wiki", "--dump", str(DUMP), "--index", str(INDEX),
                    "--category", NEW, "--old-category", OLD, "--out", str(out),
                    "--workers", "1")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def compared(tmp_path_factory, films, mlflow_server, prefect_harness):
    """The smoke set's recipes the data set supports, compared; the others, each refused."""
    work = tmp_path_factory.mktemp("compare")
    cfg = load_config("smoke", None, settings(work, films))
    ds = KnowledgeDataset.load(films)
    supported, refused = [], {}
    for recipe in select_recipes(cfg.methods):
        problems = dataset_problems(ds, cfg, [recipe])
        if problems:
            refused[recipe.slug] = problems
        else:
            supported.append(recipe.slug)
    assert supported, refused
    sets = [a for s in SHRINK for a in ("--set", s)]
    common = ["--preset", "smoke", "--data", str(films), "--set", f"workdir={work}",
              "--set", "tracking.experiment=wiki-e2e", *sets]
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    try:
        for slug, problems in refused.items():
            out = invoke("compare", "--methods", slug, *common)
            assert out.exit_code == 2, out.output
            assert f"data set {films} lacks what {slug} need" in flat(out.output)
            assert all(flat(p) in flat(out.output) for p in problems)
        results = work / "r.json"
        out = invoke("compare", "--methods", ",".join(supported), "--results", str(results),
                     *common)
    finally:
        mp.undo()
    assert out.exit_code == 0, out.output + repr(out.exception)
    return cfg, ds, supported, json.loads(results.read_text()), MlflowClient(mlflow_server.url)


def test_every_recipe_of_the_smoke_set_runs_on_the_wiki_data_set(compared):
    cfg, ds, supported, _, _ = compared
    assert supported == [r.slug for r in select_recipes(cfg.methods)]
    assert dataset_problems(ds, cfg, select_recipes(cfg.methods)) == []


def test_every_recipe_has_numeric_metrics_with_retention_and_forgetting(compared):
    cfg, ds, supported, doc, _ = compared
    assert doc["dataset"]["fingerprint"] == ds.fingerprint
    assert list(doc["methods"]) == supported
    for slug, res in doc["methods"].items():
        for key in METRICS:
            assert isinstance(res[key], float), (slug, key)
        assert 0 <= res["exact_match"] <= 100 and 0 <= res["retention_em"] <= 100
        assert res["test_doc_ppl"] > 1


def test_retention_is_asked_on_old_questions_no_training_example_contains(compared):
    cfg, ds, supported, _, _ = compared
    held_out = retention_questions(ds, cfg.data)
    assert len(held_out) == cfg.data.retention_questions
    assert {q["split"] for q in held_out} == {"old"}
    assert {q["doc_id"] for q in held_out} <= {d["doc_id"] for d in ds.docs_where("old")}

    _, tokenizer = load_model(model_path(cfg, base_key(cfg, ds.fingerprint)), cfg.model)
    builder = ExampleBuilder(tokenizer, cfg.model.max_seq_len)
    trained = [tokenizer.decode(e.input_ids) for e in base_examples(cfg, ds, builder)]
    for recipe in select_recipes(supported):
        for stage in recipe.stages:
            trained += [tokenizer.decode(e.input_ids)
                        for e in examples_for(cfg, ds, stage, builder, cfg.train)]
    assert any("Question:" in text for text in trained)
    for q in held_out:
        assert not [t for t in trained if q["question"] in t], q["question"]


def test_mlflow_runs_are_finished_with_the_data_set_fingerprint(compared):
    _, ds, supported, doc, client = compared
    parent = client.get_run(doc["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.params["dataset_fingerprint"] == ds.fingerprint
    assert "base_retention_em" in parent.data.metrics
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
        max_results=100)
    assert sorted(r.data.tags["recipe"] for r in children) == sorted(supported)
    for run in children:
        assert run.info.status == "FINISHED", run.data.tags["recipe"]
        assert run.data.params["dataset_fingerprint"] == ds.fingerprint
        assert {"retention_em", "forgetting"} <= set(run.data.metrics)


def test_a_cross_domain_run_on_the_one_domain_data_set_fails_before_training(
        films, prefect_harness, tmp_path):
    out = invoke("compare", "--data", str(films), "--methods", "pit",
                 "--set", "train.cross_domain=true", "--set", f"workdir={tmp_path}")
    assert out.exit_code == 2, out.output
    assert "train.cross_domain is on but the data set has one domain only; add a domain with " \
           "`pit data wiki --domain NAME=REGEX`, or set train.cross_domain=false" \
           in flat(out.output)
    assert not (tmp_path / "artifacts" / "models").exists()
