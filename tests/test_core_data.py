"""The data section: where a data set comes from, what it must hold, which questions stay out."""

from __future__ import annotations

import json

import pytest

from pit.base import base_examples
from pit.config_sources import load_config
from pit.data.checks import check_dataset
from pit.data.dataset import KnowledgeDataset
from pit.data.source import build_dataset, dataset_folder, load_dataset
from pit.data.views import retention_questions
from pit.data.world import build_world
from pit.errors import DataError
from pit.modeling import train_tokenizer
from pit.recipe import all_recipes, parse_recipe, select_recipes
from pit.storage import MANIFEST
from pit.train.examples import ExampleBuilder
from pit.train.runner import examples_for

REPLAY = parse_recipe(
    "slug: replay\ndescription: test docs with the old world replayed\n"
    "stages:\n  - sources: [test_docs, old_docs, old_qa]\n", "replay.yaml")


def doc(i: str, entity: str, domain: str, split: str) -> dict:
    return {"doc_id": i, "entity_id": entity, "title": entity, "text": f"{entity} is a thing.",
            "domain": domain, "split": split, "source": {}}


def qa(i: str, entity: str, split: str) -> dict:
    return {"qa_id": i, "doc_id": f"{entity}-d", "entity_id": entity,
            "question": f"What is {entity}?", "answers": ["a thing"], "split": split,
            "generator": "test"}


# -- what a data set must hold ---------------------------------------------------------------


def test_a_data_set_lacking_what_the_recipes_need_fails_with_every_problem_at_once(tmp_path):
    """Test docs and QA only, one domain, no old split, no train rows."""
    ds = KnowledgeDataset(docs=[doc("t-d", "t", "films", "test")], qa=[qa("t-q", "t", "test")])
    cfg = load_config("smoke", overrides=[f"data.source={tmp_path}", "train.cross_domain=true"])
    with pytest.raises(DataError) as e:
        check_dataset(ds, cfg, select_recipes(["closed-book", "cpt", "pit"]) + [REPLAY])
    text = str(e.value)
    assert text.startswith(f"data set {tmp_path} lacks what closed-book, cpt, pit, replay need:")
    lines = [line for line in text.splitlines() if line.startswith("  - ")]
    expected = [
        "train.cross_domain is on but the data set has one domain only; add a domain with "
        "`pit data wiki --domain NAME=REGEX`, or set train.cross_domain=false",
        "no old split to pre-train the embedded model on; add earlier pages with `pit data wiki "
        "--old-category REGEX`, or start from a pretrained model with --model",
        "no old split QA to measure retention on; add earlier pages with `pit data wiki "
        "--old-category REGEX`, or set data.retention_questions=0",
        "no old documents, replayed by replay; add earlier pages with `pit data wiki "
        "--old-category REGEX`",
    ]
    assert [line[4:] for line in lines[:4]] == expected
    assert any("no old QA left to replay in replay" in line for line in lines)
    assert len(lines) == 5


def test_missing_train_rows_name_the_recipes_that_read_them():
    docs = [doc("t-d", "t", "films", "test"), doc("o-d", "o", "films", "old")]
    ds = KnowledgeDataset(docs=docs, qa=[qa("t-q", "t", "test"), qa("o-q", "o", "old")])
    cfg = load_config("smoke", overrides=["data.source=/d", "data.retention_questions=1"])
    with pytest.raises(DataError) as e:
        check_dataset(ds, cfg, select_recipes(["closed-book", "cpt-it", "pit"]))
    text = str(e.value)
    assert "no train QA in domain 'films', needed by cpt-it, pit; add LLM QA" in text
    assert "no train documents in domain 'films', needed by cpt-it, pit; lower `pit data " \
        "wiki --test-fraction`" in text
    assert "no train QA in domain 'films' to show as the 2 demonstrations of closed-book; " \
        "add train QA or set eval.few_shot=0" in text
    assert text.count("\n  - ") == 3


def test_an_unknown_test_domain_lists_the_domains_there_are():
    ds = build_world(load_config("smoke").world)
    cfg = load_config("smoke", overrides=["data.test_domain=plays"])
    with pytest.raises(DataError, match=r"no domain 'plays' to test on \(domains: films, "
                                        r"novels\); set data.test_domain"):
        check_dataset(ds, cfg, select_recipes(["pit"]))


def test_the_synthetic_world_suits_every_recipe():
    cfg = load_config("smoke", overrides=["train.cross_domain=true"])
    check_dataset(build_world(cfg.world), cfg, list(all_recipes().values()) + [REPLAY])


# -- retention questions ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def world_setup(tiny_overrides):
    cfg = load_config("smoke", overrides=tiny_overrides)
    ds = build_world(cfg.world)
    tok = train_tokenizer([d["text"] for d in ds.docs] + [q["question"] for q in ds.qa], 600)
    return cfg, ds, ExampleBuilder(tok, 1024)


def test_retention_questions_are_never_trained_on(world_setup):
    cfg, ds, builder = world_setup
    held_out = [q["question"] for q in retention_questions(ds, cfg.data)]
    assert len(held_out) == cfg.data.retention_questions

    def texts(examples) -> list[str]:
        return [builder.tok.decode(e.input_ids) for e in examples]

    base = texts(base_examples(cfg, ds, builder))
    kept = [q["question"] for q in ds.qa_where("old") if q["question"] not in held_out]
    assert kept and all(any(k in t for t in base) for k in kept)
    trained = list(base)
    for recipe in [*all_recipes().values(), REPLAY]:
        for stage in recipe.stages:
            trained += texts(examples_for(cfg, ds, stage, builder, cfg.train))
    assert not [q for q in held_out if any(q in t for t in trained)]


def test_retention_questions_depend_on_their_ids_alone(world_setup):
    cfg, ds, _ = world_setup
    chosen = [q["qa_id"] for q in retention_questions(ds, cfg.data)]
    shuffled = KnowledgeDataset(docs=ds.docs[::-1], qa=[q for q in ds.qa[::-1]
                                                        if q["split"] != "train"])
    assert [q["qa_id"] for q in retention_questions(shuffled, cfg.data)] == chosen
    old = ds.qa_where("old")
    assert chosen != [q["qa_id"] for q in old[: len(chosen)]], "a hash sample, not the first"


# -- where a data set comes from -------------------------------------------------------------


def test_a_published_folder_a_store_key_and_the_synthetic_world_load_alike(tmp_path):
    cfg = load_config("smoke", overrides=[f"workdir={tmp_path}"])
    key = build_dataset(cfg)
    assert key.startswith("datasets/world-")
    world = load_dataset(cfg, key)
    folder = tmp_path / "published"
    world.save(folder)
    as_folder = load_config("smoke", overrides=[f"workdir={tmp_path}", f"data.source={folder}"])
    assert build_dataset(as_folder) == str(folder)
    assert load_dataset(as_folder, str(folder)).fingerprint == world.fingerprint
    as_key = load_config("smoke", overrides=[f"workdir={tmp_path}", f"data.source={key}"])
    assert load_dataset(as_key, build_dataset(as_key)).fingerprint == world.fingerprint


def test_a_data_source_that_is_nothing_says_what_to_pass(tmp_path):
    cfg = load_config("smoke", overrides=[f"workdir={tmp_path}", "data.source=nowhere/films"])
    with pytest.raises(DataError, match="data.source 'nowhere/films' is neither a folder, an "
                                        "s3:// URL nor a data set published"):
        build_dataset(cfg)


def test_a_damaged_published_folder_is_refused(tmp_path):
    from pit.storage import Store

    ds = build_world(load_config("smoke").world)
    with Store(tmp_path).staging("w", {"kind": "dataset"}) as folder:
        ds.save(folder)
    manifest = json.loads((tmp_path / "w" / MANIFEST).read_text())
    victim = next(rel for rel in manifest["files"] if rel.endswith(".jsonl"))
    (tmp_path / "w" / victim).write_text("truncated")
    cfg = load_config("smoke", overrides=[f"workdir={tmp_path}"])
    with pytest.raises(DataError, match=f"data set {tmp_path / 'w'} is incomplete or damaged"):
        dataset_folder(cfg, str(tmp_path / "w"))


def test_fields_that_moved_are_still_read_at_their_old_place():
    cfg = load_config("smoke", overrides=["artifact_root=s3://bucket/x"])
    assert cfg.storage.root == "s3://bucket/x"
    assert load_config("smoke", overrides=["workdir=/w"]).storage.root == "/w/artifacts"
