"""Closed-book and open-book question answering, document perplexity, retention.

Generation is greedy and batched: prompts are left-padded so a whole batch
decodes at once, and the answer is the text up to the first end-of-sequence
token or line break. The untrained base model gets five demonstrations
(`few_shot`), trained models none, as in the paper.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch

from pit.config import EvalConfig
from pit.eval.metrics import answer_recall, exact_match, f1, rouge_l, score
from pit.train.examples import qa_prompt


class Evaluator:
    def __init__(self, model, tokenizer, cfg: EvalConfig, max_len: int, device=None) -> None:
        self.model = model
        self.tok = tokenizer
        self.cfg = cfg
        self.max_len = max_len
        self.device = device or next(model.parameters()).device

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

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
        shots = [self._ids(f"{qa_prompt(d['question'])} {d['answers'][0]}\n") for d in demos]
        tail = self._ids(qa_prompt(question))
        budget = self.max_len - self.cfg.max_new_tokens - 1
        head: list[int] = []
        if context is not None:
            head = self._ids(context + "\n")[: max(0, budget - len(tail))]
        while shots and sum(map(len, shots)) + len(head) + len(tail) > budget:
            shots.pop(0)
        ids = [t for s in shots for t in s] + head + tail
        return [self.tok.bos_token_id] + ids[-budget:]

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], progress: Callable[[int], None] | None = None
                 ) -> list[str]:
        self.model.eval()
        pad = self.tok.pad_token_id
        out: list[str] = []
        stop = [self.tok.eos_token_id]
        for i in range(0, len(prompts), self.cfg.batch_size):
            chunk = prompts[i : i + self.cfg.batch_size]
            n = max(len(p) for p in chunk)
            ids = torch.full((len(chunk), n), pad, dtype=torch.long)
            att = torch.zeros((len(chunk), n), dtype=torch.long)
            for j, p in enumerate(chunk):
                ids[j, n - len(p):] = torch.tensor(p)
                att[j, n - len(p):] = 1
            gen = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=att.to(self.device),
                max_new_tokens=self.cfg.max_new_tokens, do_sample=False, eos_token_id=stop,
                pad_token_id=pad,
            )
            for row in gen[:, n:].tolist():
                if stop[0] in row:
                    row = row[: row.index(stop[0])]
                text = self.tok.decode(row, skip_special_tokens=True)
                out.append(text.split("\n")[0].strip())
            if progress:
                progress(len(chunk))
        return out

    def answer(
        self, questions: Sequence[dict], mode: str = "zero-shot",
        docs_by_id: dict[str, dict] | None = None, demos_pool: Sequence[dict] = (),
        progress: Callable[[int], None] | None = None,
    ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Answer each question; return metrics (0-100) and one prediction row per question."""
        rng = random.Random(0)
        prompts = []
        for q in questions:
            demos = []
            if mode in ("closed-book", "open-book") and self.cfg.few_shot and demos_pool:
                demos = rng.sample(list(demos_pool), min(self.cfg.few_shot, len(demos_pool)))
            context = None
            if mode == "open-book":
                context = (docs_by_id or {})[q["doc_id"]]["text"]
            prompts.append(self.prompt_ids(q["question"], context, demos))
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
        bs = self.cfg.batch_size
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
