"""QA pairs written by an LLM, the way the paper built Wiki2023.

The paper asked an LLM for short-answer questions about each document's lead
section, each question naming its subject so it can be asked closed-book. This
module does the same through either an OpenAI-compatible chat completions
endpoint (vLLM, TGI, OpenAI) or a local transformers causal LM, and then keeps
only what a closed-book evaluation can trust:

- the reply is parsed leniently (``Q:``/``A:`` lines, ``Question:``/``Answer:``,
  numbered lists, a JSON list), because models drift from any format asked for;
  lines that hold no usable pair are skipped and counted, never fatal;
- an answer that does not occur in the document (after the evaluation's own
  normalisation) is dropped: the model cannot learn it from the document, so it
  would measure hallucination, not knowledge acquisition;
- a question that does not name the subject is dropped: asked closed-book, it
  would be ambiguous;
- a question whose answer it already contains, and repeated questions, are
  dropped.

Replies are cached on disk, keyed by a hash of the document, the model and the
prompt version, so a rerun after a crash or a filter change sends no request for
documents already answered. The API key lives in a ``SecretStr`` and is only
ever put into the ``Authorization`` header: it never reaches a log line, a repr
or an error message.

The package holds one noun per module: `config` (how to reach the model),
`prompt` (what it is asked), `reply` (parsing and filtering what it says),
`cache` (replies on disk), `refusals` (documents the endpoint refused, and
how many may be) and `generator` (the client that ties them together).
"""

from pit.wiki.qa_llm.cache import ReplyCache
from pit.wiki.qa_llm.config import (
    LLMDocumentRefused,
    LLMEndpointError,
    LLMQAConfig,
    LLMUnavailableError,
)
from pit.wiki.qa_llm.generator import REFUSED_STATUS, RETRYABLE_STATUS, STAT_KEYS, LLMQAGenerator
from pit.wiki.qa_llm.prompt import (
    PROMPT_VERSION,
    SYSTEM_PROMPT,
    USER_PROMPT,
    build_messages,
    doc_hash,
    subject_of,
)
from pit.wiki.qa_llm.reply import ParsedReply, filter_pairs, normalize_text, parse_qa_reply

__all__ = [
    "PROMPT_VERSION",
    "REFUSED_STATUS",
    "RETRYABLE_STATUS",
    "STAT_KEYS",
    "SYSTEM_PROMPT",
    "USER_PROMPT",
    "LLMDocumentRefused",
    "LLMEndpointError",
    "LLMUnavailableError",
    "LLMQAConfig",
    "LLMQAGenerator",
    "ParsedReply",
    "ReplyCache",
    "build_messages",
    "doc_hash",
    "filter_pairs",
    "normalize_text",
    "parse_qa_reply",
    "subject_of",
]
