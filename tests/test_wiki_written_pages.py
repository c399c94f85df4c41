"""Extraction on pages outside the real fixture: credit notes, placeholders, broken links.

The pages in tests/fixtures/written-pages were written for these tests in the
style of real film articles (see the README there); each holds markup a new
user met on real pages and the dump fixture lacks.
"""

from __future__ import annotations

import bz2
import html
from pathlib import Path

from real_data import FIXTURES

from pit.wiki.infobox import parse_infobox
from pit.wiki.qa_infobox import infobox_qa
from pit.wiki.reader import scan_dump
from pit.wiki.select import PageSelector
from pit.wiki.wikitext import lead_text

PAGES = FIXTURES / "written-pages"
TITLES = {
    "the-lantern-keeper": (7001, "The Lantern Keeper"),
    "harbour-lights": (7002, "Harbour Lights"),
    "the-quiet-orchard": (7003, "The Quiet Orchard"),
}


def wikitext(name: str) -> str:
    return (PAGES / f"{name}.wiki").read_text(encoding="utf-8")


def write_dump(folder: Path) -> Path:
    """The written pages as a single-stream `pages-articles.xml.bz2`, laid out like a real one."""
    pages = []
    for name, (page_id, title) in TITLES.items():
        pages.append(
            f"  <page>\n    <title>{html.escape(title)}</title>\n    <ns>0</ns>\n"
            f"    <id>{page_id}</id>\n    <revision>\n      <id>{page_id * 10}</id>\n"
            "      <timestamp>2023-06-01T00:00:00Z</timestamp>\n"
            f'      <text bytes="1" xml:space="preserve">{html.escape(wikitext(name))}</text>\n'
            "    </revision>\n  </page>\n"
        )
    xml = '<mediawiki xml:lang="en">\n' + "".join(pages) + "</mediawiki>\n"
    path = folder / "writtenwiki-20230701-pages-articles.xml.bz2"
    path.write_bytes(bz2.compress(xml.encode("utf-8")))
    return path


def test_infobox_lists_drop_credit_notes_and_conjunctions():
    box = parse_infobox(wikitext("the-lantern-keeper"))
    assert box["starring"] == ["Tom Hale", "Rosa Vidal", "Hugo Marsh"]
    assert box["writer"] == ["Ada Brennan", "Paul Linde"]
    assert box["director"] == ["Ada Brennan", "Colm Brennan"]
    assert box["producer"] == ["Ian Roe", "Mia Fenn"]
    assert box["narrator"] == ["Orla Quinn"]
    # a place in a release date is the date's, not a credit note: it stays
    assert box["released"] == ["4 March 2023 (Glasgow)"]


def test_comma_lists_split_and_placeholders_are_not_values():
    lantern = parse_infobox(wikitext("the-lantern-keeper"))
    harbour = parse_infobox(wikitext("harbour-lights"))
    assert "music" not in lantern  # "See below"
    assert harbour["starring"] == ["Fionn Walsh", "Clare Deasy"]
    for field in ("music", "distributor", "released"):  # "Various (see below)", "TBA", "See ..."
        assert field not in harbour, harbour[field]
    assert harbour["director"] == ["Nessa Doyle"]


def test_infobox_questions_answer_with_the_bare_name():
    text = lead_text(wikitext("the-lantern-keeper"))
    doc = {
        "page_id": 7001,
        "title": "The Lantern Keeper",
        "text": text,
        "infobox": parse_infobox(wikitext("the-lantern-keeper")),
    }
    answers = {a for q in infobox_qa(doc, max_per_doc=20) for a in q["answers"]}
    assert {"Tom Hale", "Hugo Marsh", "Ada Brennan", "Mia Fenn"} <= answers
    assert not any(a.lower().startswith(("and ", "see ")) or "(" in a for a in answers)


def test_a_stray_closing_link_keeps_the_lead():
    text = lead_text(wikitext("the-lantern-keeper"))
    assert text.startswith(
        "The Lantern Keeper is a 2023 British drama film directed by Ada Brennan and "
        "Colm Brennan, written by Ada Brennan and Paul Linde."
    )
    assert "narrated by Orla Quinn" in text
    assert "]]" not in text and "[[" not in text


def test_an_unclosed_link_keeps_the_lead():
    text = lead_text(wikitext("harbour-lights"))
    assert (
        "It stars Fionn Walsh and Clare Deasy as two cousins who inherit a failing chip shop "
        "in Dún Laoghaire." in text
    )
    assert text.startswith("Harbour Lights is a 2023 Irish comedy film directed by Nessa Doyle")
    assert "The film was shot in Dublin in the summer of 2022." in text


def test_a_dump_of_these_pages_keeps_every_page_with_its_text(tmp_path):
    dump = write_dump(tmp_path)
    scan = scan_dump(str(dump), None, PageSelector(category=r"^\d{4} films$"), workers=1)
    assert scan.stats.empty == 0
    assert {r["title"] for r in scan.records} == {t for _, t in TITLES.values()}
    for r in scan.records:
        assert len(r["text"]) > 100, r["title"]
        assert r["infobox"]["director"], r["title"]
