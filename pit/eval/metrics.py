"""Answer metrics with the paper's normalisation (SQuAD style).

Normalisation lower-cases, strips punctuation and the articles a/an/the, and
folds white space. A gold answer that normalises to nothing (an answer of
"The" or "!") is compared on its raw lower-cased text instead: otherwise it
would be contained in, and so "recalled" by, every prediction.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _norm_gold(gold: str) -> str:
    n = normalize(gold)
    return n if n else " ".join(gold.lower().split())


def _golds(answers: Sequence[str]) -> list[str]:
    out = [_norm_gold(a) for a in answers if a and a.strip()]
    return out


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    pred = normalize(prediction)
    golds = _golds(answers)
    if not golds:
        return 0.0
    raw = " ".join(prediction.lower().split())
    return float(any(g in (pred, raw) for g in golds))


def answer_recall(prediction: str, answers: Sequence[str]) -> float:
    """1 when some gold answer appears, as whole words, in the prediction."""
    pred = f" {normalize(prediction)} "
    raw = f" {' '.join(prediction.lower().split())} "
    return float(any(f" {g} " in pred or f" {g} " in raw for g in _golds(answers)))


def f1(prediction: str, answers: Sequence[str]) -> float:
    pred_toks = normalize(prediction).split()
    best = 0.0
    for g in _golds(answers):
        gold_toks = g.split()
        common = Counter(pred_toks) & Counter(gold_toks)
        same = sum(common.values())
        if same == 0:
            continue
        p, r = same / len(pred_toks), same / len(gold_toks)
        best = max(best, 2 * p * r / (p + r))
    return best


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(prediction: str, answers: Sequence[str]) -> float:
    golds = _golds(answers)
    pred = normalize(prediction)
    if not golds or not pred:
        return 0.0
    return max(_scorer().score(g, pred)["rougeL"].fmeasure for g in golds)


def score(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean metrics over a set, as percentages (0-100) like the paper's tables."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} questions")
    n = max(len(predictions), 1)
    fns = {"exact_match": exact_match, "answer_recall": answer_recall, "rouge_l": rouge_l, "f1": f1}
    return {
        name: 100.0 * sum(fn(p, a) for p, a in zip(predictions, answers, strict=False)) / n
        for name, fn in fns.items()
    }
