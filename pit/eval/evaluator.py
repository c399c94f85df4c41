"""Closed-book and open-book question answering, document perplexity, retention.

Generation is greedy and batched: prompts are sorted by length and left-padded
so a whole batch decodes at once with its KV cache (`pit.eval.greedy`), and the
answer is the text up to the first end-of-sequence token or line break; a row
leaves the batch at either, and the batch ends once every row has. Batches hold
`eval.batch_size` prompts, or with `auto` as many as memory holds
(`pit.eval.memory`). The untrained base model gets five demonstrations
(`few_shot`), trained models none, as in the paper.
"""

from __future__ import annotations

import math
import random
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch

from pit.config import EvalConfig
from pit.eval import greedy
from pit.eval.memory import rows_that_fit
from pit.eval.metrics import answer_recall, exact_match, f1, rouge_l, score
from pit.train.examples import qa_prompt


def _shot(demo: dict) -> str:
    """A demonstration as the base model sees it: a question, its first answer, a line break."""
    return f"{qa_prompt(demo['question'])} {demo['answers'][0]}\n"


_STOP_IDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def stop_ids(tokenizer) -> list[int]:
    """`<eos>` and the ids of every token whose text holds a line break, found once per tokenizer.

    Finding them decodes the whole vocabulary (a second for 128k tokens), and every
    evaluation during training builds a new `Evaluator` on the same tokenizer.
    """
    size = len(tokenizer)
    known = _STOP_IDS.get(tokenizer)
    if known is None or known[0] != size:
        texts = tokenizer.batch_decode([[i] for i in range(size)])
        newline = [i for i, t in enumerate(texts) if "\n" in t]
        known = _STOP_IDS[tokenizer] = (size, [tokenizer.eos_token_id, *newline])
    return known[1]


class Evaluator:
    def __init__(self, model, tokenizer, cfg: EvalConfig, max_len: int, device=None) -> None:
        self.model = model
        self.tok = tokenizer
        self.cfg = cfg
        self.max_len = max_len
        self.device = device or next(model.parameters()).device
        self._stop_ids: list[int] | None = None
        self._token_cache: dict[str, list[int]] = {}

    def _ids(self, text: str) -> list[int]:
        if text not in self._token_cache:
            self._tokenize([text])
        return self._token_cache[text]

    def _tokenize(self, texts: Sequence[str]) -> None:
        """Tokenize the texts not yet seen in one call: a call per text costs more than its work.

        Demonstrations recur across questions, so each is tokenized once per evaluator.
        """
        new = list(dict.fromkeys(t for t in texts if t not in self._token_cache))
        if new:
            ids = self.tok(new, add_special_tokens=False)["input_ids"]
            self._token_cache.update(zip(new, ids, strict=True))

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` as trained and scored, without special tokens."""
        return len(self._ids(text))

    def prompt_ids(
        self, question: str, context: str | None = None, demos: Sequence[dict] = ()
    ) -> list[int]:
        """`<bos>[demonstrations\n][document\n]Question: … Answer:`.

        The document sits right before its question, as in the reading examples a model
        learns from; a document too long for the budget loses its end, demonstrations
        are dropped from the front before the question is ever cut.
        """
        shots = [self._ids(_shot(d)) for d in demos]
        tail = self._ids(qa_prompt(question))
        budget = self.max_len - self.cfg.max_new_tokens - 1
        head: list[int] = []
        if context is not None:
            head = self._ids(context + "\n")[: max(0, budget - len(tail))]
        while shots and sum(map(len, shots)) + len(head) + len(tail) > budget:
            shots.pop(0)
        ids = [t for s in shots for t in s] + head + tail
        return [self.tok.bos_token_id] + ids[-budget:]

    def _rows(self, length: int, all_logits: bool = False) -> int:
        """Rows per batch: `eval.batch_size`, or as many as memory holds (`pit.eval.memory`)."""
        if self.cfg.batch_size != "auto":
            return self.cfg.batch_size
        return rows_that_fit(self.model, length, torch.device(self.device), all_logits)

    @property
    def stop_ids(self) -> list[int]:
        """End of sequence, and every token whose text holds a line break: an answer is one line.

        A row that emits one of these is finished, so a batch stops decoding as soon as
        its every row has answered, not after `max_new_tokens`.
        """
        if self._stop_ids is None:
            self._stop_ids = stop_ids(self.tok)
        return self._stop_ids

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], progress: Callable[[int], None] | None = None
                 ) -> list[str]:
        """Greedy answers to `prompts`, in their order: each cut at its first line break.

        Prompts are decoded longest first in batches of similar length, so little of a
        batch is padding and the batch that needs the most memory runs first (a batch
        size too large fails at once, not at the end); answers go back to their order.
        """
        self.model.eval()
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
        out: list[str] = [""] * len(prompts)
        start = 0
        while start < len(order):
            longest = len(prompts[order[start]])
            take = order[start : start + self._rows(longest + self.cfg.max_new_tokens)]
            for i, text in zip(take, self._decode([prompts[i] for i in take]), strict=True):
                out[i] = text
            start += len(take)
            if progress:
                progress(len(take))
        return out

    def _decode(self, chunk: list[list[int]]) -> list[str]:
        pad = self.tok.pad_token_id
        n = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), n), pad, dtype=torch.long)
        att = torch.zeros((len(chunk), n), dtype=torch.long)
        for j, p in enumerate(chunk):
            ids[j, n - len(p):] = torch.tensor(p)
            att[j, n - len(p):] = 1
        if greedy.supports(self.model):
            return self.answer_texts(greedy.greedy_rows(
                self.model, ids.to(self.device), att.to(self.device),
                self.cfg.max_new_tokens, self.stop_ids))
        gen = self.model.generate(
            input_ids=ids.to(self.device), attention_mask=att.to(self.device),
            max_new_tokens=self.cfg.max_new_tokens, do_sample=False, use_cache=True,
            eos_token_id=self.stop_ids, pad_token_id=pad,
        )
        return self.answer_texts(gen[:, n:].tolist())

    def answer_texts(self, generated: list[list[int]]) -> list[str]:
        """Each row of generated tokens as an answer: up to end of sequence and first line."""
        eos = self.tok.eos_token_id
        rows = [row[: row.index(eos)] if eos in row else row for row in generated]
        texts = self.tok.batch_decode(rows, skip_special_tokens=True)
        return [text.split("\n")[0].strip() for text in texts]

    def answer(
        self, questions: Sequence[dict], mode: str = "zero-shot",
        docs_by_id: dict[str, dict] | None = None, demos_pool: Sequence[dict] = (),
        progress: Callable[[int], None] | None = None,
    ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Answer each question; return metrics (0-100) and one prediction row per question."""
        rng = random.Random(0)
        cases = []
        for q in questions:
            demos = []
            if mode in ("closed-book", "open-book") and self.cfg.few_shot and demos_pool:
                demos = rng.sample(list(demos_pool), min(self.cfg.few_shot, len(demos_pool)))
            context = None
            if mode == "open-book":
                context = (docs_by_id or {})[q["doc_id"]]["text"]
            cases.append((q["question"], context, demos))
        texts = []
        for question, context, demos in cases:
            texts += [qa_prompt(question), *map(_shot, demos)]
            if context is not None:
                texts.append(context + "\n")
        self._tokenize(texts)
        prompts = [self.prompt_ids(*case) for case in cases]
        preds = self.generate(prompts, progress)
        rows = []
        for q, p in zip(questions, preds, strict=False):
            rows.append({
                "qa_id": q["qa_id"], "question": q["question"], "answers": list(q["answers"]),
                "prediction": p, "exact_match": exact_match(p, q["answers"]),
                "answer_recall": answer_recall(p, q["answers"]),
                "rouge_l": rouge_l(p, q["answers"]), "f1": f1(p, q["answers"]),
            })
        return score(preds, [q["answers"] for q in questions]), rows

    def cloze(self, items: Sequence[tuple[dict, str]]) -> tuple[float, list[dict[str, Any]]]:
        """Recall (0-100) of answers continuing their sentence prefixes (`pit.eval.cloze`)."""
        room = self.max_len - self.cfg.max_new_tokens - 1
        self._tokenize([p for _, p in items])
        prompts = [[self.tok.bos_token_id] + self._ids(p)[-room:] for _, p in items]
        outs = self.generate(prompts)
        rows = [{"qa_id": q["qa_id"], "prompt": p, "continuation": o,
                 "recalled": answer_recall(o, q["answers"])}
                for (q, p), o in zip(items, outs, strict=True)]
        return 100.0 * sum(r["recalled"] for r in rows) / max(len(rows), 1), rows

    @torch.no_grad()
    def perplexity(self, texts: Sequence[str]) -> float:
        """Token-level perplexity of documents as trained: `<bos>` + text, every token scored."""
        self.model.eval()
        nll, count = 0.0, 0
        bs = self._rows(self.max_len, all_logits=True)
        for i in range(0, len(texts), bs):
            seqs = [[self.tok.bos_token_id] + self._ids(t)[: self.max_len - 1]
                    for t in texts[i : i + bs]]
            n = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), n), self.tok.pad_token_id, dtype=torch.long)
            att = torch.zeros_like(ids)
            for j, s in enumerate(seqs):
                ids[j, : len(s)] = torch.tensor(s)
                att[j, : len(s)] = 1
            ids, att = ids.to(self.device), att.to(self.device)
            logits = self.model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
            tgt = ids[:, 1:]
            mask = att[:, 1:].bool()
            lp = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), tgt.reshape(-1), reduction="none"
            ).view_as(tgt)
            nll += lp[mask].sum().item()
            count += int(mask.sum().item())
        return math.exp(nll / max(count, 1))
