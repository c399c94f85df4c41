"""Fill-in-the-blank recall: is a fact stored, whether or not a question can reach it?

The paper's perplexity curse is the gap between the two: a model that completes
"The Glass Horizon was directed by" with the right name holds the fact, and one
that still cannot answer "Who directed The Glass Horizon?" cannot extract it.
Each test question becomes the sentence of a test document that states its
answer, cut just before the answer; the model's continuation must contain it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

_SENTENCE_START = re.compile(r"(?:^|(?<=[.!?])\s+)")


def cloze_prompt(text: str, answer: str, min_words: int = 2) -> str | None:
    """The sentence of `text` that states `answer`, up to it; None if no sentence leads in.

    An answer at the very start of its sentence gives nothing to complete, so
    another occurrence (or another document) is looked for.
    """
    start = 0
    while (at := text.find(answer, start)) >= 0:
        starts = [m.end() for m in _SENTENCE_START.finditer(text, 0, at + 1) if m.end() <= at]
        prefix = text[(starts[-1] if starts else 0) : at].rstrip()
        if len(prefix.split()) >= min_words:
            return prefix
        start = at + 1
    return None


def cloze_items(questions: Iterable[dict[str, Any]], docs: Sequence[dict[str, Any]]
                ) -> list[tuple[dict[str, Any], str]]:
    """(question, prompt) for every question whose answer a document of its entity states."""
    by_entity: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_entity.setdefault(d["entity_id"], []).append(d)
    items = []
    for q in questions:
        for d in by_entity.get(q["entity_id"], []):
            prompt = cloze_prompt(d["text"], q["answers"][0])
            if prompt is not None:
                items.append((q, prompt))
                break
    return items
