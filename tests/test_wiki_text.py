"""Lead text, infobox fields and infobox QA on the real dump fixture (tests/fixtures)."""

from __future__ import annotations

import html
import re

import mwparserfromhell
import pytest
from real_data import ENWIKI_FILMS

from pit.wiki.infobox import parse_infobox, release_year
from pit.wiki.qa_infobox import base_title, infobox_qa, subject
from pit.wiki.reader import scan_dump
from pit.wiki.select import PageSelector
from pit.wiki.wikitext import lead_section, lead_text

FIXTURE = ENWIKI_FILMS
DUMP = FIXTURE / "enwikifilms-20220801-pages-articles-multistream.xml.bz2"
INDEX = FIXTURE / "enwikifilms-20220801-pages-articles-multistream-index.txt.bz2"

# Read off each article's infobox by hand: director (first listed), first star, release year.
EXPECTED = {
    "Actrius": ("Ventura Pons", "Núria Espert", 1997),
    "Barry Lyndon": ("Stanley Kubrick", "Ryan O'Neal", 1975),
    "Batman (1966 film)": ("Leslie H. Martinson", "Adam West", 1966),
    "Evil Dead II": ("Sam Raimi", "Bruce Campbell", 1987),
    "Taxi Driver": ("Martin Scorsese", "Robert De Niro", 1976),
    "Midnight Cowboy": ("John Schlesinger", "Dustin Hoffman", 1969),
    "The Empire Strikes Back": ("Irvin Kershner", "Mark Hamill", 1980),
    "Seven Brides for Seven Brothers": ("Stanley Donen", "Howard Keel", 1954),
    "Four Daughters": ("Michael Curtiz", "Priscilla Lane", 1938),
    "The Castle of Cagliostro": ("Hayao Miyazaki", "Yasuo Yamada", 1979),
    "The Incredibles": ("Brad Bird", "Craig T. Nelson", 2004),
    "That's Entertainment!": ("Jack Haley Jr.", "Frank Sinatra", 1974),
    "The Company of Strangers": ("Cynthia Scott", "Alice Diabo", 1990),
    "48 Hrs.": ("Walter Hill", "Nick Nolte", 1982),
    "Till the Clouds Roll By": ("Richard Whorf", "June Allyson", 1946),
    "Health (film)": ("Robert Altman", "Carol Burnett", 1982),
    "Himala": ("Ishmael Bernal", "Nora Aunor", 1982),
    "Cars 2": ("John Lasseter", "Owen Wilson", 2011),
    "Raising the Wind (1961 film)": ("Gerald Thomas", "James Robertson Justice", 1961),
    "Dadar Kirti": ("Tarun Majumdar", "Tapas Paul", 1980),
    "Ra.One": ("Anubhav Sinha", "Shah Rukh Khan", 2011),
    "Manathe Kottaram": ("Sunil", "Dileep", 1994),
    "Not Another B Movie": ("John Wesley Norton", "Byron Thames", 2011),
    "Antore Bahire": ("Somnath Sen", "Debashree Roy", 2012),
    "Newspaper Boy (1997 film)": ("Nissar", "Mukesh", 1997),
    "Dekh Magar Pyaar Say": ("Asad Ul Haq", "Humaima Malick", 2015),
    "That's the Woman I Want": ("Juan Carlos Thorry", "Olga Zubarry", 1950),
    "Kadvi Hawa": ("Nila Madhab Panda", "Sanjay Mishra", 2017),
    "Aayiram Vaasal Idhayam": ("A. Jagannathan", "Sudhakar", 1980),
    "Indivisible (2018 film)": ("David G. Evans", "Sarah Drew", 2018),
    "Things (film)": ("Andrew Jordan", "Barry J. Gillis", 1989),
}


@pytest.fixture(scope="module")
def records() -> dict[str, dict]:
    scan = scan_dump(str(DUMP), str(INDEX), PageSelector(category=r"^\d{4} films$"), workers=1)
    return {r["title"]: r for r in scan.records}


def _raw_field(title: str, field: str) -> str:
    """The raw wikitext of one infobox parameter, up to the next `| name =` line."""
    import bz2

    data = bz2.decompress(DUMP.read_bytes()).decode("utf-8")
    page = re.search(
        rf"<title>{re.escape(html.escape(title, quote=False))}</title>.*?</page>",
        data.replace("&#039;", "'"),
        re.S,
    )
    text = html.unescape(page.group(0))
    m = re.search(rf"\n\|\s*{field}\s*=(.*?)(?=\n\s*\|\s*\w[\w ]*=|\n\}}\}})", text, re.S)
    return m.group(1) if m else ""


def test_director_starring_and_year_match_the_infobox(records):
    assert set(records) == set(EXPECTED)
    for title, (director, star, year) in EXPECTED.items():
        box = records[title]["infobox"]
        assert box["director"][0] == director, title
        assert box["starring"][0] == star, title
        assert release_year(box) == year, title


def test_every_starring_value_comes_from_the_raw_infobox(records):
    for title in ("Barry Lyndon", "48 Hrs.", "Cars 2", "The Company of Strangers", "Ra.One"):
        raw = _raw_field(title, "starring")
        assert raw, title
        values = records[title]["infobox"]["starring"]
        assert len(values) >= 2, title
        for v in values:
            assert v in raw, (title, v)
            assert not re.search(r"[\[\]{}<>|*]", v), (title, v)


def test_cleaned_texts_have_no_markup_residue(records):
    for title, rec in records.items():
        text = rec["text"]
        assert len(text) > 80, title
        for residue in ("{{", "}}", "[[", "]]", "<ref", "|", "&lt;", "&amp;nbsp;", "'''"):
            assert residue not in text, (title, residue)
    assert records["Taxi Driver"]["text"].startswith("Taxi Driver is a 1976 American")


def test_lead_is_cut_at_the_first_section():
    wikitext = "Intro [[Link|text]].\n\n==Plot==\nSpoiler.\n===Sub===\nMore."
    assert lead_section(wikitext) == "Intro [[Link|text]].\n\n"
    assert lead_text(wikitext) == "Intro text."


def test_templates_render_as_prose_or_vanish():
    text = lead_text(
        "{{Use dmy dates|date=May 2020}}{{Infobox film|name=X|director=[[A B]]}}\n"
        "'''X''' ({{lang-fr|Le X}}) is a {{nowrap|1999 film}} released on "
        "{{Film date|df=y|1999|1|17|[[Spain]]}}.<ref>{{cite web|title=Secret}}</ref> "
        "It stars {{ubl|[[A B|Anne]]|C D}}.<!-- hidden -->[[File:X.jpg|thumb|A poster]]\n"
        "{| class=wikitable\n|-\n| cell || cell\n|}\n[[Category:1999 films]]"
    )
    assert text == (
        "X (Le X) is a 1999 film released on 17 January 1999 (Spain). It stars Anne, C D."
    )


def test_infobox_spellings_and_lists_are_normalised():
    box = parse_infobox(
        "{{infobox_film\n| Directed by = [[Jane Roe|Jane]]<br />John Doe\n"
        "| based_on = {{based on|''Novel''|Writer}}\n| studio = {{plainlist|\n* [[Studio A]]\n"
        "* Studio B<ref>x</ref>\n}}\n| stars = {{ubl|One|Two}}\n"
        "| released = {{Film date|2001|02|03|Berlin|2001|3|4|US}}\n| runtime = 90 minutes\n}}"
    )
    assert box["director"] == ["Jane", "John Doe"]
    assert box["production_companies"] == ["Studio A", "Studio B"]
    assert box["starring"] == ["One", "Two"]
    assert box["released"] == ["February 3, 2001 (Berlin)", "March 4, 2001 (US)"]
    assert box["runtime"] == ["90 minutes"]
    assert box["based_on"] == ["Novel by Writer"]
    assert parse_infobox("No infobox here.") == {}
    assert parse_infobox(mwparserfromhell.parse("{{Infobox person|name=X}}")) == {}


def test_infobox_qa_names_the_film_in_every_question(records):
    total = 0
    for title, rec in records.items():
        pairs = infobox_qa(rec)
        assert pairs, title
        for qa in pairs:
            total += 1
            assert base_title(title) in qa["question"], qa
            assert qa["answers"] and all(a.lower() in rec["text"].lower() for a in qa["answers"])
            assert qa["generator"] == "infobox"
        assert pairs == infobox_qa(rec)  # deterministic
        questions = [q["question"] for q in pairs]
        assert len(set(questions)) == len(questions)
    assert total >= 4 * len(records)
    taxi = {q["question"]: q["answers"] for q in infobox_qa(records["Taxi Driver"])}
    assert any("Martin Scorsese" in a for a in taxi.values())


def test_subject_keeps_year_disambiguation_as_prose():
    assert subject("Batman (1966 film)") == "the 1966 film Batman"
    assert subject("Health (film)") == "the film Health"
    assert subject("Taxi Driver") == "Taxi Driver"
