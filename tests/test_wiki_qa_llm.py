"""LLM-written QA: a real HTTP exchange with an OpenAI-compatible server run here.

The server is a stdlib `http.server` on 127.0.0.1 that speaks just enough of
`POST /v1/chat/completions`: it answers each document with a scripted reply
(malformed lines, ungrounded answers, questions without the subject, a
duplicate), can fail the next requests with chosen status codes, counts
requests and records the Authorization headers it saw.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pit.errors import ConfigError, ModelNotFoundError, PitError
from pit.wiki.qa_llm import (
    LLMEndpointError,
    LLMQAConfig,
    LLMQAGenerator,
    normalize_text,
    parse_qa_reply,
    subject_of,
)

OPPENHEIMER = {
    "page_id": 101,
    "title": "Oppenheimer (film)",
    "text": (
        "Oppenheimer is a 2023 epic biographical thriller film written and directed by "
        "Christopher Nolan. It stars Cillian Murphy as J. Robert Oppenheimer, the American "
        'theoretical physicist credited with being the "father of the atomic bomb". '
        "The film premiered at Le Grand Rex in Paris on July 11, 2023, and was released in "
        "the United States by Universal Pictures on July 21, 2023."
    ),
}
BARBIE = {
    "page_id": 202,
    "title": "Barbie (film)",
    "text": (
        "Barbie is a 2023 fantasy comedy film directed by Greta Gerwig from a screenplay she "
        "wrote with Noah Baumbach. It stars Margot Robbie as Barbie and Ryan Gosling as Ken. "
        "The film was released by Warner Bros. Pictures on July 21, 2023."
    ),
}

REPLIES = {
    "Oppenheimer": """Sure! Here are five questions about Oppenheimer:

1. Q: Who directed Oppenheimer?
   A: Christopher Nolan.
2. Q: Who plays J. Robert Oppenheimer in Oppenheimer?
   A: Cillian Murphy
3. Q: Where did Oppenheimer premiere?
   A: Le Grand Rex in Paris
4. Q: What was the budget of Oppenheimer?
   A: $100 million
5. Q: Who composed the score?
   A: Ludwig Goransson
Q: Who directed Oppenheimer?
A: Christopher Nolan
A: an answer without a question
Q: Which studio released Oppenheimer in the United States?
### this line is garbage
Question: When was Oppenheimer released in the United States? Answer: July 21, 2023
""",
    "Barbie": json.dumps(
        [
            {"question": "Who directed Barbie?", "answer": "Greta Gerwig"},
            {"question": "Who plays Ken in Barbie?", "answers": ["Ryan Gosling", "Tom Hanks"]},
            {"question": "Who co-wrote the screenplay of Barbie?", "answer": "Noah Baumbach"},
            {"question": "Who is the star?", "answer": "Margot Robbie"},
            {"question": "What genre is Barbie?", "answer": "horror"},
            {"question": "missing its answer"},
        ]
    ),
}


class FakeOpenAI:
    """State shared by the request handlers: scripted failures, counters, what was seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.auth_headers: list[str | None] = []
        self.fail_with: list[int] = []
        self.delay_s = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.bodies: list[dict[str, Any]] = []
        self.url = ""
        # Subjects ("*": all) answered with HTTP 400, as a content filter does.
        self.refuse: set[str] = set()

    def reply_for(self, prompt: str) -> str:
        for subject, reply in REPLIES.items():
            if f'article about "{subject}"' in prompt:
                return reply
        return "Q: Nothing here?\nA: nothing"


def _make_handler(state: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
            pass

        def _send(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.requests += 1
                state.auth_headers.append(self.headers.get("Authorization"))
                state.bodies.append(body)
                status = state.fail_with.pop(0) if state.fail_with else 200
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            try:
                time.sleep(state.delay_s)
                prompt = body["messages"][-1]["content"]
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}}, {})
                elif "*" in state.refuse or any(f'article about "{s}"' in prompt
                                                for s in state.refuse):
                    self._send(400, {"error": {"message": "content filter triggered",
                                               "code": "content_filter"}}, {})
                elif status == 429:
                    self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
                elif status != 200:
                    self._send(status, {"error": {"message": "temporarily unavailable"}}, {})
                else:
                    message = {"role": "assistant", "content": state.reply_for(prompt)}
                    choice = {"index": 0, "message": message, "finish_reason": "stop"}
                    self._send(200, {"object": "chat.completion", "choices": [choice]}, {})
            finally:
                with state.lock:
                    state.in_flight -= 1

    return Handler


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    state = FakeOpenAI()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def _config(base_url: str, tmp_path: Path, **overrides: Any) -> LLMQAConfig:
    values: dict[str, Any] = {
        "base_url": base_url,
        "model": "test-model",
        "api_key_env": None,
        "cache_dir": tmp_path / "cache",
        "max_retries": 3,
        "backoff_initial_s": 0.001,
        "backoff_max_s": 0.01,
        "timeout_s": 5.0,
    }
    values.update(overrides)
    return LLMQAConfig(**values)


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# --------------------------------------------------------------------------- parsing


def test_normalisation_matches_the_evaluation_rule() -> None:
    assert normalize_text("  The  Grand-Rex, in PARIS! ") == "grand rex in paris"
    assert normalize_text("A “quoted” answer.") == "quoted answer"
    assert subject_of({"title": "Barbie (2023 film)"}) == "Barbie"
    assert subject_of({"title": "Oppenheimer"}) == "Oppenheimer"


def test_parser_reads_every_usual_format_and_counts_malformed_lines() -> None:
    numbered = parse_qa_reply(
        "Here you go:\n1. Who directed X? Jane Doe\n2) Where is X set? - Paris, Texas\n"
        "- **Q:** When was X released?\n  **A:** 2023\nQ: left without answer\n"
    )
    assert numbered.pairs == [
        ("Who directed X?", ["Jane Doe"]),
        ("Where is X set?", ["Paris, Texas"]),
        ("When was X released?", ["2023"]),
    ]
    assert numbered.malformed == 2  # the preamble and the dangling question

    labelled = parse_qa_reply(
        "Question 1: Who stars in X?\nAnswer 1: Ann Lee; Bo Chen\n"
        "Question: Who scored X? Answer: Max Roe\nAnswer: orphan\n"
    )
    assert labelled.pairs == [
        ("Who stars in X?", ["Ann Lee", "Bo Chen"]),
        ("Who scored X?", ["Max Roe"]),
    ]
    assert labelled.malformed == 1

    fenced = parse_qa_reply(
        '```json\n[{"question": "Who made X?", "answers": ["Y", "Z"]}, {"q": "no answer"}, 3]\n```'
    )
    assert fenced.pairs == [("Who made X?", ["Y", "Z"])]
    assert fenced.malformed == 2
    wrapped = parse_qa_reply('{"qa": [{"Question": "Who made X?", "Answer": "Y"}]}')
    assert wrapped.pairs == [("Who made X?", ["Y"])]
    assert parse_qa_reply("").pairs == []


# --------------------------------------------------------------------------- HTTP


def test_real_http_exchange_filters_replies_and_retries_a_503(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    server.fail_with = [503]
    cfg = _config(server.url, tmp_path, api_key="sk-test-123", max_concurrency=1)
    with LLMQAGenerator(cfg) as gen:
        records, stats = gen.generate([OPPENHEIMER, BARBIE])

    assert server.requests == 3  # one 503, then one per document
    assert stats["retries"] == 1
    assert server.auth_headers == ["Bearer sk-test-123"] * 3
    assert server.bodies[-1]["model"] == "test-model"
    assert "Oppenheimer" in server.bodies[0]["messages"][-1]["content"]

    got = [(r["page_id"], r["question"], r["answers"]) for r in records]
    assert got == [
        (101, "Who directed Oppenheimer?", ["Christopher Nolan"]),
        (101, "Who plays J. Robert Oppenheimer in Oppenheimer?", ["Cillian Murphy"]),
        (101, "Where did Oppenheimer premiere?", ["Le Grand Rex in Paris"]),
        (101, "When was Oppenheimer released in the United States?", ["July 21, 2023"]),
        (202, "Who directed Barbie?", ["Greta Gerwig"]),
        (202, "Who plays Ken in Barbie?", ["Ryan Gosling"]),  # "Tom Hanks" is not in the text
        (202, "Who co-wrote the screenplay of Barbie?", ["Noah Baumbach"]),
    ]
    assert {r["generator"] for r in records} == {"llm:test-model"}
    assert set(records[0]) == {"page_id", "question", "answers", "generator"}
    assert stats["docs"] == 2 and stats["requested"] == 2 and stats["cached"] == 0
    assert stats["kept"] == 7
    assert stats["ungrounded"] == 3  # $100 million, Ludwig Goransson, horror
    assert stats["no_subject"] == 1  # "Who is the star?"
    assert stats["duplicate"] == 1
    # preamble, orphan answer, question without answer, garbage line, JSON item without answer
    assert stats["malformed"] == 5


def test_second_run_is_served_from_the_cache(server: FakeOpenAI, tmp_path: Path) -> None:
    cfg = _config(server.url, tmp_path)
    first, stats1 = LLMQAGenerator(cfg).generate([OPPENHEIMER, BARBIE])
    assert server.requests == 2 and stats1["cached"] == 0

    second, stats2 = LLMQAGenerator(cfg).generate([OPPENHEIMER, BARBIE])
    assert server.requests == 2  # nothing sent
    assert stats2["cached"] == 2 and stats2["requested"] == 0
    assert second == first

    # An edited document, or another model, is asked again; the unchanged one is not.
    edited = {**BARBIE, "text": BARBIE["text"] + " It grossed $1.4 billion."}
    _, stats3 = LLMQAGenerator(cfg).generate([OPPENHEIMER, edited])
    assert server.requests == 3 and stats3["cached"] == 1
    other = cfg.model_copy(update={"model": "other-model"})
    LLMQAGenerator(other).generate([OPPENHEIMER])
    assert server.requests == 4

    # A document given twice is asked once; an empty one is never sent.
    uncached = cfg.model_copy(update={"cache_dir": None})
    empty = {"page_id": 9, "title": "Nothing", "text": "  "}
    records, stats = LLMQAGenerator(uncached).generate([BARBIE, empty, BARBIE])
    assert server.requests == 5 and stats["requested"] == 1 and stats["empty_docs"] == 1
    assert [r["page_id"] for r in records] == [202] * 6


def test_one_document_call_and_concurrency_limit(server: FakeOpenAI, tmp_path: Path) -> None:
    gen = LLMQAGenerator(_config(server.url, tmp_path, cache_dir=None, max_concurrency=3))
    one = gen(OPPENHEIMER)
    assert [r["question"] for r in one][:1] == ["Who directed Oppenheimer?"]

    server.delay_s = 0.1
    docs = [{**BARBIE, "page_id": i, "text": f"{BARBIE['text']} Copy {i}."} for i in range(9)]
    records, stats = gen.generate(docs)
    assert stats["requested"] == 9 and len(records) == 27
    assert 2 <= server.max_in_flight <= 3
    assert [r["page_id"] for r in records] == sorted(r["page_id"] for r in records)


def test_429_with_retry_after_and_5xx_are_retried(server: FakeOpenAI, tmp_path: Path) -> None:
    server.fail_with = [429, 502, 500]
    records, stats = LLMQAGenerator(_config(server.url, tmp_path)).generate([BARBIE])
    assert stats["retries"] == 3 and server.requests == 4 and len(records) == 3


def test_server_that_keeps_failing_gives_a_clear_error(server: FakeOpenAI, tmp_path: Path) -> None:
    server.fail_with = [503] * 10
    gen = LLMQAGenerator(_config(server.url, tmp_path, max_retries=2))
    with pytest.raises(LLMEndpointError) as info:
        gen.generate([OPPENHEIMER])
    assert server.requests == 3  # the first try and two retries
    message = str(info.value)
    assert f"{server.url}/chat/completions" in message
    assert "3 attempts" in message and "HTTP 503" in message
    assert isinstance(info.value, PitError)
    assert not list((tmp_path / "cache").rglob("*.json"))  # nothing cached for a failure


def test_dead_endpoint_fails_after_retries_naming_it(tmp_path: Path) -> None:
    url = _dead_url()
    gen = LLMQAGenerator(_config(url, tmp_path, max_retries=2))
    started = time.monotonic()
    with pytest.raises(LLMEndpointError) as info:
        gen.generate([OPPENHEIMER, BARBIE])
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert url in message and "3 attempts" in message and "ConnectError" in message


def _films(n: int) -> list[dict[str, Any]]:
    """`n` distinct documents, each about a film of its own name."""
    return [{"page_id": 1000 + i, "title": f"Film{i} (film)",
             "text": f"Film{i} is a 2023 film directed by Ann Lee{i}."} for i in range(n)]


def test_a_document_the_endpoint_refuses_is_skipped_with_a_warning_and_counted(
    server: FakeOpenAI, tmp_path: Path, caplog: Any
) -> None:
    server.reply_for = lambda prompt: "Q: Who directed {}? A: Ann Lee{}".format(
        *re.search(r'article about "(Film(\d+))"', prompt).groups())
    server.refuse = {"Film3"}
    docs = _films(10)
    with caplog.at_level(logging.WARNING):
        records, stats = LLMQAGenerator(_config(server.url, tmp_path)).generate(docs)
    assert stats["refused"] == 1 and stats["requested"] == 10
    assert stats["refused_docs"] == [{"page_id": 1003, "title": "Film3 (film)",
                                      "reason": "HTTP 400: " + json.dumps(
                                          {"error": {"message": "content filter triggered",
                                                     "code": "content_filter"}})}]
    assert server.requests == 10  # the refusal is not retried
    assert sorted({r["page_id"] for r in records}) == [1000 + i for i in range(10) if i != 3]
    assert "skipping page 1003 ('Film3 (film)')" in caplog.text
    assert "content filter triggered" in caplog.text


def test_refusing_more_than_the_allowed_share_or_every_document_fails(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    docs = _films(10)
    server.refuse = {"Film1", "Film2"}
    with pytest.raises(LLMEndpointError, match=r"refused 2 of 10 documents, more than "
                                               r"max_refused_share=0\.1 allows.*page 1001"):
        LLMQAGenerator(_config(server.url, tmp_path)).generate(docs)
    # The other replies were cached: with a larger share, only the refused two are asked again.
    before = server.requests
    _, stats = LLMQAGenerator(_config(server.url, tmp_path, max_refused_share=0.2)).generate(docs)
    assert stats["refused"] == 2 and stats["cached"] == 8 and server.requests == before + 2

    server.refuse = {f"Film{i}" for i in range(10)}
    server.requests = 0
    everything = _config(server.url, tmp_path, cache_dir=None, max_refused_share=1.0,
                         max_concurrency=1)
    with pytest.raises(LLMEndpointError, match="refused 10 of 10 documents"):
        LLMQAGenerator(everything).generate(docs)
    few = _config(server.url, tmp_path, cache_dir=None, max_concurrency=1)
    server.requests = 0
    with pytest.raises(LLMEndpointError, match="refused [23] of 10"):
        LLMQAGenerator(few).generate(docs)
    # It stopped asking once the share was exceeded (a request already under way finishes).
    assert server.requests <= 3


def test_rejected_key_is_not_retried(server: FakeOpenAI, tmp_path: Path) -> None:
    server.fail_with = [401]
    gen = LLMQAGenerator(_config(server.url, tmp_path, api_key_env="PIT_TEST_NO_SUCH_VAR"))
    with pytest.raises(LLMEndpointError, match="HTTP 401.*PIT_TEST_NO_SUCH_VAR"):
        gen.generate([OPPENHEIMER])
    assert server.requests == 1


def test_api_key_goes_in_the_header_and_nowhere_else(
    server: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    secret = "sk-very-secret-4242"
    monkeypatch.setenv("PIT_TEST_LLM_KEY", secret)
    caplog.set_level(logging.DEBUG)  # httpx and httpcore too

    server.fail_with = [503]
    cfg = _config(server.url, tmp_path, api_key_env="PIT_TEST_LLM_KEY")
    gen = LLMQAGenerator(cfg)
    gen.generate([OPPENHEIMER])
    assert server.auth_headers == [f"Bearer {secret}"] * 2

    down = LLMQAGenerator(cfg.model_copy(update={"base_url": _dead_url(), "cache_dir": None}))
    with pytest.raises(LLMEndpointError) as info:
        down.generate([BARBIE])

    explicit = _config(server.url, tmp_path, api_key=secret)
    exc_text = "".join(traceback.format_exception(info.value))
    for text in (
        caplog.text,
        exc_text,
        repr(info.value),
        repr(cfg),
        repr(explicit),
        str(explicit),
        explicit.model_dump_json(),
        repr(gen),
        repr(down),
    ):
        assert secret not in text
    assert "retry" in caplog.text  # the retries were logged, without the key
    assert cfg.resolved_api_key() is not None
    assert explicit.resolved_api_key().get_secret_value() == secret  # type: ignore[union-attr]


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="base_url"):
        LLMQAConfig(base_url="127.0.0.1:8000/v1")
    with pytest.raises(ConfigError, match="model_name_or_path"):
        LLMQAGenerator(LLMQAConfig(backend="transformers"))
    with pytest.raises(ValueError, match="extra"):
        LLMQAConfig(api_keys="typo")  # type: ignore[call-arg]
    assert "api_key" in LLMQAConfig.model_fields
    assert all(f.description for f in LLMQAConfig.model_fields.values())


# --------------------------------------------------------------------------- local model


def _tiny_local_model(root: Path) -> Path:
    """A random-weight Llama and a word-level tokenizer, built here (no downloads)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [OPPENHEIMER["text"], BARBIE["text"], "Q: Who directed it? A: someone"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<s>", "</s>"])
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
    )
    path = root / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def test_local_transformers_model_runs_greedily_and_caches(tmp_path: Path) -> None:
    path = _tiny_local_model(tmp_path)
    cfg = LLMQAConfig(
        backend="transformers",
        model_name_or_path=str(path),
        device="cpu",
        max_tokens=12,
        local_batch_size=2,
        cache_dir=tmp_path / "cache",
    )
    docs = [OPPENHEIMER, BARBIE, {**BARBIE, "page_id": 303, "text": "Short text about Barbie."}]
    gen = LLMQAGenerator(cfg)
    records, stats = gen.generate(docs)
    assert stats["docs"] == 3 and stats["requested"] == 3
    assert all(r["generator"] == f"llm:{path}" for r in records)
    assert all(r["page_id"] in {101, 202, 303} for r in records)
    # Greedy decoding is deterministic, and every reply is cached: a new generator
    # answers from disk without loading the model.
    fresh = LLMQAGenerator(cfg)
    again, stats2 = fresh.generate(docs)
    assert again == records and stats2["cached"] == 3 and stats2["requested"] == 0
    assert fresh._local is None


def test_local_model_folder_with_only_pickled_weights_is_refused_with_the_fix(
        tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    path = _tiny_local_model(tmp_path)
    torch.save(load_file(path / "model.safetensors"), path / "pytorch_model.bin")
    (path / "model.safetensors").unlink()
    gen = LLMQAGenerator(LLMQAConfig(backend="transformers", model_name_or_path=str(path),
                                     device="cpu", cache_dir=tmp_path / "cache"))
    with pytest.raises(ModelNotFoundError) as e:
        gen.generate([OPPENHEIMER])
    message = str(e.value)
    assert str(path) in message and "convert it to safetensors" in message
    assert gen._local is None
