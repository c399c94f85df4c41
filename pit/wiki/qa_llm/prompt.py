"""What the LLM is asked: the prompt, its version, and the subject each question must name."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pit.wiki.qa_llm.config import LLMQAConfig

PROMPT_VERSION = "wiki-qa-v1"
"""Bump whenever the prompt changes: it is part of the cache key, so old replies
are not reused for a prompt that would have produced different ones."""

SYSTEM_PROMPT = (
    "You write short-answer quiz questions about an encyclopedia article. "
    "You follow the requested output format exactly."
)

USER_PROMPT = """Here is the lead section of the Wikipedia article about "{subject}".

{text}

Write about {n} questions about {subject} that this text answers, each with a short answer.
Rules:
- Every question must contain the exact name "{subject}".
- Each answer is a short phrase (a name, a date, a number or a few words) copied exactly \
from the text.
- A question must make sense without the text and must not contain its own answer.
- Do not repeat a question.

Reply with the pairs only, in exactly this format:
Q: <question>
A: <answer>"""


def subject_of(doc: dict[str, Any]) -> str:
    """The name a question must contain: the title without a disambiguator like "(2023 film)"."""
    subject = doc.get("subject") or re.sub(r"\s*\([^()]*\)\s*$", "", str(doc["title"]))
    return subject.strip() or str(doc["title"]).strip()


def doc_hash(doc: dict[str, Any]) -> str:
    """Content hash of what the prompt shows, so an edited page is asked again."""
    payload = json.dumps([subject_of(doc), doc["title"], doc["text"]], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def build_messages(doc: dict[str, Any], config: LLMQAConfig) -> list[dict[str, str]]:
    """The chat messages for one document."""
    text = str(doc["text"]).strip()
    if len(text) > config.max_doc_chars:
        cut = text.rfind(" ", 0, config.max_doc_chars)
        text = text[: cut if cut > 0 else config.max_doc_chars]
    subject = subject_of(doc)
    user = USER_PROMPT.format(subject=subject, text=text, n=config.questions_per_doc)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
