"""Short-answer QA pairs from a film's infobox: offline, deterministic, grounded.

The paper's QA pairs are written by an LLM; these are the ones a reader could
write from the infobox alone, so they need no endpoint, cost nothing and are
the same on every run. Each field has several question templates (the paper's
questions vary in wording, and a model that only ever sees "Who directed X?"
learns the template, not the fact); the template is chosen by a hash of the
page id and field, not by a random generator, so a rebuild gives the same data
set and the same fingerprint.

Every question names its film, because the model answers closed-book: "Who
directed the film?" has no answer without the document in context. Answers are
kept only when they also appear in the lead text, so a model trained on the
document can learn them (the infobox holds facts the lead does not state).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from pit.wiki.infobox import release_year

GENERATOR = "infobox"

# field -> templates; `{film}` is the subject, answers are the field's values.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "director": (
        "Who directed {film}?",
        "Who was the director of {film}?",
        "{film} was directed by whom?",
    ),
    "starring": (
        "Who starred in {film}?",
        "Name an actor who appeared in {film}.",
        "Which actor had a leading role in {film}?",
    ),
    "year": (
        "In what year was {film} released?",
        "When was {film} first released?",
        "{film} came out in which year?",
    ),
    "writer": (
        "Who wrote {film}?",
        "Who is credited as a writer of {film}?",
    ),
    "screenplay": (
        "Who wrote the screenplay for {film}?",
        "Whose screenplay was {film} filmed from?",
    ),
    "producer": (
        "Who produced {film}?",
        "Who was a producer of {film}?",
    ),
    "music": (
        "Who composed the music for {film}?",
        "Who wrote the score of {film}?",
    ),
    "cinematography": (
        "Who was the cinematographer of {film}?",
        "Who shot {film}?",
    ),
    "editing": (
        "Who edited {film}?",
        "Who was the film editor of {film}?",
    ),
    "distributor": (
        "Which company distributed {film}?",
        "Who was the distributor of {film}?",
    ),
    "production_companies": (
        "Which company produced {film}?",
        "What studio made {film}?",
    ),
    "country": (
        "In which country was {film} made?",
        "What country is {film} from?",
    ),
    "language": (
        "In what language is {film}?",
        "What is the original language of {film}?",
    ),
    "based_on": (
        "What is {film} based on?",
        "{film} is an adaptation of what work?",
    ),
}

_DISAMBIG = re.compile(r"\s*\(([^)]*)\)\s*$")


def subject(title: str) -> str:
    """How a question names the film: the title, with a year disambiguator kept as prose.

    `Batman (1966 film)` -> `the 1966 film Batman`; `Health (film)` -> `the film Health`;
    `Taxi Driver` -> `Taxi Driver`. The bare title is always part of the subject.
    """
    m = _DISAMBIG.search(title)
    if not m:
        return title
    base = title[: m.start()].strip()
    year = re.search(r"\b(\d{4})\b", m.group(1))
    return f"the {year.group(1)} film {base}" if year else f"the film {base}"


def base_title(title: str) -> str:
    """The title without its `(disambiguation)`: the name every question contains."""
    return _DISAMBIG.sub("", title).strip()


def _pick(key: str, n: int) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % n


def _strip_place(value: str) -> str:
    return re.sub(r"\s*\([^)]*\)\s*$", "", value).strip()


def _grounded(values: list[str], text: str) -> list[str]:
    low = text.lower()
    return [v for v in values if v and v.lower() in low]


def infobox_qa(
    doc: dict[str, Any], max_per_doc: int = 8, require_in_text: bool = True
) -> list[dict[str, Any]]:
    """QA pairs for one document record (`page_id`, `title`, `text`, `infobox`).

    Returns `{page_id, question, answers, generator}` dicts, at most one per field,
    fields in the order of TEMPLATES.
    """
    box = doc.get("infobox") or {}
    title = doc["title"]
    text = doc.get("text", "")
    film = subject(title)
    out: list[dict[str, Any]] = []
    for field, templates in TEMPLATES.items():
        if field == "year":
            year = release_year(box)
            values = [str(year)] if year else []
        else:
            values = [_strip_place(v) for v in box.get(field, [])]
            values = [v for v in values if len(v) <= 80]
        if require_in_text:
            values = _grounded(values, text)
        if not values:
            continue
        template = templates[_pick(f"{doc['page_id']}:{field}", len(templates))]
        question = template.format(film=film)
        question = question[0].upper() + question[1:]
        out.append(
            {
                "page_id": doc["page_id"],
                "question": question,
                "answers": list(dict.fromkeys(values)),
                "generator": GENERATOR,
            }
        )
        if len(out) >= max_per_doc:
            break
    return out
