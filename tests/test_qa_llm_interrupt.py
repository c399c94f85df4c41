"""Ctrl-C during LLM QA generation: the queued requests are never sent.

The OpenAI-compatible server of `test_wiki_qa_llm` answers slowly; Ctrl-C
(KeyboardInterrupt in the main thread, as a terminal sends it) arrives once
the first requests are in flight.
"""

from __future__ import annotations

import _thread
import threading
import time
from pathlib import Path

import pytest
from test_wiki_qa_llm import BARBIE, FakeOpenAI, _config, server  # noqa: F401

from pit.wiki.qa_llm import LLMQAGenerator


def test_ctrl_c_sends_no_queued_request(server: FakeOpenAI, tmp_path: Path) -> None:  # noqa: F811
    server.delay_s = 1.0  # all 60 would take 30 s: a busy machine still interrupts mid-way
    gen = LLMQAGenerator(_config(server.url, tmp_path, cache_dir=None, max_concurrency=2))
    docs = [{**BARBIE, "page_id": i, "text": f"{BARBIE['text']} Copy {i}."} for i in range(60)]

    def interrupt_once_in_flight() -> None:
        while server.requests < 2:
            time.sleep(0.01)
        _thread.interrupt_main()

    threading.Thread(target=interrupt_once_in_flight, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        gen.generate(docs)
    time.sleep(1.5)  # anything still queued would have reached the server by now
    assert server.requests <= 4, server.requests
