"""Batched greedy generation answers exactly as one question at a time would, only sooner.

The model is the smoke-size embedded Llama trained for a few seconds on the
world's QA pairs written as few-shot lines (`Question: … Answer: …` then a line
break, never an end-of-sequence token), so it answers in the format, its
answers differ from question to question, and it ends each with a line break:
what the stop at the end of an answer must catch.
"""

from __future__ import annotations

import random

import pytest
import torch
from transformers import LlamaConfig

from pit.config import EvalConfig
from pit.config_sources import load_config
from pit.data.world import build_world
from pit.eval.evaluator import Evaluator
from pit.eval.memory import CPU_MAX_ROWS, GPU_MAX_ROWS, kv_bytes_per_token, rows_for
from pit.modeling import build_embedded_model, train_tokenizer

MAX_LEN = 160


@pytest.fixture(scope="module")
def trained(tiny_overrides):
    cfg = load_config("smoke", overrides=tiny_overrides)
    ds = build_world(cfg.world)
    by_entity: dict[str, list[str]] = {}
    for q in ds.qa:
        by_entity.setdefault(q["entity_id"], []).append(
            f"Question: {q['question']} Answer: {q['answers'][0]}\n")
    texts = ["".join(lines) for lines in by_entity.values()]
    tok = train_tokenizer(texts + [d["text"] for d in ds.docs], 400)
    model = build_embedded_model(cfg.model, tok, seed=0)
    rows = [[tok.bos_token_id] + tok(t, add_special_tokens=False)["input_ids"][: MAX_LEN - 1]
            for t in texts]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    rng = random.Random(0)
    model.train()
    for _ in range(120):
        batch = rng.sample(rows, 8)
        n = max(map(len, batch))
        ids = torch.tensor([r + [tok.pad_token_id] * (n - len(r)) for r in batch])
        labels = torch.tensor([r + [-100] * (n - len(r)) for r in batch])
        loss = model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    test = [q for q in ds.qa if q["split"] == "test"]
    demos = [q for q in ds.qa if q["split"] == "train"]
    return model, tok, test, demos, {d["doc_id"]: d for d in ds.docs}


def one_at_a_time(model, tok, prompt: list[int], max_new_tokens: int) -> list[int]:
    """Greedy decoding of one prompt, the slow way: no batch, no cache, stop at `<eos>` only."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            if token == tok.eos_token_id:
                break
            ids.append(token)
    return ids[len(prompt):]


def few_shot_prompts(ev: Evaluator, questions: list[dict], demos: list[dict],
                     docs: dict[str, dict] | None = None) -> list[list[int]]:
    rng = random.Random(0)
    return [ev.prompt_ids(q["question"], docs[q["doc_id"]]["text"] if docs else None,
                          rng.sample(demos, ev.cfg.few_shot))
            for q in questions]


@pytest.mark.parametrize("mode", ["closed-book", "open-book"])
def test_batched_sorted_answers_equal_one_question_at_a_time_greedy(trained, mode):
    model, tok, questions, demos, docs = trained
    cfg = EvalConfig(batch_size=5, max_new_tokens=10, few_shot=2)
    ev = Evaluator(model, tok, cfg, MAX_LEN)
    _, rows = ev.answer(questions, mode, docs, demos)
    prompts = few_shot_prompts(ev, questions, demos, docs if mode == "open-book" else None)
    expected = ev.answer_texts([one_at_a_time(model, tok, p, 10) for p in prompts])

    assert len({len(p) for p in prompts}) > 3  # batches mix lengths: left padding at work
    assert [r["prediction"] for r in rows] == expected
    assert len(set(expected)) > len(expected) // 2 and all(expected)


def test_answers_come_back_in_question_order_whatever_the_batch_size(trained):
    model, tok, questions, demos, _ = trained
    ev = Evaluator(model, tok, EvalConfig(batch_size=3, max_new_tokens=10, few_shot=2), MAX_LEN)
    prompts = few_shot_prompts(ev, questions, demos)
    answers = ev.generate(prompts)
    perm = list(range(len(prompts)))
    random.Random(1).shuffle(perm)

    assert ev.generate([prompts[i] for i in perm]) == [answers[i] for i in perm]
    for size in (1, 7, "auto"):
        other = Evaluator(model, tok, EvalConfig(batch_size=size, max_new_tokens=10), MAX_LEN)
        assert other.generate(prompts) == answers


def test_a_line_break_ends_a_row_and_the_batch_stops_when_every_row_has_one(trained):
    model, tok, questions, _, _ = trained
    budget = 40
    ev = Evaluator(model, tok, EvalConfig(batch_size=len(questions), max_new_tokens=budget),
                   MAX_LEN)
    prompts = [ev.prompt_ids(q["question"]) for q in questions]
    full = [one_at_a_time(model, tok, p, budget) for p in prompts]
    answer_lengths = []
    for row in full:
        text = tok.decode(row)
        assert "\n" in text and len(row) == budget  # no <eos>: only the line break can stop it
        answer_lengths.append(next(i for i, t in enumerate(row) if "\n" in tok.decode([t])) + 1)

    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        answers = ev.generate(prompts)
    finally:
        hook.remove()

    assert answers == ev.answer_texts(full)
    assert len(calls) == max(answer_lengths) < budget  # one forward pass per generated token


def test_the_kv_cache_per_token_of_a_7b_llama_is_half_a_mebibyte_in_16_bits():
    llama7b = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                          num_attention_heads=32, num_key_value_heads=32, vocab_size=32000)
    assert kv_bytes_per_token(llama7b, 2) == 2 * 32 * 4096 * 2 == 512 * 1024


def test_auto_batch_size_follows_free_memory_and_prompt_length():
    llama7b = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                          num_attention_heads=32, num_key_value_heads=32, vocab_size=32000)
    gib = 1024**3
    long_rows = rows_for(llama7b, 2, 2048, free=60 * gib, gpu=True)
    # 30 GiB of budget; per 2048-token row 1 GiB of cache and the prompt's activations
    assert 30 / 1.5 <= long_rows < 30
    assert rows_for(llama7b, 2, 2048, free=120 * gib, gpu=True) > long_rows
    assert rows_for(llama7b, 2, 256, free=60 * gib, gpu=True) > 5 * long_rows
    assert rows_for(llama7b, 2, 64, free=60 * gib, gpu=True) == GPU_MAX_ROWS
    assert rows_for(llama7b, 2, 2048, free=gib // 10, gpu=True) == 1
    assert rows_for(llama7b, 2, 64, free=60 * gib, gpu=False) == CPU_MAX_ROWS
    llama3_8b = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                            num_attention_heads=32, num_key_value_heads=8, vocab_size=128256)
    # Grouped KV heads: a quarter of the cache; scoring 2048 tokens over 128k logits costs more.
    assert kv_bytes_per_token(llama3_8b, 2) == kv_bytes_per_token(llama7b, 2) // 4
    assert rows_for(llama3_8b, 2, 2048, free=60 * gib, gpu=True, all_logits=True) < \
        rows_for(llama3_8b, 2, 2048, free=60 * gib, gpu=True) // 4


def test_rows_leave_the_batch_once_answered_and_the_answers_do_not_change(trained):
    model, tok, questions, _, _ = trained
    cfg = EvalConfig(batch_size=len(questions), max_new_tokens=40)
    ev = Evaluator(model, tok, cfg, MAX_LEN)
    prompts = [ev.prompt_ids(q["question"]) for q in questions]
    rows_per_step: list[int] = []
    hook = model.register_forward_hook(
        lambda _m, _a, kwargs, _out: rows_per_step.append(kwargs["input_ids"].size(0)),
        with_kwargs=True)
    try:
        answers = ev.generate(prompts)
    finally:
        hook.remove()

    expected = ev.answer_texts([one_at_a_time(model, tok, p, 40) for p in prompts])
    assert answers == expected
    assert rows_per_step[0] == len(prompts)
    assert rows_per_step == sorted(rows_per_step, reverse=True)
    assert rows_per_step[-1] < len(prompts)  # the last step decodes only the slowest rows


def test_greedy_rows_pick_the_tokens_generate_picks_on_a_model_with_learned_positions():
    from transformers import GPT2Config, GPT2LMHeadModel

    from pit.eval.greedy import greedy_rows, supports

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64,
                                       n_positions=64, bos_token_id=1, eos_token_id=2)).eval()
    assert supports(model)
    lengths = [3, 9, 5, 12]
    n = max(lengths)
    ids = torch.zeros(len(lengths), n, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, k in enumerate(lengths):
        ids[row, n - k:] = torch.randint(3, 64, (k,))
        mask[row, n - k:] = 1
    stops = [2, 7, 11]
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False,
                         eos_token_id=stops, pad_token_id=0)
    expected = []
    for row in out[:, n:].tolist():
        end = next((i for i, t in enumerate(row) if t in stops), len(row) - 1)
        expected.append(row[: end + 1])

    assert greedy_rows(model, ids, mask, 10, stops) == expected


def test_a_model_without_the_keywords_of_the_fast_path_is_answered_through_generate(trained):
    model, tok, questions, _, _ = trained

    class Plain(type(model)):
        def forward(self, input_ids=None, attention_mask=None, **kwargs):
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    plain = Plain(model.config)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    plain.eval()
    cfg = EvalConfig(batch_size=4, max_new_tokens=10)
    prompts = [Evaluator(model, tok, cfg, MAX_LEN).prompt_ids(q["question"]) for q in questions]

    from pit.eval.greedy import supports

    assert not supports(plain)
    assert (Evaluator(plain, tok, cfg, MAX_LEN).generate(prompts)
            == Evaluator(model, tok, cfg, MAX_LEN).generate(prompts))
