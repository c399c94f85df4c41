"""Output keys: the same work lands on the same key, different work on a different one."""

from __future__ import annotations

import pytest

from pit.config_sources import load_config
from pit.keys import base_key, dataset_key, stage_output
from pit.recipe import all_recipes

FP = "0123456789abcdef"


def cfg_with(*overrides: str):
    return load_config("smoke", overrides=list(overrides))


def pit_stage0(cfg, model: str = "models/base-a", data: str = FP, seed: int = 0):
    return stage_output(cfg, all_recipes()["pit"].stages[0], 0, model, data, seed)


def test_the_same_config_gives_the_same_keys():
    a, b = cfg_with(), cfg_with()
    assert pit_stage0(a) == pit_stage0(b)
    assert base_key(a, FP) == base_key(b, FP)
    assert dataset_key(a) == dataset_key(b)


@pytest.mark.parametrize("field", ["train.doc_lr=5e-4", "train.seed=1", "model.hidden_size=64",
                                   "eval.max_new_tokens=4", "data.retention_questions=3",
                                   "train.precision=bf16",
                                   "data.test_domain=novels", "train.cross_domain=true"])
def test_a_field_that_changes_the_work_changes_the_stage_key(field):
    before, after = pit_stage0(cfg_with()), pit_stage0(cfg_with(field))
    assert after.hash != before.hash
    assert after.key != before.key and after.checkpoints != before.checkpoints


@pytest.mark.parametrize("field", [
    "workdir=/elsewhere", "preset=other", "methods=[cpt]", "seeds=3",
    "tracking.experiment=another", "tracking.tracking_uri=http://127.0.0.1:1",
    "storage.root=s3://bucket/prefix", "storage.max_attempts=9", "train.launcher=process",
    "train.num_processes=2", "checkpoint.every_steps=7", "checkpoint.keep_last=5",
    "train.attention=eager", "train.compile=true", "train.gradient_checkpointing=true",
    "train.peak_flops=1e12",
    "data.source=/some/folder", "world.seed=9",
])
def test_a_field_that_only_says_where_or_how_keeps_the_stage_key(field):
    assert pit_stage0(cfg_with(field)) == pit_stage0(cfg_with())


def test_inputs_enter_the_stage_key_by_content():
    cfg = cfg_with()
    base = pit_stage0(cfg)
    assert pit_stage0(cfg, model="models/base-b").key != base.key
    assert pit_stage0(cfg, data="fedcba9876543210").key != base.key
    assert pit_stage0(cfg, seed=1).key != base.key


def test_the_same_stage_of_two_recipes_from_the_same_model_is_one_output():
    cfg = cfg_with()
    recipes = all_recipes()
    pit, pit_minus = recipes["pit"], recipes["pit--"]
    assert pit.stages[0] == pit_minus.stages[0]
    first = [stage_output(cfg, r.stages[0], 0, "models/base-a", FP, 0) for r in (pit, pit_minus)]
    assert first[0] == first[1]
    # their test-document stages start from different models, so they are different work
    last = [stage_output(cfg, r.stages[-1], len(r.stages) - 1, f"stages/{r.slug}", FP, 0)
            for r in (pit, pit_minus)]
    assert last[0].key != last[1].key


def test_keys_name_the_stage_and_carry_no_run_id():
    out = pit_stage0(cfg_with())
    assert out.key.startswith("stages/s0-train_qa+train_docs-")
    assert out.checkpoints.startswith("checkpoints/s0-train_qa+train_docs-")
    assert out.key.rsplit("-", 1)[1] == out.hash[:16]


def test_the_base_model_follows_its_own_sections_not_the_recipes():
    cfg = cfg_with()
    assert base_key(cfg_with("train.doc_lr=5e-4"), FP) == base_key(cfg, FP)
    assert base_key(cfg_with("base.epochs=7"), FP) != base_key(cfg, FP)
    assert base_key(cfg_with("data.retention_questions=3"), FP) != base_key(cfg, FP)
    assert base_key(cfg, "fedcba9876543210") != base_key(cfg, FP)


def test_the_synthetic_data_set_is_named_by_its_world_alone():
    assert dataset_key(cfg_with("train.doc_lr=5e-4")) == dataset_key(cfg_with())
    assert dataset_key(cfg_with("world.seed=9")) != dataset_key(cfg_with())

