"""Documents an endpoint refused, and when there are too many of them to go on.

A refusal (HTTP 400 from a content filter or a context too long, 413, 422)
concerns one document: skipping it costs a handful of questions. Many
refusals mean something else is wrong (a model name the server rejects, a
prompt longer than its context for every article), and a data set built
without most of its questions would pass for a good one; so beyond
`max_refused_share` of the documents, or when every one is refused, the
generation fails.
"""

from __future__ import annotations

from typing import Any

from pit.wiki.qa_llm.config import LLMEndpointError


def allowed_refusals(share: float, asked: int) -> int:
    """How many of `asked` documents may be refused: `share` of them, never all."""
    return max(0, min(int(share * asked + 1e-9), asked - 1))


def check_refusals(endpoint: str, share: float, docs: list[dict[str, Any]],
                   refused: dict[int, str], asked: int) -> None:
    """Raise :class:`LLMEndpointError` when more of `asked` documents were refused than allowed.

    `refused` maps an index into `docs` to the endpoint's reason.
    """
    if len(refused) <= allowed_refusals(share, asked):
        return
    examples = "; ".join(f"page {docs[i]['page_id']} ({docs[i]['title']!r}): {reason}"
                         for i, reason in sorted(refused.items())[:3])
    raise LLMEndpointError(
        endpoint,
        f"it refused {len(refused)} of {asked} documents, more than max_refused_share="
        f"{share:g} allows (e.g. {examples}). When most documents are refused, check the "
        "model name and the prompt's length against the server's context; to skip more "
        "documents, raise max_refused_share (`pit data wiki --llm-max-refused-share`). "
        "Replies received so far are cached.",
    )
