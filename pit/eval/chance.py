"""Chance level: what a model scores that knows the answer format and nothing else.

A score means little without it: a guess of the most common answer of each
relation, learned from the questions a recipe may train on, is the floor every
recipe must clear before its exact match says anything about knowledge.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from pit.eval.metrics import exact_match, normalize


def _relation(q: dict[str, Any]) -> str:
    """The relation a question asks for: its attribute, or the question with the subject cut."""
    if q.get("attribute"):
        return str(q["attribute"])
    return " ".join(q["question"].split()[:3]).lower()


def chance_exact_match(test: Sequence[dict[str, Any]], known: Sequence[dict[str, Any]]) -> float:
    """Exact match (0-100) of guessing, per relation, the most common answer among `known`."""
    if not test:
        return 0.0
    counts: dict[str, Counter[str]] = {}
    for q in known:
        counts.setdefault(_relation(q), Counter())[normalize(q["answers"][0])] += 1
    overall = Counter(a for c in counts.values() for a in c.elements())
    hits = 0.0
    for q in test:
        guess = (counts.get(_relation(q)) or overall or Counter({"": 1})).most_common(1)[0][0]
        hits += exact_match(guess, q["answers"])
    return 100.0 * hits / len(test)
