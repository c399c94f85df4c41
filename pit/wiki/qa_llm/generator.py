"""The client that asks an endpoint or a local model for QA pairs, concurrently and cached.

Requests to an OpenAI-compatible endpoint are retried under pit's one rule
(`pit.retry`: HTTP 429/5xx, timeouts and connection errors, with exponential
backoff honouring Retry-After); an endpoint still down after that raises
:class:`LLMUnavailableError`, which Prefect's task retries take up. Replies
are cached as soon as they arrive, so a run that fails part-way resumes where
it stopped.

An endpoint may refuse one document and not the others (HTTP 400 from a
content filter or a context too long, 413, 422). Such a document is skipped
with a warning and counted (`refused`, and `refused_docs` naming each), so
one odd article does not cost a month's build; a refusal of more than
`max_refused_share` of the documents, or of every one, still fails, since
then the endpoint or the prompt is what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Any

import httpx

from pit.errors import ConfigError
from pit.retry import TRANSIENT_STATUS, HTTPStatusFault, RetryPolicy, describe, is_transient, retry
from pit.wiki.qa_llm.cache import ReplyCache
from pit.wiki.qa_llm.config import (
    LLMDocumentRefused,
    LLMEndpointError,
    LLMQAConfig,
    LLMUnavailableError,
)
from pit.wiki.qa_llm.local import generate_local, load_local_model
from pit.wiki.qa_llm.prompt import PROMPT_VERSION, build_messages, doc_hash
from pit.wiki.qa_llm.refusals import allowed_refusals, check_refusals
from pit.wiki.qa_llm.reply import filter_pairs, parse_qa_reply

logger = logging.getLogger(__name__)

STAT_KEYS = (
    "docs",
    "empty_docs",
    "cached",
    "requested",
    "retries",
    "refused",
    "parsed_pairs",
    "malformed",
    "ungrounded",
    "no_subject",
    "answer_in_question",
    "duplicate",
    "kept",
)
"""Counts `LLMQAGenerator.generate` always reports (plus `seconds`), zero when nothing happened."""

RETRYABLE_STATUS = TRANSIENT_STATUS
"""HTTP statuses tried again (pit's one rule, `pit.retry.TRANSIENT_STATUS`)."""

REFUSED_STATUS = frozenset({400, 413, 422})
"""HTTP statuses that refuse one document (content filter, context too long): it is skipped."""


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

        refused: dict[int, str] = {}
        if todo:
            logger.info(
                "asking %s for QA on %d documents (%d cached)",
                self.config.generator_name,
                len(todo),
                stats["cached"],
            )
            if self.config.backend == "openai":
                asked = len(docs) - stats["empty_docs"]
                share = self.config.max_refused_share
                refused = self._run_remote([docs[i] for i in todo], todo, store,
                                           allowed_refusals(share, asked))
                check_refusals(self.endpoint, share, docs, refused, asked)
            else:
                self._run_local([docs[i] for i in todo], todo, store)
        stats["requested"] = len(todo)
        stats["refused"] = len(refused)
        stats["retries"] = self._retries - retries_before
        for i, key in enumerate(keys):
            if i not in replies and first_of.get(key) in replies:
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
        out["refused_docs"] = [{"page_id": docs[i]["page_id"], "title": docs[i]["title"],
                                "reason": reason} for i, reason in sorted(refused.items())]
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
        self, docs: list[dict[str, Any]], indices: list[int], store: Callable[[int, str], None],
        allowed: int,
    ) -> dict[int, str]:
        """Ask for every document concurrently; returns the refused ones' reasons by index.

        Stops sending once more than `allowed` documents were refused.
        """
        client = self._http()
        error: BaseException | None = None
        stored: set[Future[str]] = set()
        refused: dict[int, str] = {}
        doc_at = dict(zip(indices, docs, strict=True))
        with ThreadPoolExecutor(max_workers=self.config.max_concurrency) as pool:
            futures = {
                pool.submit(self._complete, client, doc): i
                for doc, i in zip(docs, indices, strict=True)
            }
            try:
                for future in as_completed(futures):
                    exc = future.exception()
                    if isinstance(exc, LLMDocumentRefused):
                        i = futures[future]
                        refused[i] = exc.reason
                        logger.warning("skipping page %s (%r): %s refused it: %s",
                                       doc_at[i]["page_id"], doc_at[i]["title"], self.endpoint,
                                       exc.reason)
                        if len(refused) > allowed:
                            for other in futures:
                                other.cancel()
                            break
                        continue
                    if exc is not None:
                        error = exc
                        for other in futures:
                            other.cancel()
                        break
                    store(futures[future], future.result())
                    stored.add(future)
            except BaseException:  # Ctrl-C: only the requests already in flight are sent
                for other in futures:
                    other.cancel()
                raise
        # Replies that arrived while the pool wound down are paid for: keep them too.
        for future, i in futures.items():
            if future in stored or future.cancelled():
                continue
            exc = future.exception()
            if exc is None:
                store(i, future.result())
            elif isinstance(exc, LLMDocumentRefused):
                refused[i] = exc.reason
        if error is not None:
            raise error
        return refused

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
        policy = RetryPolicy(c.max_retries + 1, c.backoff_initial_s, c.backoff_max_s)

        def post() -> str:
            response = client.post(self.endpoint_url, json=payload, headers=headers)
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
            if response.status_code in REFUSED_STATUS:
                raise LLMDocumentRefused(self.endpoint, last)
            if response.status_code not in RETRYABLE_STATUS:
                raise LLMEndpointError(self.endpoint, f"{last} (not retried)")
            raise HTTPStatusFault(self.endpoint, response.status_code,
                                  _retry_after(response), detail)

        def counted(exc: BaseException) -> None:
            with self._lock:
                self._retries += 1

        try:
            return retry(post, what=f"LLM endpoint {self.endpoint}", policy=policy,
                         explain=lambda e: self._scrub(describe(e)), on_retry=counted)
        except LLMEndpointError:
            raise
        except Exception as exc:
            if not is_transient(exc):
                raise
            raise LLMUnavailableError(
                self.endpoint,
                f"{self._scrub(describe(exc))}. Check that the server is up and base_url is "
                "right; replies received so far are cached, so a new run resumes.",
                attempts=policy.attempts,
            ) from None

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
            self._local = load_local_model(self.config)
        return self._local

    def _run_local(
        self, docs: list[dict[str, Any]], indices: list[int], store: Callable[[int, str], None]
    ) -> None:
        tokenizer, model = self._load_local()
        generate_local(tokenizer, model, docs, indices, store, self.config)


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds a 429/503 asks us to wait, when the server says (numeric form only)."""
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
