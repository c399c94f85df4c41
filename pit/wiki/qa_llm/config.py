"""How to reach the LLM that writes QA pairs, and the error it raises when it cannot.

The API key lives in a `SecretStr` and is only ever put into the `Authorization`
header: it never reaches a log line, a repr or an error message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from pit.errors import PitError, TransientError


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
    max_refused_share: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description=(
            "Share of the documents the endpoint may refuse (HTTP 400, 413 or 422: a content "
            "filter, a context too long) before generation fails; each refused document is "
            "skipped with a warning and counted. A refusal of every document always fails."
        ),
    )
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


class LLMUnavailableError(LLMEndpointError, TransientError):
    """The LLM endpoint was down or overloaded through every retry: worth trying again later.

    Prefect's task retries take it up; cached replies make the next try
    resume where this one stopped.
    """


class LLMDocumentRefused(LLMEndpointError):
    """The endpoint refused one document (HTTP 400, 413, 422), not the whole job.

    Not retried: the same document gets the same answer. The generator skips
    the document and counts it, up to `LLMQAConfig.max_refused_share`.
    """

    def __init__(self, endpoint: str, reason: str) -> None:
        self.reason = reason
        super().__init__(endpoint, f"{reason} (the document was refused; not retried)")
