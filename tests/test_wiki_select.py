"""Page selection and reading on the real dump fixture in tests/fixtures (45 pages, 31 films)."""

from __future__ import annotations

import bz2
import html
import re

import pytest
from real_data import ENWIKI_FILMS

from pit.errors import DataError
from pit.wiki.reader import plan_chunks, read_index, scan_dump
from pit.wiki.select import (
    PageSelector,
    iter_categorylinks,
    page_categories,
    page_ids_from_categorylinks,
)

FIXTURE = ENWIKI_FILMS
DUMP = FIXTURE / "enwikifilms-20220801-pages-articles-multistream.xml.bz2"
INDEX = FIXTURE / "enwikifilms-20220801-pages-articles-multistream-index.txt.bz2"
YEAR_FILMS = r"^\d{4} films$"


def raw_pages() -> dict[str, str]:
    """title -> raw <page> XML, read with nothing but bz2 and a regex (the test's own truth)."""
    data = bz2.decompress(DUMP.read_bytes()).decode("utf-8")
    pages = re.findall(r"<page>.*?</page>", data, re.S)
    return {html.unescape(re.search(r"<title>(.*?)</title>", p).group(1)): p for p in pages}


def film_titles() -> set[str]:
    """Pages whose lead carries an {{Infobox film}}: the films of the fixture.

    The franchise page "Final Destination" has one too, but in its "Films"
    section, describing one of its films; the page is not about a film.
    """
    out = set()
    for title, page in raw_pages().items():
        lead = html.unescape(page).split("\n==", 1)[0]
        if re.search(r"\{\{\s*[Ii]nfobox film\s*\n", lead):
            out.add(title)
    return out


@pytest.fixture(scope="module")
def films_scan():
    return scan_dump(str(DUMP), str(INDEX), PageSelector(category=YEAR_FILMS), workers=1)


def test_every_film_page_is_found_and_nothing_else(films_scan):
    found = {r["title"] for r in films_scan.records}
    assert len(film_titles()) == 31
    assert found == film_titles()
    assert films_scan.stats.pages == 45


def test_redirects_and_non_films_are_not_selected(films_scan):
    pages = raw_pages()
    redirects = {t for t, p in pages.items() if "<redirect" in p}
    assert len(redirects) == 10
    found = {r["title"] for r in films_scan.records}
    assert not found & redirects
    for non_film in (
        "Anarchism",
        "The Dukes of Hazzard",
        "Matlock (TV series)",
        "Final Destination",
    ):
        assert non_film in pages and non_film not in found


def test_film_date_template_adds_the_year_category():
    pages = raw_pages()
    # Antore Bahire has no [[Category:2012 films]]; only its {{Film date|...|2012|...}} adds it.
    raw = pages["Antore Bahire"].encode()
    assert b"[[Category:2012 films]]" not in raw
    assert "2012 films" in page_categories(raw)
    selector = PageSelector(category=r"^2012 films$")
    assert selector.matches(raw) is not None
    assert selector.matches(pages["Ra.One"].encode()) is None


def test_category_names_are_normalised_like_mediawiki():
    page = (
        b"<page><title>X</title><ns>0</ns><id>1</id><revision><text>"
        b"[[Category:Films_about_Crime &amp; punishment]] [[ category : 2001 films|X]]"
        b"</text></revision></page>"
    )
    assert page_categories(page) == ["Films about Crime & punishment", "2001 films"]


def test_parallel_streaming_and_single_worker_reads_agree(films_scan):
    sel = PageSelector(category=YEAR_FILMS)
    two = scan_dump(str(DUMP), str(INDEX), sel, workers=2, chunk_bytes=1)
    streaming = scan_dump(str(DUMP), None, sel, workers=4)
    assert two.workers == 2 and streaming.workers == 1
    key = [(r["page_id"], r["revision_id"], r["text"]) for r in films_scan.records]
    assert [(r["page_id"], r["revision_id"], r["text"]) for r in two.records] == key
    assert [(r["page_id"], r["revision_id"], r["text"]) for r in streaming.records] == key


def test_chunks_are_whole_streams_from_the_index():
    offsets = read_index(str(INDEX))
    assert offsets == [379, 60349, 185857, 284505, 349695]
    one_each = plan_chunks(str(DUMP), str(INDEX), chunk_bytes=1)
    ends = [*offsets[1:], DUMP.stat().st_size]
    assert [c.streams for c in one_each] == [((o, e),) for o, e in zip(offsets, ends, strict=True)]
    whole = plan_chunks(str(DUMP), str(INDEX), chunk_bytes=1 << 30)
    assert len(whole) == 1 and [s for s, _ in whole[0].streams] == offsets
    # A page-id selection keeps only the streams holding those pages (Taxi Driver, Cars 2).
    only = plan_chunks(str(DUMP), str(INDEX), 1 << 30, page_ids=frozenset({30000, 16839388}))
    assert [c.streams for c in only] == [((60349, 185857), (284505, 349695))]


def test_domains_and_years(films_scan):
    by_title = {r["title"]: r for r in films_scan.records}
    assert {r["domain"] for r in films_scan.records} == {"films"}
    assert by_title["Taxi Driver"]["year"] == 1976
    sel = PageSelector(
        category=r"^Television shows filmed in|films$",
        domains=(("films", r"^\d{4} films$"), ("television", r"^Television")),
    )
    scan = scan_dump(str(DUMP), str(INDEX), sel, workers=1)
    domains = {r["title"]: r["domain"] for r in scan.records}
    assert domains["Matlock (TV series)"] == "television"
    assert domains["Taxi Driver"] == "films"


def test_categorylinks_table_is_the_authority(tmp_path):
    # A categorylinks dump in MySQL's INSERT format: Anarchism put in "1999 films"
    # (the table wins over the wikitext), Taxi Driver listed under its real category.
    table = tmp_path / "enwikifilms-20220801-categorylinks.sql"
    table.write_text(
        "-- MySQL dump\nCREATE TABLE `categorylinks` (...);\n"
        "INSERT INTO `categorylinks` VALUES (12,'1999_films','ANARCHISM','2022-01-01 00:00:00','',"
        "'uca-default','page'),(30000,'1976_films','TAXI','2022-01-01 00:00:00','','uca-default',"
        "'page'),(30000,'Films_directed_by_Martin_Scorsese','TAXI','2022-01-01','','x','page');\n"
    )
    assert (12, "1999 films") in list(iter_categorylinks(table))
    ids = page_ids_from_categorylinks(table, YEAR_FILMS)
    assert ids == {12, 30000}
    scan = scan_dump(
        str(DUMP), str(INDEX), PageSelector(category=YEAR_FILMS, page_ids=ids), workers=1
    )
    assert {r["title"] for r in scan.records} == {"Anarchism", "Taxi Driver"}
    assert scan.stats.streams == 2  # the other three streams are never decompressed


def test_bad_regex_and_bad_index_are_reported(tmp_path):
    with pytest.raises(DataError, match="invalid"):
        PageSelector(category="(")
    bad = tmp_path / "index.txt"
    bad.write_text("not an index line\n")
    with pytest.raises(DataError, match=r"index.txt: line 1"):
        read_index(str(bad))
