"""`pit data wiki` end to end on the real dump: output contract, data set, delta, CLI."""

from __future__ import annotations

import bz2
import json
import re
from pathlib import Path

import pytest
import typer
from real_data import ENWIKI_FILMS
from typer.testing import CliRunner

from pit.data.dataset import DOC_COLUMNS, QA_COLUMNS, KnowledgeDataset
from pit.errors import ConfigError
from pit.storage import Store
from pit.wiki.build import WikiBuildConfig, build_wiki_dataset, split_of
from pit.wiki.cli import wiki

FIXTURE = ENWIKI_FILMS
DUMP = FIXTURE / "enwikifilms-20220801-pages-articles-multistream.xml.bz2"
INDEX = FIXTURE / "enwikifilms-20220801-pages-articles-multistream-index.txt.bz2"


def config(out: Path, **kw) -> WikiBuildConfig:
    kw.setdefault("workers", 1)
    kw.setdefault("category", r"^\d{4} films$")
    return WikiBuildConfig(dump=str(DUMP), index=str(INDEX), out=str(out), **kw)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("wiki") / "films"
    return out, build_wiki_dataset(config(out))


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_output_contract(built):
    out, card = built
    assert sorted(p.name for p in out.iterdir()) == [
        "MANIFEST.json",
        "card.json",
        "docs",
        "docs.jsonl",
        "qa",
        "qa.jsonl",
    ]
    docs, qa = _jsonl(out / "docs.jsonl"), _jsonl(out / "qa.jsonl")
    assert len(docs) == 31 and card["counts"]["docs"] == 31
    for d in docs:
        assert {"page_id", "title", "revision_id", "categories", "text", "infobox"} <= set(d)
        assert isinstance(d["infobox"]["director"], list)
    assert len(qa) == card["counts"]["qa"] > 31 * 4
    assert set(qa[0]) == {"page_id", "question", "answers", "generator"}
    assert card["dump_date"] == "20220801"
    assert card["counts"]["pages"] == 45
    assert card["timings"]["scan_s"] > 0
    published = Store(str(out.parent)).read_manifest(out.name)
    assert published["fingerprint"] == card["fingerprint"]
    assert {"docs.jsonl", "qa.jsonl", "card.json"} <= set(published["files"])
    assert any(f.startswith("docs/") for f in published["files"])
    on_disk = json.loads((out / "card.json").read_text())
    assert on_disk == json.loads(json.dumps(card))
    by_split = on_disk["counts"]["docs_by_domain_split"]
    assert set(by_split) == {"films/train", "films/test"} and sum(by_split.values()) == 31
    assert on_disk["stats"]["films/test/docs"] == by_split["films/test"]
    assert on_disk["meta"]["dump_date"] == on_disk["dump_date"] == "20220801"
    assert on_disk["timings"]["total_s"] >= on_disk["timings"]["scan_s"] > 0


def test_knowledge_dataset_splits_films_by_page_id_hash(built):
    out, card = built
    ds = KnowledgeDataset.load(out)
    assert ds.fingerprint == card["fingerprint"]
    assert set(DOC_COLUMNS) <= set(ds.docs[0]) and set(QA_COLUMNS) <= set(ds.qa[0])
    splits = {d["entity_id"]: d["split"] for d in ds.docs}
    assert set(splits.values()) == {"train", "test"}
    for d in ds.docs:
        assert d["split"] == split_of(int(d["entity_id"]), "films", "films", 0.13)
        assert d["source"]["dump_date"] == "20220801"
    assert all(q["split"] == splits[q["entity_id"]] for q in ds.qa)
    assert split_of(1, "other", "films", 0.99) == "train"


def test_same_dump_same_fingerprint_and_delta_finds_changed_revisions(built, tmp_path):
    out, card = built
    again = build_wiki_dataset(
        config(tmp_path / "again", workers=2, chunk_mb=0.01)
    )
    assert again["fingerprint"] == card["fingerprint"]
    # The previous snapshot lacked Taxi Driver and had an older revision of Cars 2.
    prev = tmp_path / "prev"
    prev.mkdir()
    rows = []
    for d in _jsonl(out / "docs.jsonl"):
        if d["title"] == "Taxi Driver":
            continue
        if d["title"] == "Cars 2":
            d["revision_id"] -= 1
        rows.append(d)
    rows.append({**rows[0], "page_id": 999999999, "title": "Gone"})
    (prev / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = build_wiki_dataset(config(tmp_path / "next", previous=str(prev)))
    delta = json.loads((tmp_path / "next" / "delta.json").read_text())
    assert delta == {"new": [30000], "changed": [16839388], "removed": [999999999]}
    assert m["delta"] == {"new": 1, "changed": 1, "removed": 1}


def test_old_category_pages_are_the_old_split_of_the_test_domain(tmp_path):
    out = tmp_path / "o"
    card = build_wiki_dataset(config(out, category=r"^1982 films$", old_category=r"^1980 films$"))
    ds = KnowledgeDataset.load(out)
    old = ds.docs_where("old")
    assert {d["title"] for d in old} == {
        "The Empire Strikes Back",
        "Dadar Kirti",
        "Aayiram Vaasal Idhayam",  # 1980 only through {{Film date|1980|...}}
    }
    assert {d["domain"] for d in old} == {"films"}
    assert {q["entity_id"] for q in ds.qa_where("old")} == {d["entity_id"] for d in old}
    # Health is in "1980 films" and (by its {{Film date}}) "1982 films": new wins.
    new = [d for d in ds.docs if d["split"] != "old"]
    assert {d["title"] for d in new} == {"48 Hrs.", "Himala", "Health (film)"}
    for d in new:
        assert d["split"] == split_of(int(d["entity_id"]), "films", "films", 0.13)
    assert card["counts"]["in_both_categories"] == 1
    assert card["in_both_categories"] == ["Health (film)"]
    assert card["counts"]["docs_by_domain_split"]["films/old"] == 3
    rows = {d["title"]: d for d in _jsonl(out / "docs.jsonl")}
    assert rows["Health (film)"]["selected_by"] == ["category", "old_category"]
    assert rows["Dadar Kirti"]["split"] == "old"


def test_categorylinks_decide_old_and_new_in_one_pass(tmp_path):
    # Taxi Driver listed under an old year, Cars 2 under an old and a new one.
    table = tmp_path / "enwikifilms-20220801-categorylinks.sql"
    table.write_text(
        "INSERT INTO `categorylinks` VALUES (30000,'1976_films','TAXI','2022-01-01','','x','page'),"
        "(16839388,'2011_films','CARS','2022-01-01','','x','page'),"
        "(16839388,'2023_films','CARS','2022-01-01','','x','page'),"
        "(26008898,'2023_films','X','2022-01-01','','x','page');\n"
    )
    cfg = config(
        tmp_path / "o",
        category=r"^2023 films$",
        old_category=r"^(19\d\d|2011) films$",
        categorylinks=str(table),
    )
    card = build_wiki_dataset(cfg)
    splits = {d["title"]: d["split"] for d in _jsonl(tmp_path / "o" / "docs.jsonl")}
    assert set(splits) == {"Taxi Driver", "Cars 2", "Ra.One"}
    assert splits["Taxi Driver"] == "old"
    assert splits["Cars 2"] in {"train", "test"} and splits["Ra.One"] in {"train", "test"}
    assert card["counts"]["in_both_categories"] == 1
    assert card["counts"]["streams"] == 2  # old and new pages' streams only


def test_old_category_problems_are_reported_up_front(tmp_path):
    cfg = config(tmp_path / "o", old_category="^(", test_domain="tv")
    same = config(tmp_path / "o", old_category=r"^\d{4} films$")
    with pytest.raises(ConfigError) as err:
        build_wiki_dataset(cfg)
    text = str(err.value)
    assert "old_category regex" in text and "test_domain 'tv'" in text and "--domain" in text
    with pytest.raises(ConfigError, match="earlier years"):
        build_wiki_dataset(same)
    assert not (tmp_path / "o").exists()


def test_plugged_qa_generator_adds_pairs(tmp_path):
    def one_question(doc):
        return [{"question": f"What is {doc['title']}?", "answers": ["a film"], "generator": "t"}]

    m = build_wiki_dataset(config(tmp_path / "o"), qa_generator=one_question)
    qa = _jsonl(tmp_path / "o" / "qa.jsonl")
    assert sum(q["generator"] == "t" for q in qa) == 31
    assert m["counts"]["qa"] == len(qa)


def test_config_reports_every_problem_at_once(tmp_path):
    cfg = WikiBuildConfig(
        dump="/no/such.xml.bz2", category="(", out=str(tmp_path), test_fraction=1.5, workers=0
    )
    with pytest.raises(ConfigError) as err:
        build_wiki_dataset(cfg)
    assert len(err.value.problems) == 4


def test_cli_builds_and_reports_bad_options(tmp_path):
    app = typer.Typer()
    app.command("wiki")(wiki)
    app.command("noop")(lambda: None)
    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(
        app,
        [
            "wiki",
            "--dump",
            str(DUMP),
            "--index",
            str(INDEX),
            "--category",
            r"^19[89]\d films$",
            "--out",
            str(out),
            "--workers",
            "2",
            "--domain",
            "films=films$",
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index("{") :])
    docs = _jsonl(out / "docs.jsonl")
    assert summary["counts"]["docs"] == len(docs) > 5
    assert all(re.search(r"19[89]\d films", " ".join(d["categories"])) for d in docs)
    bad = runner.invoke(
        app,
        [
            "wiki",
            "--dump",
            str(DUMP),
            "--category",
            "(",
            "--out",
            str(tmp_path / "x"),
            "--on-error",
            "ignore",
        ],
    )
    assert bad.exit_code == 2
    assert "on_error" in bad.output
    assert not (tmp_path / "x").exists()


def test_single_stream_dump_builds_the_same_documents(built, tmp_path):
    out, _ = built
    single = tmp_path / "enwikisingle-20220801-pages-articles.xml.bz2"
    single.write_bytes(bz2.compress(bz2.decompress(DUMP.read_bytes())))
    cfg = WikiBuildConfig(
        dump=str(single),
        category=r"^\d{4} films$",
        out=str(tmp_path / "s"),
        workers=4,
    )
    m = build_wiki_dataset(cfg)
    assert m["timings"]["workers"] == 1
    a = [(d["page_id"], d["text"]) for d in _jsonl(out / "docs.jsonl")]
    b = [(d["page_id"], d["text"]) for d in _jsonl(tmp_path / "s" / "docs.jsonl")]
    assert a == b


def test_a_category_no_page_is_in_fails_naming_it_and_publishes_nothing(tmp_path):
    from pit.errors import DataError

    out = tmp_path / "none"
    with pytest.raises(DataError, match=r"category matching --category '\^1850 films\$'"):
        build_wiki_dataset(config(out, category="^1850 films$"))
    assert not out.exists()
