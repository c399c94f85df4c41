"""Checkpoints: what they hold, when they are taken, which one a resume trusts.

A toy Llama model (a few thousand parameters) trains on random token batches
in-process, so each test takes a second: the loop, the checkpoint callback
and the store are the real ones; only the model and the data are tiny.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from transformers import LlamaConfig, LlamaForCausalLM

from pit.config import CheckpointConfig, TrainConfig
from pit.storage import MANIFEST, Store
from pit.train.batches import Batch
from pit.train.checkpoint import (
    Checkpointer,
    checkpoint_key,
    fetch_latest,
    latest_checkpoint,
    list_checkpoints,
    read_checkpoint,
    step_of,
)
from pit.train.examples import Example
from pit.train.loop import Callback, StageState, make_optimizer, train_stage

TCFG = TrainConfig(doc_lr=3e-3, qa_lr=1e-3, grad_clip=1.0)
PEAK = {"doc": 3e-3, "qa": 1e-3}
FP = "f" * 64


def toy_model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
        tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    ))


def toy_epochs(n_epochs: int = 3, per_epoch: int = 5) -> list[list[Batch]]:
    rng = random.Random(7)
    epochs = []
    for _ in range(n_epochs):
        batches = []
        for b in range(per_epoch):
            kind = "qa" if b % 2 else "doc"
            examples = [Example([1] + [rng.randrange(3, 40) for _ in range(rng.randrange(4, 12))],
                                [0.0] + [1.0] * 11, kind) for _ in range(3)]
            for e in examples:
                e.weights[:] = e.weights[: len(e.input_ids)]
            batches.append(Batch(kind, examples))
        epochs.append(batches)
    return epochs


def setup(seed: int = 0):
    accelerator = Accelerator(cpu=True)
    model = toy_model(seed)
    optimizer = make_optimizer(model, TCFG)
    model, optimizer = accelerator.prepare(model, optimizer)
    return accelerator, model, optimizer


def checkpointer(store: Store, accelerator, model, optimizer, epochs, history=None,
                 **cfg) -> Checkpointer:
    return Checkpointer(store, "ckpt", CheckpointConfig(**cfg), accelerator=accelerator,
                        model=model, optimizer=optimizer, epoch_sizes=[len(e) for e in epochs],
                        fingerprint=FP, history={} if history is None else history)


class Recorder(Callback):
    """Keeps each epoch's losses, as the evaluation callback keeps its metrics."""

    def __init__(self, history: dict[int, dict[str, float]]) -> None:
        self.history = history

    def on_epoch_end(self, state: StageState, metrics: dict[str, float]) -> None:
        self.history[state.position.epoch] = metrics


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_checkpoints_are_taken_every_n_steps_and_at_epoch_ends_but_not_after_the_last(tmp_path):
    store = Store(tmp_path)
    epochs = toy_epochs(3, 5)
    accelerator, model, optimizer = setup()
    ck = checkpointer(store, accelerator, model, optimizer, epochs, every_steps=2, keep_last=50)
    train_stage(model, epochs, TCFG, PEAK, 0, accelerator, optimizer, callbacks=[ck])
    assert [step_of(k) for k in ck.saved] == [2, 4, 5, 6, 8, 10, 12, 14]
    assert [step_of(k) for k in list_checkpoints(store, "ckpt")] == [2, 4, 5, 6, 8, 10, 12, 14]
    manifest = store.read_manifest(checkpoint_key("ckpt", 5))
    assert (manifest["epoch"], manifest["batch"], manifest["step"]) == (1, 0, 5)
    assert len(ck.seconds) == len(ck.saved)


def test_only_the_last_k_complete_checkpoints_are_kept(tmp_path):
    store = Store(tmp_path)
    epochs = toy_epochs(2, 5)
    accelerator, model, optimizer = setup()
    ck = checkpointer(store, accelerator, model, optimizer, epochs, every_steps=1, keep_last=2)
    train_stage(model, epochs, TCFG, PEAK, 0, accelerator, optimizer, callbacks=[ck])
    assert [step_of(k) for k in list_checkpoints(store, "ckpt")] == [8, 9]
    assert ck.kept() == [store.url(checkpoint_key("ckpt", s)) for s in (8, 9)]


def test_a_checkpoint_holds_safetensors_and_json_only(tmp_path):
    store = Store(tmp_path)
    epochs = toy_epochs(2, 3)
    accelerator, model, optimizer = setup()
    ck = checkpointer(store, accelerator, model, optimizer, epochs, every_steps=0)
    train_stage(model, epochs, TCFG, PEAK, 0, accelerator, optimizer, callbacks=[ck])
    files = store.read_manifest(ck.saved[-1])["files"]
    assert {"model/model.safetensors", "model/config.json", "optimizer.safetensors",
            "optimizer.json", "rng.safetensors", "state.json"} <= set(files)
    assert all(Path(f).suffix in (".safetensors", ".json") for f in files)


@pytest.mark.parametrize("stop_after", [4, 5, 7])
def test_resuming_from_any_checkpoint_ends_with_the_uninterrupted_weights_and_losses(
        tmp_path, stop_after):
    """A crash in step 5 (mid-epoch), 6 (after an epoch end) or 8 changes nothing at the end."""
    epochs = toy_epochs(3, 5)
    accelerator, model, optimizer = setup()
    full_history: dict[int, dict[str, float]] = {}
    train_stage(model, epochs, TCFG, PEAK, 0, accelerator, optimizer,
                callbacks=[Recorder(full_history)])
    expected = weights(model)

    store = Store(tmp_path)
    accelerator, model, optimizer = setup()

    class Crash(Exception):
        pass

    class StopAt(Recorder):
        def on_step_end(self, state, loss, kind, lr):
            if state.position.step == stop_after + 1:
                raise Crash

    history: dict[int, dict[str, float]] = {}
    ck = checkpointer(store, accelerator, model, optimizer, epochs, history, every_steps=1)
    with pytest.raises(Crash):
        train_stage(model, epochs, TCFG, PEAK, 0, accelerator, optimizer,
                    callbacks=[Recorder(history), ck, StopAt(history)])

    torch.manual_seed(123)  # a restarted process: other weights, fresh optimiser, other RNG
    accelerator, model, optimizer = setup(seed=1)
    found = fetch_latest(store, "ckpt", FP, tmp_path / "cache")
    assert found is not None and found[0].key == ck.saved[-1]
    assert stop_after - 1 <= found[0].step <= stop_after + 1
    state, history = read_checkpoint(found[1], model=model, optimizer=optimizer)
    train_stage(model, epochs, TCFG, PEAK, 0, accelerator, optimizer, state=state,
                callbacks=[Recorder(history)])
    final = weights(model)
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    assert history == full_history


def test_rng_states_are_restored(tmp_path):
    store = Store(tmp_path)
    epochs = toy_epochs(1, 3)
    accelerator, model, optimizer = setup()
    ck = checkpointer(store, accelerator, model, optimizer, epochs, every_steps=1)
    random.seed(5)
    torch.manual_seed(5)
    key = ck.save(StageState())
    expected = (random.random(), torch.rand(3))
    random.seed(99)
    torch.manual_seed(99)
    read_checkpoint(Path(store.url(key)), model=model, optimizer=optimizer)
    assert random.random() == expected[0]
    assert torch.equal(torch.rand(3), expected[1])


@pytest.fixture
def three_checkpoints(tmp_path):
    store = Store(tmp_path / "store")
    epochs = toy_epochs(1, 7)
    accelerator, model, optimizer = setup()
    ck = checkpointer(store, accelerator, model, optimizer, epochs, every_steps=2, keep_last=5)
    train_stage(model, epochs, TCFG, PEAK, 0, accelerator, optimizer, callbacks=[ck])
    assert [step_of(k) for k in ck.saved] == [2, 4, 6]
    return store


def test_a_checkpoint_without_manifest_is_skipped_with_a_warning(three_checkpoints, caplog):
    store = three_checkpoints
    store.rm(Store.join(checkpoint_key("ckpt", 6), MANIFEST))
    with caplog.at_level(logging.WARNING, logger="pit"):
        found = latest_checkpoint(store, "ckpt")
    assert found is not None and found.step == 4
    assert f"skipping checkpoint {store.url(checkpoint_key('ckpt', 6))}: it has no " \
        "MANIFEST.json (never completely published)" in caplog.text


def test_a_checkpoint_with_a_corrupt_file_is_skipped_and_the_previous_one_used(
        three_checkpoints, tmp_path, caplog):
    store = three_checkpoints
    weights_file = Path(store.url(checkpoint_key("ckpt", 6))) / "model" / "model.safetensors"
    data = bytearray(weights_file.read_bytes())
    data[-1] ^= 0xFF  # same size: only the sha256 notices
    weights_file.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="pit"):
        found = fetch_latest(store, "ckpt", FP, tmp_path / "cache")
        latest = latest_checkpoint(store, "ckpt")
    assert found is not None and found[0].step == 4
    assert latest is not None and latest.step == 4
    assert f"skipping corrupt checkpoint {store.url(checkpoint_key('ckpt', 6))}: " \
        "model/model.safetensors does not match its size or sha256; using the one before it" \
        in caplog.text


def test_a_truncated_checkpoint_file_is_caught_by_its_size(three_checkpoints, caplog):
    store = three_checkpoints
    opt = Path(store.url(checkpoint_key("ckpt", 6))) / "optimizer.safetensors"
    opt.write_bytes(opt.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="pit"):
        found = latest_checkpoint(store, "ckpt", hashes=False)
    assert found is not None and found.step == 4
    assert "optimizer.safetensors has 100 bytes" in caplog.text


def test_a_checkpoint_of_another_stage_configuration_is_never_used(three_checkpoints, caplog):
    with caplog.at_level(logging.WARNING, logger="pit"):
        assert latest_checkpoint(three_checkpoints, "ckpt", fingerprint="0" * 64) is None
    assert "belongs to a different stage configuration" in caplog.text


def test_no_checkpoint_at_all_means_a_fresh_start(tmp_path):
    assert latest_checkpoint(Store(tmp_path), "nothing/here") is None
    assert fetch_latest(Store(tmp_path), "nothing/here", FP, tmp_path / "cache") is None


@pytest.mark.integration
def test_checkpoints_in_s3_resume_through_a_download(s3_bucket, tmp_path):
    store = Store(f"{s3_bucket}/pit")
    epochs = toy_epochs(1, 4)
    accelerator, model, optimizer = setup()
    ck = checkpointer(store, accelerator, model, optimizer, epochs, every_steps=2, keep_last=1)
    train_stage(model, epochs, TCFG, PEAK, 0, accelerator, optimizer, callbacks=[ck])
    expected = weights(model)
    assert [step_of(k) for k in list_checkpoints(store, "ckpt")] == [2]
    assert ck.kept() == [f"{s3_bucket}/pit/ckpt/step-000000002"]

    accelerator, model, optimizer = setup(seed=3)
    found = fetch_latest(store, "ckpt", FP, tmp_path / "cache")
    assert found is not None and found[1].is_relative_to(tmp_path / "cache")
    state, _ = read_checkpoint(found[1], model=model, optimizer=optimizer)
    train_stage(model, epochs, TCFG, PEAK, 0, accelerator, optimizer, state=state)
    final = weights(model)
    assert all(torch.equal(final[k], expected[k]) for k in expected)
