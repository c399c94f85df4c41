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
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import tempfile
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from pit.errors import ConfigError, ModelNotFoundError, PitError

logger = logging.getLogger(__name__)

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

STAT_KEYS = (
    "docs",
    "empty_docs",
    "cached",
    "requested",
    "retries",
    "parsed_pairs",
    "malformed",
    "ungrounded",
    "no_subject",
    "answer_in_question",
    "duplicate",
    "kept",
)
"""Counts `LLMQAGenerator.generate` always reports (plus `seconds`), zero when nothing happened."""

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class LLMQAConfig(BaseModel):
    """How to reach the LLM that writes QA pairs, and how hard to push it."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["openai", "transformers"] = Field(
        "openai",
        description=(
            "'openai': any OpenAI-compatible chat completions server (vLLM, TGI, OpenAI); "
            "'transformers': a local causal LM loaded from model_name_or_path."
        ),
    )
    base_url: str = Field(
        "http://127.0.0.1:8000/v1",
        description=(
            "Base URL of the OpenAI-compatible API, up to and including '/v1'; "
            "'/chat/completions' is appended. The default is where `vllm serve` listens."
        ),
    )
    model: str = Field(
        "meta-llama/Llama-3.1-8B-Instruct",
        description="Model name sent in each request (the name the server serves it under).",
    )
    api_key: SecretStr | None = Field(
        None,
        description=(
            "API key sent as a Bearer token. Prefer api_key_env so the key stays out of "
            "config files; kept secret in logs, reprs and errors either way."
        ),
    )
    api_key_env: str | None = Field(
        "OPENAI_API_KEY",
        description=(
            "Environment variable read for the API key when api_key is not set. "
            "If neither gives a key, no Authorization header is sent (a local vLLM needs none)."
        ),
    )
    model_name_or_path: str | None = Field(
        None,
        description=(
            "Hugging Face id or local folder of the causal LM for the 'transformers' backend; "
            "it generates greedily."
        ),
    )
    device: str = Field(
        "auto",
        description="Torch device for the 'transformers' backend; 'auto' picks CUDA when present.",
    )
    local_batch_size: int = Field(
        4, ge=1, description="Documents generated together by the 'transformers' backend."
    )
    questions_per_doc: int = Field(
        5, ge=1, le=50, description="How many questions to ask for per document (the paper: ~5)."
    )
    max_doc_chars: int = Field(
        6000,
        ge=200,
        description="Documents are cut to this many characters in the prompt, to bound its length.",
    )
    temperature: float = Field(
        0.0, ge=0.0, le=2.0, description="Sampling temperature; 0 makes replies reproducible."
    )
    max_tokens: int = Field(512, ge=1, description="Most tokens generated per reply.")
    max_concurrency: int = Field(
        8, ge=1, description="Requests in flight at once against the endpoint."
    )
    max_retries: int = Field(
        5,
        ge=0,
        description="Retries per request on HTTP 429/5xx, timeouts and connection errors.",
    )
    backoff_initial_s: float = Field(
        1.0, ge=0.0, description="First retry delay; it doubles on each further retry."
    )
    backoff_max_s: float = Field(
        30.0, ge=0.0, description="Cap on one retry delay, also on a server's Retry-After."
    )
    timeout_s: float = Field(120.0, gt=0.0, description="Timeout of one HTTP request.")
    cache_dir: Path | None = Field(
        None,
        description=(
            "Folder of cached replies, keyed by document hash, model and prompt version; "
            "None disables the cache."
        ),
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    def resolved_api_key(self) -> SecretStr | None:
        """The key to send: the explicit field first, then the named environment variable."""
        if self.api_key is not None and self.api_key.get_secret_value():
            return self.api_key
        if self.api_key_env:
            value = os.environ.get(self.api_key_env)
            if value:
                return SecretStr(value)
        return None

    @property
    def generator_name(self) -> str:
        """The `generator` tag of each QA record, so data sets say which model wrote them."""
        name = self.model if self.backend == "openai" else self.model_name_or_path
        return f"llm:{name}"


class LLMEndpointError(PitError):
    """The LLM endpoint failed for good: down, overloaded past all retries, or refusing us.

    The message names the endpoint (without credentials) and the last failure,
    never the API key.
    """

    def __init__(self, endpoint: str, detail: str, attempts: int | None = None) -> None:
        self.endpoint = endpoint
        self.attempts = attempts
        tried = f" after {attempts} attempt{'s' if attempts != 1 else ''}" if attempts else ""
        super().__init__(f"LLM endpoint {endpoint} failed{tried}: {detail}")


# --------------------------------------------------------------------------- text


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


# --------------------------------------------------------------------------- parsing


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


# --------------------------------------------------------------------------- filtering


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


# --------------------------------------------------------------------------- cache


class ReplyCache:
    """Raw replies on disk, one JSON file per (document, model, prompt) key.

    Raw replies rather than filtered pairs are kept so parsing and filters can
    change without paying for the requests again. Files are written under a
    temporary name and renamed, so a crash never leaves a half-written entry.
    """

    def __init__(self, root: Path | None) -> None:
        self.root = Path(root) if root is not None else None

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        if self.root is None:
            return None
        path = self._path(key)
        try:
            return str(json.loads(path.read_text(encoding="utf-8"))["reply"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, OSError):
            logger.warning("ignoring unreadable QA cache entry %s", path)
            return None

    def put(self, key: str, reply: str, meta: dict[str, Any]) -> None:
        if self.root is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({**meta, "reply": reply}, f, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


# --------------------------------------------------------------------------- generator


def _public_endpoint(url: str) -> str:
    """The URL with any user:password and query string removed, safe to show in errors."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(username=None, password=None, query=None, fragment=None))


class LLMQAGenerator:
    """Writes QA records for documents with an LLM; see the module docstring for the rules.

    Use ``generate(docs)`` for many documents (concurrent, cached) or call the
    instance on one document. It holds an HTTP connection pool or a loaded model,
    so close it (or use it as a context manager) when done.
    """

    def __init__(self, config: LLMQAConfig | None = None) -> None:
        self.config = config or LLMQAConfig()
        if self.config.backend == "transformers" and not self.config.model_name_or_path:
            raise ConfigError(
                "backend 'transformers' needs model_name_or_path (a Hub id or a local folder)",
                source="LLMQAConfig",
            )
        self.endpoint = _public_endpoint(f"{self.config.base_url}/chat/completions")
        self._cache = ReplyCache(self.config.cache_dir)
        self._client: httpx.Client | None = None
        self._local: tuple[Any, Any] | None = None
        self._lock = threading.Lock()
        self._retries = 0

    def __repr__(self) -> str:
        where = self.endpoint if self.config.backend == "openai" else self.config.model_name_or_path
        return f"LLMQAGenerator({self.config.generator_name!r}, {where!r})"

    def __enter__(self) -> LLMQAGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the HTTP connection pool and any loaded model."""
        if self._client is not None:
            self._client.close()
            self._client = None
        self._local = None

    def __call__(self, doc: dict[str, Any]) -> list[dict[str, Any]]:
        """QA records for one document."""
        records, _ = self.generate([doc])
        return records

    def cache_key(self, doc: dict[str, Any]) -> str:
        """Document hash + model + prompt version (+ the settings that change the reply)."""
        c = self.config
        parts = [
            doc_hash(doc),
            c.generator_name,
            PROMPT_VERSION,
            c.questions_per_doc,
            c.max_doc_chars,
            c.temperature,
            c.max_tokens,
        ]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    def generate(self, docs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """QA records for `docs`, in document order, and counts of what happened.

        Cached documents are answered from disk; the rest go to the model
        (concurrently for an endpoint), and each reply is cached as soon as it
        arrives, so a run that fails part-way resumes where it stopped.
        """
        for i, doc in enumerate(docs):
            missing = [k for k in ("page_id", "title", "text") if k not in doc]
            if missing:
                raise ConfigError(f"docs[{i}] lacks {missing}", source="QA generation input")
        stats: Counter[str] = Counter({name: 0 for name in STAT_KEYS})
        stats["docs"] = len(docs)
        started = time.monotonic()
        retries_before = self._retries
        keys = [self.cache_key(doc) for doc in docs]
        replies: dict[int, str] = {}
        todo: list[int] = []
        first_of: dict[str, int] = {}  # a document given twice is asked once
        for i, (doc, key) in enumerate(zip(docs, keys, strict=True)):
            if not str(doc["text"]).strip():
                stats["empty_docs"] += 1
                replies[i] = ""
                continue
            if key in first_of:
                continue
            first_of[key] = i
            cached = self._cache.get(key)
            if cached is None:
                todo.append(i)
            else:
                replies[i] = cached
                stats["cached"] += 1

        def store(i: int, reply: str) -> None:
            meta = {
                "page_id": docs[i]["page_id"],
                "doc_hash": doc_hash(docs[i]),
                "generator": self.config.generator_name,
                "prompt_version": PROMPT_VERSION,
            }
            self._cache.put(keys[i], reply, meta)
            replies[i] = reply

        if todo:
            logger.info(
                "asking %s for QA on %d documents (%d cached)",
                self.config.generator_name,
                len(todo),
                stats["cached"],
            )
            if self.config.backend == "openai":
                self._run_remote([docs[i] for i in todo], todo, store)
            else:
                self._run_local([docs[i] for i in todo], todo, store)
        stats["requested"] = len(todo)
        stats["retries"] = self._retries - retries_before
        for i, key in enumerate(keys):
            if i not in replies and key in first_of:
                replies[i] = replies[first_of[key]]

        records: list[dict[str, Any]] = []
        for i, doc in enumerate(docs):
            parsed = parse_qa_reply(replies.get(i, ""))
            stats["parsed_pairs"] += len(parsed.pairs)
            stats["malformed"] += parsed.malformed
            for record in filter_pairs(doc, parsed.pairs, stats):
                record["generator"] = self.config.generator_name
                records.append(record)
        stats["kept"] = len(records)
        out: dict[str, Any] = dict(stats)
        out["seconds"] = round(time.monotonic() - started, 3)
        logger.info("LLM QA: %s", out)
        return records, out

    # ---------------------------------------------------------------- endpoint

    def _http(self) -> httpx.Client:
        if self._client is None:
            limits = httpx.Limits(max_connections=self.config.max_concurrency)
            self._client = httpx.Client(timeout=self.config.timeout_s, limits=limits)
        return self._client

    def _run_remote(
        self, docs: list[dict[str, Any]], indices: list[int], store: Callable[[int, str], None]
    ) -> None:
        client = self._http()
        error: BaseException | None = None
        stored: set[Future[str]] = set()
        with ThreadPoolExecutor(max_workers=self.config.max_concurrency) as pool:
            futures = {
                pool.submit(self._complete, client, doc): i
                for doc, i in zip(docs, indices, strict=True)
            }
            for future in as_completed(futures):
                if future.exception() is not None:
                    error = future.exception()
                    for other in futures:
                        other.cancel()
                    break
                store(futures[future], future.result())
                stored.add(future)
        # Replies that arrived while the pool wound down are paid for: keep them too.
        for future, i in futures.items():
            if future not in stored and not future.cancelled() and future.exception() is None:
                store(i, future.result())
        if error is not None:
            raise error

    def _complete(self, client: httpx.Client, doc: dict[str, Any]) -> str:
        """One chat completion, retried with exponential backoff on transient failures."""
        c = self.config
        payload = {
            "model": c.model,
            "messages": build_messages(doc, c),
            "temperature": c.temperature,
            "max_tokens": c.max_tokens,
        }
        key = c.resolved_api_key()
        headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
        attempts = c.max_retries + 1
        last = ""
        for attempt in range(attempts):
            retry_after: float | None = None
            try:
                response = client.post(self.endpoint_url, json=payload, headers=headers)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {self._scrub(str(exc)) or 'no detail'}"
            else:
                if response.status_code == 200:
                    return self._content(response)
                detail = self._scrub(response.text[:300].strip())
                last = f"HTTP {response.status_code}" + (f": {detail}" if detail else "")
                if response.status_code in (401, 403):
                    hint = (
                        f"the key from {'api_key' if c.api_key else c.api_key_env} was rejected"
                        if key
                        else f"no API key was sent; set {c.api_key_env or 'api_key'}"
                    )
                    raise LLMEndpointError(self.endpoint, f"{last} ({hint})")
                if response.status_code not in RETRYABLE_STATUS:
                    raise LLMEndpointError(self.endpoint, f"{last} (not retried)")
                retry_after = _retry_after(response)
            if attempt + 1 == attempts:
                break
            delay = min(c.backoff_max_s, c.backoff_initial_s * 2**attempt)
            delay *= 0.5 + random.random() / 2
            if retry_after is not None:
                delay = min(c.backoff_max_s, max(delay, retry_after))
            with self._lock:
                self._retries += 1
            logger.warning(
                "LLM endpoint %s: %s; retry %d/%d in %.2fs",
                self.endpoint,
                last,
                attempt + 1,
                c.max_retries,
                delay,
            )
            time.sleep(delay)
        raise LLMEndpointError(
            self.endpoint,
            f"{last}. Check that the server is up and base_url is right.",
            attempts=attempts,
        )

    @property
    def endpoint_url(self) -> str:
        """The URL requests go to (base_url as configured, with any credentials in it)."""
        return f"{self.config.base_url}/chat/completions"

    def _content(self, response: httpx.Response) -> str:
        try:
            body = response.json()
            content = body["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            snippet = self._scrub(response.text[:200])
            raise LLMEndpointError(
                self.endpoint, f"reply is not a chat completion: {snippet!r}"
            ) from None
        return content if isinstance(content, str) else ""

    def _scrub(self, text: str) -> str:
        """Remove the API key from text a server echoed back, before it reaches an error."""
        key = self.config.resolved_api_key()
        if key and key.get_secret_value():
            text = text.replace(key.get_secret_value(), "**********")
        return text

    # ---------------------------------------------------------------- local model

    def _load_local(self) -> tuple[Any, Any]:
        if self._local is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            name = self.config.model_name_or_path
            assert name is not None
            device = self.config.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            try:
                tokenizer = AutoTokenizer.from_pretrained(name)
                model = AutoModelForCausalLM.from_pretrained(name)
            except OSError as exc:
                raise ModelNotFoundError(
                    f"cannot load the QA model {name!r}: {exc}. "
                    "Give a local folder or a Hugging Face id this machine can download."
                ) from exc
            tokenizer.padding_side = "left"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
            model.to(device).eval()
            self._local = (tokenizer, model)
        return self._local

    def _run_local(
        self, docs: list[dict[str, Any]], indices: list[int], store: Callable[[int, str], None]
    ) -> None:
        import torch

        tokenizer, model = self._load_local()
        size = self.config.local_batch_size
        for start in range(0, len(docs), size):
            batch = docs[start : start + size]
            rendered = [_render_prompt(tokenizer, build_messages(d, self.config)) for d in batch]
            prompts = [prompt for prompt, _ in rendered]
            enc = tokenizer(
                prompts, return_tensors="pt", padding=True, add_special_tokens=False
            ).to(model.device)
            with torch.no_grad():
                out = model.generate(
                    **enc,
                    do_sample=False,
                    max_new_tokens=self.config.max_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new_tokens = out[:, enc["input_ids"].shape[1] :]
            texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for i, (_, cue), text in zip(
                indices[start : start + size], rendered, texts, strict=True
            ):
                store(i, cue + text)


def _render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, str]:
    """The prompt, and the cue it ends in that the reply continues.

    A chat model gets its own chat template; a base model gets plain text ending
    in "Q:", which steers it into the format, and the cue is put back in front of
    its continuation so the parser sees whole pairs.
    """
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return str(prompt), ""
    bos = tokenizer.bos_token or ""
    return bos + "\n\n".join(m["content"] for m in messages) + "\n\nQ:", "Q:"


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds a 429/503 asks us to wait, when the server says (numeric form only)."""
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
