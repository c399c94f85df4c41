"""Several processes train shares of each batch and end where one process ends.

The fast tests check the arithmetic in one process: the shares of a batch
cover it once, and their losses, weighed by the whole batch's weight sum
and averaged as DDP averages gradients, give the batch's loss and gradient.
The slow test runs the real thing: a stage of the smoke preset trained by
2 CPU processes (gloo, through `accelerate launch`) against the same stage
trained inline by one, same global batches.
"""

from __future__ import annotations

import random
import shutil

import pytest
import torch
from safetensors.torch import load_file

from pit.artifacts import published_folder, store_for
from pit.base import build_base
from pit.config_sources import load_config
from pit.data.source import build_dataset
from pit.modeling import build_embedded_model, train_tokenizer
from pit.recipe import select_recipes
from pit.train.batches import Batch
from pit.train.examples import ExampleBuilder
from pit.train.launch import launch_command, launch_stage
from pit.train.loop import batch_loss
from pit.train.packing import pack_rows
from pit.train.runner import StageJob, StageRunner
from pit.train.sharding import first_unit, loss_weight, shard

ROW = 64
TEXTS = [
    "The Glass Horizon is a 1987 drama film directed by Sabun Nonhen. It runs 97 minutes.",
    "Amber Lantern is a comedy from 1992, written and directed by Orla Vantis.",
    "The Quiet Harbour was released on March 3, 1979 and earned $4 million.",
    "Short note.",
]
QA = [("Who directed The Glass Horizon?", "Sabun Nonhen"), ("When was Amber Lantern out?", "1992"),
      ("Who wrote Amber Lantern?", "Orla Vantis"), ("What did The Quiet Harbour earn?", "$4m"),
      ("How long is The Glass Horizon?", "97 minutes")]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer((TEXTS + [f"Question: {q} Answer: {a}" for q, a in QA]) * 4, 400)


@pytest.fixture(scope="module")
def batches(tokenizer) -> dict[str, Batch]:
    """A padded batch of documents and QA pairs, and the same examples packed in 3+ rows."""
    b = ExampleBuilder(tokenizer, ROW)
    examples = [b.document(t) for t in TEXTS] + [b.qa(q, a) for q, a in QA]
    rows = tuple(r for group in pack_rows(examples, 4, ROW, random.Random(0)) for r in group)
    assert len(rows) >= 3
    return {"padded": Batch("doc", examples),
            "packed": Batch("doc", [e for r in rows for e in r], rows, ROW)}


@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("world", [1, 2, 3, 16])
def test_the_shares_of_a_batch_hold_each_of_its_examples_once(batches, layout, world):
    batch = batches[layout]
    parts = [shard(batch, r, world) for r in range(world)]
    kept = [p for p in parts if p is not None]
    assert [id(e) for p in kept for e in p.examples] == [id(e) for e in batch.examples]
    units = len(batch.rows) if batch.rows is not None else len(batch.examples)
    assert len(kept) == min(world, units)
    if batch.rows is not None:
        assert [r for p in kept for r in p.rows] == list(batch.rows)
        assert all(p.row_len == batch.row_len for p in kept)
    assert sum(loss_weight(p) for p in kept) == pytest.approx(loss_weight(batch))


@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("world", [2, 3, 16])
def test_shares_weighed_by_the_whole_batch_give_its_loss_and_gradient(
        tokenizer, batches, layout, world):
    """What DDP computes: each rank's share times the world size, gradients averaged."""
    model = build_embedded_model(load_config("smoke").model, tokenizer, seed=0).train()
    pad = tokenizer.pad_token_id
    batch = batches[layout]

    model.zero_grad()
    whole = batch_loss(model, batch, pad, "cpu", model)
    whole.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad()
    total, reported = loss_weight(batch), 0.0
    for r in range(world):
        part = shard(batch, r, world)
        if part is None:
            share = batch_loss(model, first_unit(batch), pad, "cpu", model, total) * 0.0
        else:
            share = batch_loss(model, part, pad, "cpu", model, total)
        (share * world).backward()  # what each rank backpropagates; gradients add up
        reported += share.item()
    assert reported == pytest.approx(whole.item(), rel=1e-5)
    for name, p in model.named_parameters():
        mean = p.grad / world  # DDP's all-reduce averages over the ranks
        assert torch.allclose(mean, expected[name], rtol=1e-4, atol=1e-6), name


def test_several_cpu_processes_start_through_torchrun_on_a_free_port(tmp_path):
    cmd = launch_command(tmp_path / "spec.json", 2, cpu=True)
    assert "--multi_gpu" in cmd and "--cpu" not in cmd
    assert cmd[cmd.index("--main_process_port") + 1] == "0"
    one = launch_command(tmp_path / "spec.json", 1, cpu=True)
    assert "--cpu" in one and "--multi_gpu" not in one


# -- two real processes ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("packing", [False, True])
def test_two_gloo_processes_end_with_the_loss_and_weights_of_one(tmp_path, tiny_overrides,
                                                                 packing, capfd):
    """Stage 0 of `pit` (train QA + train documents), 2 epochs, on 1 and on 2 processes."""
    one_root, two_root = tmp_path / "one", tmp_path / "two"
    common = [*tiny_overrides, f"workdir={tmp_path}", "checkpoint.enabled=false",
              "eval.every_epochs=0", "eval.cloze=false", "train.pit_epochs=2",
              "train.doc_batch_size=5", "train.qa_batch_size=7", f"train.packing={packing}"]
    one = load_config("smoke", None, [*common, f"storage.root={one_root}"])
    data = build_dataset(one)
    base = build_base(one, data)
    shutil.copytree(one_root, two_root)
    two = load_config("smoke", None, [*common, f"storage.root={two_root}",
                                      "train.launcher=process", "train.num_processes=2"])
    recipe = select_recipes(["pit"])[0]

    def job(cfg):
        return StageJob(config=cfg, recipe=recipe, index=0, model_ref=base, data_ref=data)

    runner = StageRunner(job(one))
    key, _ = runner.run()
    batches = [b for epoch in runner.epochs for b in epoch]
    assert len(batches) >= 4
    if packing:
        assert any(b.rows is not None and len(b.rows) >= 2 for b in batches)
    else:
        assert any(len(b.examples) % 2 for b in batches)  # an uneven split somewhere
    capfd.readouterr()
    key_two, _ = launch_stage(job(two))
    assert key_two == key
    assert "on 2 process(es)" in capfd.readouterr().err

    def history(cfg):
        return store_for(cfg).read_manifest(key)["history"]

    def weights(cfg):
        return load_file(str(published_folder(cfg, key) / "model.safetensors"))

    h1, h2 = history(one), history(two)
    assert sorted(h1) == sorted(h2) == ["1", "2"]
    for epoch in h1:
        for name in ("loss_doc", "loss_qa"):
            assert h2[epoch][name] == pytest.approx(h1[epoch][name], rel=1e-4), (epoch, name)
    w1, w2 = weights(one), weights(two)
    assert sorted(w1) == sorted(w2)
    for name in w1:
        assert torch.allclose(w2[name], w1[name], rtol=1e-3, atol=1e-5), name
    moved = load_file(str(published_folder(one, base) / "model.safetensors"))
    assert any(not torch.equal(moved[n], w1[n]) for n in w1)  # training changed the weights
