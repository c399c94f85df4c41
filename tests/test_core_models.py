"""The real-model path: a folder, Hub id or GGUF file takes the same code as the default."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from pit import pipeline
from pit.artifacts import published_folder, store_for
from pit.config import ModelConfig, TrainConfig
from pit.config_sources import load_config
from pit.errors import ModelNotFoundError
from pit.modeling import build_embedded_model, check_model, load_model, train_tokenizer
from pit.recipe import Stage, all_recipes
from pit.storage import MANIFEST, file_sha256
from pit.train.batches import epoch_batches, stage_examples
from pit.train.examples import ExampleBuilder
from pit.train.loop import StageState, train_stage


def test_model_references_that_name_nothing_say_what_to_pass(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found.*model.name_or_path=embedded"):
        check_model(ModelConfig(name_or_path=str(tmp_path / "missing")))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        check_model(ModelConfig(name_or_path=str(tmp_path / "weights.bin")))


def test_folder_without_safetensors_is_refused(tmp_path):
    tok = train_tokenizer(["a tiny corpus of words"], 100)
    model = build_embedded_model(ModelConfig(hidden_size=16, num_layers=1, num_heads=2,
                                             intermediate_size=32), tok)
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    tok.save_pretrained(tmp_path)
    with pytest.raises(ModelNotFoundError, match="no file named model.safetensors"):
        load_model(tmp_path)


def test_training_lowers_the_loss_and_is_deterministic(tiny_overrides):
    cfg = load_config("smoke", overrides=tiny_overrides)
    from pit.data.world import build_world

    ds = build_world(cfg.world)
    tok = train_tokenizer([d["text"] for d in ds.docs], 400)
    stage = Stage(sources=["train_docs"], epochs=8)
    train = TrainConfig(doc_lr=1e-2, doc_batch_size=2)

    def run() -> list[float]:
        model = build_embedded_model(cfg.model, tok, seed=0)
        examples = stage_examples(ds, stage, ExampleBuilder(tok, 160), train)
        epochs = [epoch_batches(examples, stage, train, e) for e in range(8)]
        from accelerate import Accelerator

        losses: list[float] = []

        class Record:
            def on_step_end(self, *a) -> None: ...

            def on_epoch_end(self, state: StageState, metrics: dict[str, float]) -> None:
                losses.append(metrics["loss_doc"])

        torch.manual_seed(0)
        train_stage(model, epochs, train, {"doc": 1e-2, "qa": 1e-2}, tok.pad_token_id,
                    Accelerator(cpu=True), callbacks=[Record()])
        return losses

    first, second = run(), run()
    assert first == second
    assert first[-1] < first[0] * 0.8


@pytest.mark.slow
def test_a_saved_model_folder_runs_a_recipe_like_the_embedded_default(tmp_path, tiny_overrides):
    cfg = load_config("smoke", overrides=[*tiny_overrides, f"workdir={tmp_path}"])
    data_key = pipeline.build_dataset(cfg)
    folder = published_folder(cfg, pipeline.build_base(cfg, data_key))
    real = cfg.model_copy(update={"model": cfg.model.model_copy(
        update={"name_or_path": str(folder)})})
    ref = pipeline.build_base(real, data_key)
    recipe = all_recipes()["pit"]
    for i in range(len(recipe.stages)):
        ref, _ = pipeline.run_stage(real, recipe, i, ref, data_key, None)
    out = pipeline.evaluate(real, recipe, ref, data_key, None, retention_before=None)
    assert set(out["metrics"]) >= {"exact_match", "test_doc_ppl", "retention_em"}
    assert len(out["predictions"]) == cfg.world.n_test * cfg.world.attributes_per_entity


@pytest.mark.slow
def test_an_external_model_is_published_once_as_safetensors_under_a_key_of_its_content(
        tmp_path, tiny_overrides):
    cfg = load_config("smoke", overrides=[*tiny_overrides, f"workdir={tmp_path / 'w'}"])
    data_key = pipeline.build_dataset(cfg)
    embedded = published_folder(cfg, pipeline.build_base(cfg, data_key))
    copy = shutil.copytree(embedded, tmp_path / "my-model",
                           ignore=shutil.ignore_patterns(MANIFEST))

    def external(path) -> str:
        return pipeline.build_base(cfg.model_copy(update={"model": cfg.model.model_copy(
            update={"name_or_path": str(path)})}), data_key)

    key = external(copy)
    assert key.startswith("models/pretrained-")
    manifest = store_for(cfg).read_manifest(key)
    assert manifest["kind"] == "base-model"
    assert manifest["source"]["name_or_path"] == str(copy)
    assert manifest["source"]["content"]["files"]["model.safetensors"] == \
        file_sha256(copy / "model.safetensors")
    assert external(copy) == key
    assert store_for(cfg).read_manifest(key) == manifest  # reused, not published again

    moved = shutil.copytree(copy, tmp_path / "moved")
    assert external(moved) == key  # the same bytes elsewhere are the same model
    weights = load_file(moved / "model.safetensors")
    weights[next(iter(weights))] += 1
    save_file(weights, moved / "model.safetensors", metadata={"format": "pt"})
    assert external(moved) != key
