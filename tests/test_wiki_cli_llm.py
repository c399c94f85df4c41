"""`pit data wiki` with LLM-written QA: the real dump, a real HTTP endpoint on 127.0.0.1."""

from __future__ import annotations

import json
import re

from real_data import ENWIKI_FILMS
from test_wiki_qa_llm import server  # noqa: F401  (the OpenAI-compatible test server fixture)
from typer.testing import CliRunner

from pit.cli import app

DUMP = ENWIKI_FILMS / "enwikifilms-20220801-pages-articles-multistream.xml.bz2"
INDEX = ENWIKI_FILMS / "enwikifilms-20220801-pages-articles-multistream-index.txt.bz2"


def test_wiki_cli_adds_grounded_llm_questions_to_the_infobox_ones(server, tmp_path,  # noqa: F811
                                                                  monkeypatch):
    def grounded(prompt: str) -> str:
        subject = re.search(r'article about "([^"]+)"', prompt).group(1)
        return (f"1. Who directed {subject}? Answer: Nobody Inparticular\n"
                f"2. What is {subject}? Answer: film\n"
                "this line is not a question\n")

    server.reply_for = grounded
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    out = tmp_path / "wiki"
    result = CliRunner().invoke(app, [
        "data", "wiki", "--dump", str(DUMP), "--index", str(INDEX),
        "--category", r"^\d{4} films$", "--out", str(out), "--workers", "1",
        "--llm-base-url", server.url, "--llm-model", "test-model",
        "--llm-cache", str(tmp_path / "cache"),
    ])
    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in (out / "docs.jsonl").read_text().splitlines()]
    qa = [json.loads(line) for line in (out / "qa.jsonl").read_text().splitlines()]
    llm = [q for q in qa if q["generator"] == "llm:test-model"]
    assert server.requests == len(docs)
    # the grounded question survives for every film, the ungrounded director never does
    assert {q["page_id"] for q in llm} == {d["page_id"] for d in docs}
    assert all(q["answers"] == ["film"] for q in llm)
    titles = {d["page_id"]: re.sub(r"\s*\(.*\)$", "", d["title"]) for d in docs}
    assert all(titles[q["page_id"]] in q["question"] for q in llm)
    assert any(q["generator"] != "llm:test-model" for q in qa)


def test_llm_base_url_without_a_model_is_refused_with_the_fix(tmp_path):
    result = CliRunner().invoke(app, [
        "data", "wiki", "--dump", str(DUMP), "--index", str(INDEX), "--category", "films",
        "--out", str(tmp_path / "w"), "--llm-base-url", "http://127.0.0.1:9/v1",
    ])
    assert result.exit_code != 0
    assert "--llm-model" in result.output
    assert not (tmp_path / "w").exists()


def _build(server, tmp_path, out):  # noqa: F811
    return CliRunner().invoke(app, [
        "data", "wiki", "--dump", str(DUMP), "--index", str(INDEX),
        "--category", r"^\d{4} films$", "--out", str(out), "--workers", "1",
        "--llm-base-url", server.url, "--llm-model", "test-model",
        "--llm-cache", str(tmp_path / "cache"),
    ])


def test_a_document_the_endpoint_refuses_is_left_without_llm_questions_and_counted_in_the_card(
        server, tmp_path):  # noqa: F811
    server.reply_for = lambda prompt: "Q: What is {}? A: film".format(
        re.search(r'article about "([^"]+)"', prompt).group(1))
    server.refuse = {"Taxi Driver"}
    out = tmp_path / "wiki"
    result = _build(server, tmp_path, out)
    assert result.exit_code == 0, result.output
    card = json.loads((out / "card.json").read_text())
    assert card["counts"]["llm_refused_docs"] == 1
    (refused,) = card["llm_qa"]["refused_docs"]
    assert refused["page_id"] == 30000 and refused["title"] == "Taxi Driver"
    assert "HTTP 400" in refused["reason"] and "content filter" in refused["reason"]
    docs = [json.loads(line) for line in (out / "docs.jsonl").read_text().splitlines()]
    qa = [json.loads(line) for line in (out / "qa.jsonl").read_text().splitlines()]
    assert 30000 in {d["page_id"] for d in docs}
    with_llm = {q["page_id"] for q in qa if q["generator"] == "llm:test-model"}
    assert with_llm == {d["page_id"] for d in docs} - {30000}
    assert any(q["page_id"] == 30000 for q in qa)  # its infobox questions stay


def test_an_endpoint_that_refuses_every_document_fails_the_build_and_publishes_nothing(
        server, tmp_path):  # noqa: F811
    server.refuse = {"*"}
    out = tmp_path / "wiki"
    result = _build(server, tmp_path, out)
    assert result.exit_code == 2
    assert "more than max_refused_share=0.1 allows" in result.output
    assert "--llm-max-refused-share" in result.output
    assert not out.exists()
