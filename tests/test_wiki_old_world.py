"""`pit data wiki` with new-year and old-year categories on the fixture dump, as users run it.

The fixture's films span 1938 to 2018: films of the 1980s and later are the new
knowledge (train and test), earlier ones the old world a pretrained model is
taken to know. The dump is read here with nothing but bz2 and regexes to say
which page is in which year's category, independently of `pit.wiki.select`.
"""

from __future__ import annotations

import bz2
import html
import json
import re
from pathlib import Path

import pytest
from real_data import ENWIKI_FILMS
from typer.testing import CliRunner

from pit.cli import app
from pit.data.dataset import SPLITS, KnowledgeDataset
from pit.errors import DataError
from pit.storage import Store

DUMP = ENWIKI_FILMS / "enwikifilms-20220801-pages-articles-multistream.xml.bz2"
INDEX = ENWIKI_FILMS / "enwikifilms-20220801-pages-articles-multistream-index.txt.bz2"
NEW = r"^(19[89]\d|20\d\d) films$"
OLD = r"^19[0-7]\d films$"
LAYOUT = {"MANIFEST.json", "card.json", "docs", "docs.jsonl", "qa", "qa.jsonl"}


def year_categories() -> dict[str, set[str]]:
    """title -> the `YYYY films` categories of each page: its category links and its
    `{{Film date}}`'s first year (the category that template adds)."""
    text = html.unescape(bz2.decompress(DUMP.read_bytes()).decode("utf-8"))
    out = {}
    for page in re.findall(r"<page>.*?</page>", text, re.S):
        title = re.search(r"<title>(.*?)</title>", page).group(1)
        cats = set(re.findall(r"\[\[\s*Category\s*:\s*(\d{4} films)\s*[\]|]", page))
        for args in re.findall(r"\{\{\s*[Ff]ilm date\s*\|([^}]*)", page):
            years = [a.strip() for a in args.split("|") if "=" not in a]
            if years and re.fullmatch(r"\d{4}", years[0]):
                cats.add(f"{years[0]} films")
        out[title] = cats
    return out


def in_category(cats: set[str], pattern: str) -> bool:
    return any(re.search(pattern, c) for c in cats)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wiki") / "films"
    result = CliRunner().invoke(
        app,
        [
            "data", "wiki", "--dump", str(DUMP), "--index", str(INDEX),
            "--category", NEW, "--old-category", OLD, "--out", str(out), "--workers", "1",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_the_data_set_is_published_at_the_root_of_out(built):
    assert {p.name for p in built.iterdir()} == LAYOUT
    store = Store(str(built.parent))
    assert store.problems(built.name, hashes=True) == []
    listed = set(store.read_manifest(built.name)["files"])
    assert {"card.json", "docs.jsonl", "qa.jsonl"} <= listed
    assert any(f.startswith("docs/") for f in listed) and any(f.startswith("qa/") for f in listed)
    card = json.loads((built / "card.json").read_text())
    assert card["dump_date"] == card["meta"]["dump_date"] == "20220801"
    by_split = card["counts"]["docs_by_domain_split"]
    assert set(by_split) == {"films/old", "films/train", "films/test"}
    assert by_split["films/old"] == card["stats"]["films/old/docs"]
    assert card["timings"]["total_s"] > 0
    doc = json.loads((built / "docs.jsonl").read_text().splitlines()[0])
    assert {"page_id", "title", "revision_id", "categories", "text", "infobox"} <= set(doc)
    qa = json.loads((built / "qa.jsonl").read_text().splitlines()[0])
    assert set(qa) == {"page_id", "question", "answers", "generator"}


def test_load_gives_old_train_and_test_documents_with_infobox_qa(built):
    ds = KnowledgeDataset.load(built)
    assert ds.fingerprint == json.loads((built / "card.json").read_text())["fingerprint"]
    for split in SPLITS:
        docs, qa = ds.docs_where(split, "films"), ds.qa_where(split, "films")
        assert docs and qa, split
        assert {q["generator"] for q in qa} == {"infobox"}
        assert {q["entity_id"] for q in qa} <= {d["entity_id"] for d in docs}


def test_old_pages_are_exactly_those_of_the_old_categories(built):
    cats = year_categories()
    new = {t for t, c in cats.items() if in_category(c, NEW)}
    old = {t for t, c in cats.items() if in_category(c, OLD) and not in_category(c, NEW)}
    assert len(old) == 11 and len(new) == 20
    ds = KnowledgeDataset.load(built)
    assert {d["title"] for d in ds.docs_where("old")} == old
    assert {d["title"] for d in ds.docs if d["split"] in ("train", "test")} == new


def test_synth_and_wiki_publish_one_layout(built, tmp_path):
    out = tmp_path / "synth"
    result = CliRunner().invoke(app, ["data", "synth", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == LAYOUT
    ds = KnowledgeDataset.load(out)
    assert all(ds.docs_where(split) for split in SPLITS)


def test_an_output_of_the_older_layout_is_refused_with_the_fix(tmp_path):
    (tmp_path / "old" / "dataset" / "docs").mkdir(parents=True)
    (tmp_path / "old" / "dataset" / "qa").mkdir()
    with pytest.raises(DataError, match="dataset/.*build it again"):
        KnowledgeDataset.load(tmp_path / "old")
