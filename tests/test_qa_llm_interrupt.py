"""Ctrl-C during LLM QA generation: the queued requests are never sent.

The OpenAI-compatible server of `test_wiki_qa_llm` answers slowly; a real
SIGINT, as a terminal sends it, reaches a separate process generating QA once
its first requests are in flight.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from test_wiki_qa_llm import FakeOpenAI, server  # noqa: F401

CHILD = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_wiki_qa_llm import BARBIE, _config
from pit.wiki.qa_llm import LLMQAGenerator

gen = LLMQAGenerator(_config({url!r}, Path({tmp!r}), cache_dir=None, max_concurrency=2))
docs = [{{**BARBIE, "page_id": i, "text": f"{{BARBIE['text']}} Copy {{i}}."}} for i in range(60)]
try:
    gen.generate(docs)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
print("finished", flush=True)
"""


def test_ctrl_c_sends_no_queued_request(server: FakeOpenAI, tmp_path: Path) -> None:  # noqa: F811
    server.delay_s = 1.0  # all 60 would take 30 s
    code = CHILD.format(tests=str(Path(__file__).parent), url=server.url, tmp=str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while server.requests < 2 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130 and "interrupted" in out, out + err
    time.sleep(1.5)  # anything still queued would have reached the server by now
    assert server.requests <= 4, server.requests
