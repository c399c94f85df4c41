"""Token sequences with per-token loss weights: answer-only loss is decided here, once.

An example is a list of segments, each a piece of text with a loss weight.
Weight 0 means "context only" (labels -100), so the trainer never needs to know
whether it holds a document, a QA pair or both:

    document             <bos> The Glass Horizon was directed by Sabun Nonhen .
                         w=0   1   1     1       1   1        1  1     1      1

    QA pair              <bos> Question: Who directed The Glass Horizon? Answer: Sabun Nonhen <eos>
                         w=0   0         0   0        0   0     0        0       1     1      1

    QA before its doc    <bos> Question: ... Answer: Sabun Nonhen <eos> The Glass Horizon was ...
    (interleaved)        0     0             0       1     1      1     1   1     1       1

The first position never carries loss (nothing predicts it). Weighted
continued pre-training gives answer-span tokens inside documents a weight of
1.0 and all others 0.5.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pit.errors import DataError

QUESTION_PREFIX = "Question: "
ANSWER_PREFIX = " Answer:"


_SALIENT = re.compile(
    r"\b[A-Z][a-z]+ \d{1,2}, \d{4}\b"  # dates: March 3, 1987
    r"|\$?\b\d+(?:[.,]\d+)*(?: (?:million|minutes|min|pages|copies)\b)?"  # amounts, counts
    r"|\b[A-Z][a-z]+(?: [A-Z][a-z]+)*\b"  # names, places, titles
)


def salient_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of names, dates and numbers: where the facts of a document lie.

    Found from the document alone (capitalised word runs and numbers, whole words
    only), so weighted continued pre-training never reads the questions it will be
    tested on; the first word of a sentence counts too, as it often starts a name.
    """
    return [m.span() for m in _SALIENT.finditer(text)]


def qa_prompt(question: str) -> str:
    return f"{QUESTION_PREFIX}{question}{ANSWER_PREFIX}"


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    weights: list[float]
    kind: str  # "doc" or "qa": picks the learning rate and batch size

    @property
    def trainable(self) -> bool:
        return any(w > 0 for w in self.weights[1:])


class ExampleBuilder:
    """Turns documents and QA pairs into Examples with one tokenizer and length limit."""

    def __init__(self, tokenizer, max_len: int) -> None:
        self.tok = tokenizer
        self.max_len = max_len
        self.bos = tokenizer.bos_token_id
        self.eos = tokenizer.eos_token_id

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def _pack(self, segments: list[tuple[list[int], list[float]]], kind: str) -> Example:
        ids: list[int] = [self.bos]
        weights: list[float] = [0.0]
        for seg_ids, seg_w in segments:
            ids += seg_ids
            weights += seg_w
        return Example(ids[: self.max_len], weights[: self.max_len], kind)

    def _doc_segment(
        self, text: str, span_w: float | None = None, other_w: float = 1.0,
    ) -> tuple[list[int], list[float]]:
        if span_w is None:
            ids = self._ids(text)
            return ids, [other_w] * len(ids)
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        spans = salient_spans(text)
        weights = [
            span_w if any(s < e_tok and b_tok < e for s, e in spans) else other_w
            for b_tok, e_tok in enc["offset_mapping"]
        ]
        return enc["input_ids"], weights

    def _qa_segment(self, question: str, answer: str) -> tuple[list[int], list[float]]:
        prompt = self._ids(qa_prompt(question))
        ans = self._ids(" " + answer.strip()) + [self.eos]
        return prompt + ans, [0.0] * len(prompt) + [1.0] * len(ans)

    def document(self, text: str, answer_span_weight: float | None = None,
                 other_weight: float = 1.0) -> Example:
        return self._pack([self._doc_segment(text, answer_span_weight, other_weight)], "doc")

    def qa(self, question: str, answer: str) -> Example:
        ex = self._pack([self._qa_segment(question, answer)], "qa")
        if not ex.trainable:
            raise DataError(
                f"QA pair {question!r} leaves no answer token within model.max_seq_len="
                f"{self.max_len}; raise max_seq_len or shorten the question"
            )
        return ex

    def doc_with_qa(self, text: str, pairs: list[tuple[str, str]], position: str) -> Example:
        """A document and its entity's QA pairs in one sequence, one line each.

        The layout of the interleaved PIT variants, like open-book QA: `before` puts the
        pairs first and the document after them, `after` the other way round.
        """
        nl = self._ids("\n")
        qa_segs = [self._qa_segment(q, a) for q, a in pairs]
        doc_seg = self._doc_segment(text)
        segs = qa_segs + [doc_seg] if position == "before" else [doc_seg] + qa_segs
        joined = [segs[0]] + [(nl + ids, [w[0]] * len(nl) + w) for ids, w in segs[1:]]
        return self._pack(joined, "doc")

    def open_book(self, text: str, question: str, answer: str, doc_weight: float = 0.0
                  ) -> Example:
        """A document, then a question about it: reading comprehension for the base model.

        The loss is on the answer; `doc_weight` puts some on the document's tokens too.
        """
        doc_ids, doc_w = self._doc_segment(text, other_w=doc_weight)
        q_ids, q_w = self._qa_segment(question, answer)
        nl = self._ids("\n")
        return self._pack([(doc_ids, doc_w), (nl + q_ids, [0.0] * len(nl) + q_w)], "qa")
