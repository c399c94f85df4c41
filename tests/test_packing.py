"""Packing: rows filled by best-fit decreasing, no token or weight lost, the loss of unpacked."""

from __future__ import annotations

import random

import pytest
import torch

from pit.artifacts import store_for
from pit.base import build_base
from pit.config import TrainConfig
from pit.config_sources import load_config
from pit.data.source import build_dataset
from pit.errors import DataError
from pit.modeling import build_embedded_model, train_tokenizer
from pit.recipe import Stage, select_recipes
from pit.train.batches import Batch, epoch_batches
from pit.train.examples import Example, ExampleBuilder
from pit.train.loop import Callback, StageState, collate, weighted_loss
from pit.train.packing import (
    ROW_STEP,
    SlotCost,
    best_fit_decreasing,
    model_inputs,
    pack_rows,
    pack_tensors,
    packed_loss,
    row_length,
    rows_per_batch,
    slot_cost,
)
from pit.train.runner import StageJob, StageRunner

DOCS = [
    "The Glass Horizon is a 1987 drama film directed by Sabun Nonhen. It runs 97 minutes.",
    "Amber Lantern is a comedy from 1992, written and directed by Orla Vantis.",
    "Short note.",
    "The Quiet Harbour was released on March 3, 1979 and earned $4 million at the box office.",
]
QA = [
    ("Who directed The Glass Horizon?", "Sabun Nonhen"),
    ("When was Amber Lantern released?", "1992"),
    ("How long does The Glass Horizon run?", "97 minutes"),
    ("Who wrote Amber Lantern?", "Orla Vantis"),
    ("How much did The Quiet Harbour earn?", "$4 million"),
]
ROW = 64


@pytest.fixture(scope="module")
def tokenizer():
    texts = DOCS + [f"Question: {q} Answer: {a}" for q, a in QA]
    return train_tokenizer(texts * 4, 400)


@pytest.fixture(scope="module")
def examples(tokenizer) -> list[Example]:
    """Documents, QA pairs (answer-only loss) and a document carrying its QA pairs."""
    b = ExampleBuilder(tokenizer, ROW)
    return ([b.document(d) for d in DOCS] + [b.qa(q, a) for q, a in QA]
            + [b.doc_with_qa(DOCS[0], QA[:2], "before")])


def smoke_model(tokenizer, attn: str):
    """The embedded model at the smoke preset's size, with the attention implementation `attn`."""
    model = build_embedded_model(load_config("smoke").model, tokenizer, seed=0)
    model.set_attn_implementation(attn)
    return model.train()


def test_best_fit_decreasing_never_overfills_a_row_and_places_every_item_once():
    rng = random.Random(3)
    for _ in range(50):
        capacity = rng.randint(8, 300)
        lengths = [rng.randint(1, capacity) for _ in range(rng.randint(1, 200))]
        bins = best_fit_decreasing(lengths, capacity)
        assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in b) <= capacity for b in bins)
        # Best-fit decreasing uses at most 11/9 of the optimum plus one; the optimum is
        # at least the total over the capacity.
        assert len(bins) <= 11 / 9 * -(-sum(lengths) // capacity) + 1


def test_best_fit_puts_an_item_in_the_row_it_fills_most_tightly():
    # Longest first: 7 opens a row (3 left), the two 4s share a second (2 left); the 1
    # fits both and goes to the second, which it fills more tightly (first fit would not).
    assert best_fit_decreasing([1, 4, 7, 4], 10) == [[2], [1, 3, 0]]


def test_packed_rows_keep_every_token_weight_and_position_of_every_example(examples, tokenizer):
    rows = [r for group in pack_rows(examples, 4, ROW, random.Random(0)) for r in group]
    assert sorted(id(e) for r in rows for e in r) == sorted(id(e) for e in examples)
    t = pack_tensors(rows, ROW, tokenizer.pad_token_id)
    assert t.ids.shape == (len(rows), ROW)
    for r, row in enumerate(rows):
        at = 0
        for s, e in enumerate(row):
            k = len(e.input_ids)
            assert t.ids[r, at : at + k].tolist() == e.input_ids
            assert t.weights[r, at].item() == 0  # predicted from another example's last token
            assert t.weights[r, at + 1 : at + k].tolist() == e.weights[1:]
            assert t.positions[r, at : at + k].tolist() == list(range(k))
            assert (t.segments[r, at : at + k] == s).all()
            at += k
        assert at <= ROW
        assert (t.ids[r, at:] == tokenizer.pad_token_id).all()
        assert (t.weights[r, at:] == 0).all() and (t.segments[r, at:] == -1).all()
    assert t.weights.sum().item() == pytest.approx(sum(sum(e.weights[1:]) for e in examples))
    assert sum(t.lengths) == len(rows) * ROW


def test_an_example_longer_than_a_row_is_rejected_with_the_fix(tokenizer):
    long = ExampleBuilder(tokenizer, 256).document(" ".join(DOCS * 3))
    assert len(long.input_ids) > ROW
    with pytest.raises(DataError, match=r"does not fit a packed row of 64 .*model.max_seq_len"):
        pack_rows([long], 4, ROW, random.Random(0))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_a_packed_batch_has_the_loss_and_gradients_of_the_same_examples_unpacked(
    attn, examples, tokenizer
):
    model = smoke_model(tokenizer, attn)
    pad = tokenizer.pad_token_id
    rows = tuple(r for group in pack_rows(examples, 4, ROW, random.Random(1)) for r in group)
    assert len(rows) > 1 and any(len(r) > 2 for r in rows)

    model.zero_grad()
    ids, w, att = collate(Batch("doc", examples), pad, "cpu")
    padded = weighted_loss(model(input_ids=ids, attention_mask=att).logits, ids, w)
    padded.backward()
    padded_grad = model.model.embed_tokens.weight.grad.clone()

    alone_sum, weight_sum = 0.0, 0.0
    with torch.no_grad():
        for e in examples:
            one = torch.tensor([e.input_ids])
            n = sum(e.weights[1:])
            alone_sum += weighted_loss(model(input_ids=one).logits, one,
                                       torch.tensor([e.weights])).item() * n
            weight_sum += n

    model.zero_grad()
    packed = packed_loss(model, rows, ROW, pad, "cpu", attn, model.dtype)
    packed.backward()
    packed_grad = model.model.embed_tokens.weight.grad.clone()

    assert packed.item() == pytest.approx(padded.item(), abs=1e-5)
    assert packed.item() == pytest.approx(alone_sum / weight_sum, abs=1e-5)
    torch.testing.assert_close(packed_grad, padded_grad, atol=1e-6, rtol=1e-4)

    # The block mask is what makes them equal: plain causal attention over the same
    # rows lets examples read each other and changes the loss.
    with torch.no_grad():
        ids, kwargs, targets, weights = model_inputs(rows, ROW, pad, "cpu", attn, model.dtype)
        kwargs["attention_mask"] = torch.ones_like(ids)
        logits = model(input_ids=ids, **kwargs).logits
        leaky = (torch.nn.functional.cross_entropy(logits, targets, reduction="none")
                 * weights).sum() / weights.sum()
    assert abs(leaky.item() - packed.item()) > 1e-3


def test_flash_attention_gets_the_boundaries_of_every_example_and_pad_tail(examples, tokenizer):
    rows = [r for group in pack_rows(examples, 4, ROW, random.Random(0)) for r in group]
    _, kwargs, _, _ = model_inputs(rows, ROW, tokenizer.pad_token_id, "cpu",
                                   "flash_attention_2", torch.float32)
    assert "attention_mask" not in kwargs
    spans = []
    for row in rows:
        spans += [len(e.input_ids) for e in row]
        if ROW - sum(len(e.input_ids) for e in row):
            spans.append(ROW - sum(len(e.input_ids) for e in row))
    cu = [0]
    for n in spans:
        cu.append(cu[-1] + n)
    assert kwargs["cu_seq_lens_q"].tolist() == cu == kwargs["cu_seq_lens_k"].tolist()
    assert kwargs["max_length_q"] == max(spans) == kwargs["max_length_k"]


def test_an_attention_that_cannot_keep_examples_apart_is_refused(examples, tokenizer):
    rows = pack_rows(examples, 4, ROW, random.Random(0))[0]
    with pytest.raises(DataError, match="flex_attention.*'sdpa'.*train.packing off"):
        model_inputs(rows, ROW, tokenizer.pad_token_id, "cpu", "flex_attention", torch.float32)


def test_packed_epochs_keep_kinds_apart_and_batches_near_the_configured_size(examples):
    train = TrainConfig(packing=True, doc_batch_size=2, qa_batch_size=8)
    stage = Stage(sources=["train_qa", "train_docs"])
    batches = epoch_batches(examples, stage, train, seed=5, row_len=ROW)
    assert sorted(id(e) for b in batches for e in b.examples) == sorted(id(e) for e in examples)
    for b in batches:
        assert b.rows is not None and b.row_len == ROW
        assert {e.kind for e in b.examples} == {b.kind}
        assert all(sum(len(e.input_ids) for e in row) <= ROW for row in b.rows)
    for kind, size in (("doc", 2), ("qa", 8)):
        of_kind = [e for e in examples if e.kind == kind]
        rows = rows_per_batch(of_kind, size, ROW)
        sizes = [len(b.rows) for b in batches if b.kind == kind]
        assert sizes[:-1] == [rows] * (len(sizes) - 1) and 0 < sizes[-1] <= rows
    again = epoch_batches(examples, stage, train, seed=5, row_len=ROW)
    assert [b.rows for b in again] == [b.rows for b in batches]


def _epoch_flops(lengths: list[int], n: int, cost: SlotCost) -> float:
    return len(best_fit_decreasing(lengths, n)) * n * (cost.per_slot + cost.per_key * n)


def test_auto_rows_under_a_block_mask_are_the_cheapest_length_for_their_examples():
    rng = random.Random(3)
    qa = [rng.randint(9, 25) for _ in range(700)]
    docs = [rng.randint(55, 88) for _ in range(480)]
    demo_model = SlotCost(per_slot=3.7e6, per_key=3456.0)  # the demo's 0.6M-parameter Llama
    for lengths in (qa, docs):
        chosen = row_length(lengths, 256, demo_model)
        assert max(lengths) <= chosen <= 256
        candidates = [n for n in range(max(lengths), 257) if n % ROW_STEP == 0 or n == 256]
        best = min(_epoch_flops(lengths, n, demo_model) for n in candidates)
        assert _epoch_flops(lengths, chosen, demo_model) == best
    assert row_length(qa, 256, demo_model) <= 96  # a few QA pairs per row, not a dozen
    assert row_length(qa, 256, None) == 256  # flash attention: rows cost only their examples
    free_attention = SlotCost(per_slot=1.0, per_key=0.0)
    assert (_epoch_flops(qa, row_length(qa, 256, free_attention), free_attention)
            <= _epoch_flops(qa, 256, free_attention))


def test_the_cost_of_a_slot_follows_the_model_and_flash_attention_has_none(tokenizer):
    model = smoke_model(tokenizer, "sdpa")
    cost = slot_cost(model)
    cfg = model.config
    assert cost.per_key == 12 * cfg.num_hidden_layers * cfg.hidden_size
    assert cost.per_slot > 6 * cfg.num_hidden_layers * 4 * cfg.hidden_size ** 2
    model.config._attn_implementation = "flash_attention_2"
    assert slot_cost(model) is None


def test_a_fixed_row_length_sets_every_row_and_one_past_max_seq_len_is_refused(examples):
    stage = Stage(sources=["train_qa", "train_docs"])
    longest = max(len(e.input_ids) for e in examples)
    fixed = TrainConfig(packing=True, pack_row_len=longest, doc_batch_size=2, qa_batch_size=8)
    batches = epoch_batches(examples, stage, fixed, seed=5, row_len=ROW,
                            cost=SlotCost(1.0, 1.0))
    assert {b.row_len for b in batches} == {longest} and longest < ROW
    short = TrainConfig(packing=True, pack_row_len=longest - 1)
    with pytest.raises(DataError, match=rf"{longest} tokens .* {longest - 1} .*pack_row_len"):
        epoch_batches(examples, stage, short, seed=5, row_len=ROW)
    too_long = TrainConfig(packing=True, pack_row_len=ROW + 8)
    with pytest.raises(DataError, match=r"train.pack_row_len=72 .* at most 64"):
        epoch_batches(examples, stage, too_long, seed=5, row_len=ROW)


class Losses(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_step_end(self, state: StageState, loss: float, kind: str, lr: float) -> None:
        self.losses.append(loss)


def test_a_recipe_stage_trains_packed_end_to_end_through_the_stage_runner(tmp_path,
                                                                         tiny_overrides):
    cfg = load_config("smoke", None, [*tiny_overrides, f"workdir={tmp_path}",
                                      f"storage.root={tmp_path / 'artifacts'}",
                                      f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
                                      "checkpoint.enabled=false", "eval.every_epochs=0",
                                      "train.packing=true"])
    data = build_dataset(cfg)
    base = build_base(cfg, data)
    job = StageJob(config=cfg, recipe=select_recipes(["pit"])[0], index=0, model_ref=base,
                   data_ref=data)
    recorder = Losses()

    class Recording(StageRunner):
        def _callbacks(self, ds):
            return [*super()._callbacks(ds), recorder]

    runner = Recording(job)
    key, metrics = runner.run()
    batches = [b for epoch in runner.epochs for b in epoch]
    assert batches and all(b.rows is not None for b in batches)
    assert {b.kind for b in batches} == {"doc", "qa"}
    assert len(recorder.losses) == len(batches)
    assert all(0 < x < 20 for x in recorder.losses)
    # SDPA on a CPU masks whole rows: QA pairs get rows far shorter than max_seq_len
    qa_rows = {b.row_len for b in batches if b.kind == "qa"}
    assert len(qa_rows) == 1 and qa_rows.pop() < cfg.model.max_seq_len / 2
    assert store_for(cfg).cached(key) is not None
    assert metrics["test_doc_ppl"] > 1
