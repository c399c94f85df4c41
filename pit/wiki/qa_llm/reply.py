"""A model's reply to QA pairs a closed-book evaluation can trust.

The reply is parsed leniently (`Q:`/`A:` lines, `Question:`/`Answer:`, numbered
lists, a JSON list), because models drift from any format asked for; then each
pair is filtered: an answer must occur in the document (after the evaluation's
own normalisation), the question must name the subject and must not contain
its answer, and a question is kept once.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pit.wiki.qa_llm.prompt import subject_of

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_text(text: str) -> str:
    """The evaluation's normalisation: lower-case, no punctuation or articles, folded spaces.

    Grounding uses the same rule as exact match, so an answer kept here is one the
    model can reproduce exactly from the document.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _contains(haystack_norm: str, needle: str) -> bool:
    """Whole-word containment of `needle` in an already normalised text."""
    norm = normalize_text(needle)
    return bool(norm) and f" {norm} " in f" {haystack_norm} "


@dataclass
class ParsedReply:
    """Pairs found in one reply, and how many reply units held no usable pair."""

    pairs: list[tuple[str, list[str]]] = field(default_factory=list)
    malformed: int = 0


_FENCE = re.compile(r"^\s*```[\w-]*\s*$")
_BULLET = re.compile(r"^\s*(?:\(?\d{1,3}[.):]|[-*\u2022])\s+")
_Q_LABEL = re.compile(r"^(?:q(?:uestion)?)\s*\d{0,3}\s*[:.)\-]\s*", re.IGNORECASE)
_A_LABEL = re.compile(r"^(?:a(?:nswer)?s?)\s*\d{0,3}\s*[:.)\-]\s*", re.IGNORECASE)
_INLINE_A = re.compile(r"\s+(?:a|answers?)\s*[:\-]\s+", re.IGNORECASE)
_AFTER_QMARK = re.compile(r"\?\s*(?:[-\u2013\u2014:|=]+>?\s*)?(?=\S)")
_MARKDOWN = re.compile(r"[*_`]+")
_JSON_LIST = re.compile(r"\[\s*\{")


def _clean(text: str) -> str:
    return _MARKDOWN.sub("", text).strip()


def _clean_answer(text: str) -> str:
    text = _clean(text).strip()
    text = text.strip("\"'\u201c\u201d\u2018\u2019 ")
    return text.rstrip(".").strip()


def _split_answers(text: str) -> list[str]:
    """Alternatives a model lists with ';' or '|' (commas stay: "Paris, Texas" is one answer)."""
    return [a for a in (_clean_answer(p) for p in re.split(r"\s*[;|]\s*", text)) if a]


def _parse_json(text: str) -> ParsedReply | None:
    """A JSON list of {question, answer(s)} objects, possibly wrapped in an object or prose."""
    start, end = text.find("["), text.rfind("]")
    candidates = [text.strip()]
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    data: Any = None
    for candidate in candidates:
        try:
            data = json.loads(candidate)
            break
        except ValueError:
            continue
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, list)), None)
    if not isinstance(data, list):
        return None
    out = ParsedReply()
    for item in data:
        if not isinstance(item, dict):
            out.malformed += 1
            continue
        lowered = {str(k).lower(): v for k, v in item.items()}
        question = lowered.get("question", lowered.get("q"))
        raw = lowered.get("answers", lowered.get("answer", lowered.get("a")))
        raw_list = raw if isinstance(raw, list) else [raw]
        answers = [_clean_answer(str(a)) for a in raw_list if isinstance(a, (str, int, float))]
        answers = [a for a in answers if a]
        if not isinstance(question, str) or not question.strip() or not answers:
            out.malformed += 1
            continue
        out.pairs.append((_clean(question), answers))
    return out


def parse_qa_reply(text: str) -> ParsedReply:
    """Question-answer pairs from a model's reply, in whichever of the usual formats it used.

    Accepts ``Q:``/``A:`` and ``Question:``/``Answer:`` line pairs, both on one line,
    numbered or bulleted lists (``1. Who directed X? Jane Doe``) and a JSON list.
    Every non-blank line that ends up in no pair (prose, an orphan answer, a
    question left without answer) counts as malformed.
    """
    stripped = text.strip()
    if stripped.startswith("{") or _JSON_LIST.search(stripped):
        body = "\n".join(line for line in stripped.splitlines() if not _FENCE.match(line))
        parsed = _parse_json(body)
        if parsed is not None:
            return parsed

    out = ParsedReply()
    pending: str | None = None
    for raw_line in text.splitlines():
        if not raw_line.strip() or _FENCE.match(raw_line):
            continue
        line = _clean(_BULLET.sub("", _clean(raw_line), count=1))
        if not line:
            continue
        q_match = _Q_LABEL.match(line)
        a_match = _A_LABEL.match(line) if not q_match else None
        if a_match:
            answers = _split_answers(line[a_match.end() :])
            if pending is not None and answers:
                out.pairs.append((pending, answers))
            else:
                out.malformed += 1 + (pending is not None)
            pending = None
            continue
        if pending is not None:  # a question line followed by anything but its answer
            out.malformed += 1
            pending = None
        body = line[q_match.end() :] if q_match else line
        inline = _INLINE_A.search(body)
        if inline and (q_match or body[: inline.start()].rstrip().endswith("?")):
            question, answers = body[: inline.start()].strip(), _split_answers(body[inline.end() :])
        elif (mark := list(_AFTER_QMARK.finditer(body))) and mark[-1].end() < len(body):
            cut = mark[-1]
            question, answers = body[: cut.start() + 1].strip(), _split_answers(body[cut.end() :])
        elif q_match and body.strip():
            pending = body.strip()
            continue
        else:
            out.malformed += 1
            continue
        if question and answers:
            out.pairs.append((question, answers))
        else:
            out.malformed += 1
    if pending is not None:
        out.malformed += 1
    return out


def filter_pairs(
    doc: dict[str, Any], pairs: list[tuple[str, list[str]]], stats: Counter[str]
) -> list[dict[str, Any]]:
    """Keep the pairs a closed-book evaluation can trust, as qa.jsonl records (sans generator).

    Each drop is counted in `stats` under its reason, so a data set card can say
    how much the filters removed.
    """
    doc_norm = normalize_text(f"{doc['title']} {doc['text']}")
    subject = subject_of(doc)
    seen: set[str] = set()
    kept: list[dict[str, Any]] = []
    for question, answers in pairs:
        grounded = list(dict.fromkeys(a for a in answers if _contains(doc_norm, a)))
        if not grounded:
            stats["ungrounded"] += 1
            continue
        q_norm = normalize_text(question)
        if not _contains(q_norm, subject):
            stats["no_subject"] += 1
            continue
        if all(_contains(q_norm, a) for a in grounded):
            stats["answer_in_question"] += 1
            continue
        if q_norm in seen:
            stats["duplicate"] += 1
            continue
        seen.add(q_norm)
        kept.append({"page_id": doc["page_id"], "question": question, "answers": grounded})
    return kept
