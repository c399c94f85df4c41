"""`{{Infobox film}}` as a dict of normalised field names to lists of plain values.

Editors spell the same field many ways (`based on` / `based_on`, `studio` /
`production companies`, `director` / `directors`), and write lists as `{{ubl}}`,
`{{plainlist}}` with bullets, or `<br />`-separated lines. The QA generator and
the tests want one spelling and one value per list item, so both live here: the
alias table below is the single place a new spelling is taught.

A value is what a question can have as its answer, so the billing around a
name goes (`Name (uncredited)`, `''and'' [[Name]]`, `[[A]] and [[B]]` as two
items) and placeholders (`See below`, `TBA`) are no values at all.
"""

from __future__ import annotations

import re

from mwparserfromhell.nodes import Tag, Template, Text
from mwparserfromhell.wikicode import Wikicode

from pit.wiki.wikitext import _LIST_TEMPLATES, parse_lead, render, render_dates, template_name

INFOBOX_NAMES = {"infobox film", "infobox movie", "film infobox", "infobox feature film"}

_ALIASES = {
    "director": ["director", "directors", "directed by", "direction"],
    "producer": ["producer", "producers", "produced by"],
    "writer": ["writer", "writers", "written by"],
    "screenplay": ["screenplay", "screenplay by", "screenwriter", "screenwriters"],
    "story": ["story", "story by"],
    "based_on": ["based on", "basedon", "based on work", "source"],
    "starring": ["starring", "stars", "cast"],
    "narrator": ["narrator", "narrated by", "narrators"],
    "music": ["music", "music by", "composer", "composers"],
    "cinematography": ["cinematography", "cinematographer", "director of photography"],
    "editing": ["editing", "editor", "editors", "edited by"],
    "production_companies": [
        "production companies",
        "production company",
        "studio",
        "studios",
        "production",
    ],
    "distributor": ["distributor", "distributors", "distributed by"],
    "released": ["released", "release date", "release dates", "released date", "premiere"],
    "runtime": ["runtime", "running time", "run time"],
    "country": ["country", "countries"],
    "language": ["language", "languages"],
    "budget": ["budget"],
    "gross": ["gross", "box office"],
    "name": ["name", "title"],
}
FIELD_OF = {alias: field for field, aliases in _ALIASES.items() for alias in aliases}

# People fields written as one comma-separated line are split on commas; dates,
# money and titles are not (they have commas of their own).
_PEOPLE = {
    "starring",
    "director",
    "writer",
    "producer",
    "music",
    "screenplay",
    "editing",
    "cinematography",
    "narrator",
    "story",
}


def normalise_key(key: str) -> str | None:
    """`Production_Companies ` -> `production_companies`; None for fields we do not keep."""
    k = " ".join(key.replace("_", " ").split()).lower()
    return FIELD_OF.get(k)


def find_infobox(code: Wikicode) -> Template | None:
    """The first `{{Infobox film}}` (any spelling) at any depth of the parsed lead."""
    for t in code.filter_templates(recursive=True):
        if template_name(t) in INFOBOX_NAMES:
            return t
    return None


def _clean_value(s: str) -> str:
    s = s.replace("\u00a0", " ")
    s = _SEE_NOTE.sub("", s)
    s = re.sub(r"\s+", " ", s).strip(" ,;\n\t*")
    return s


# "(see below)" and the like, anywhere in a value: a pointer, not part of it.
_SEE_NOTE = re.compile(r"\s*\(\s*see\b[^()]*\)", re.I)
# A conjunction between list items: `[[A]] and [[B]]`, `''and'' [[C]]`, `[[D]] & [[E]]`.
_CONJUNCTION = re.compile(r"[,;]?\s*(?:and|&|with|plus)?\s*[,;]?", re.I)
_LEADING_CONJUNCTION = re.compile(r"^(?:and|&|with|plus)\s+", re.I)
_TRAILING_CONJUNCTION = re.compile(r"\s+(?:and|&)$", re.I)
_TRAILING_NOTE = re.compile(r"\s*\([^()]*\)$")
# Values that stand in for a value: "See below", "See Cast", "TBA", "N/A", "Various".
_PLACEHOLDER = re.compile(
    r"^(?:see\b.*|tba|tbd|tbc|to be (?:announced|confirmed|determined)|n/?a|unknown|none"
    r"|various(?: artists)?|[-\u2013\u2014?]+)\.?$",
    re.I,
)


def _is_separator(node: object) -> bool:
    """Whether a node between two names only joins them (`and`, `&`, `''and''`, a comma)."""
    if isinstance(node, Text):
        text = str(node.value)
    elif isinstance(node, Tag) and str(node.tag).lower() in {"i", "b", "small"}:
        text = render(node.contents) if node.contents is not None else ""
    else:
        return False
    text = text.strip()
    return bool(text) and _CONJUNCTION.fullmatch(text) is not None


def _person(item: str) -> str:
    """A name without the billing around it: `and Name` -> `Name`, `Name (uncredited)` -> `Name`.

    A trailing parenthesis in a people field annotates the credit (uncredited,
    voice, segment, "as ..."); a name itself needs none, and a link to a
    disambiguated article (`[[Tom Hale (actor)|Tom Hale]]`) renders without it.
    """
    item = _LEADING_CONJUNCTION.sub("", item)
    while _TRAILING_NOTE.search(item):
        item = _TRAILING_NOTE.sub("", item)
    return _clean_value(_TRAILING_CONJUNCTION.sub("", item))


def split_values(value: Wikicode, field: str = "") -> list[str]:
    """One plain string per list item of an infobox value.

    List templates give one item per argument (or per bullet line inside
    `{{plainlist}}`), `<br>` and bullet lines separate items, date templates give
    one item per date; everything else renders to text.
    """
    items: list[str] = []
    current: list[str] = []

    def flush() -> None:
        for line in "".join(current).split("\n"):
            line = _clean_value(line)
            if line:
                items.append(line)
        current.clear()

    people = field in _PEOPLE
    for node in value.nodes:
        if people and _is_separator(node):
            current.append("\n")
            continue
        if isinstance(node, Template):
            name = template_name(node)
            if name in _LIST_TEMPLATES:
                flush()
                for p in node.params:
                    if p.showkey:
                        continue
                    current.append(render(p.value))
                    current.append("\n")
                    flush()
                continue
            if name in {
                "film date",
                "filmdate",
                "film release date",
                "release date",
                "start date",
                "end date",
            }:
                flush()
                items.extend(render_dates(node))
                continue
            current.append(render([node]))
        elif isinstance(node, Tag) and str(node.tag).lower() in {"br", "li", "p", "hr"}:
            current.append("\n")
            if node.contents is not None and not node.self_closing:
                current.append(render(node.contents))
                current.append("\n")
        elif isinstance(node, Text):
            current.append(str(node.value))
        else:
            current.append(render([node]))
    flush()
    if people and len(items) == 1 and "," in items[0]:
        items = [_clean_value(x) for x in items[0].split(",") if _clean_value(x)]
    items = [i for i in items if not _LABEL.match(i)]
    if people:
        items = [_person(i) for i in items]
    return [i for i in items if i and not _PLACEHOLDER.match(i)]


# Items that annotate a list rather than belong to it: "Uncredited:", "(Judy Garland seqs.)".
_LABEL = re.compile(r"^(\(.*\)|[^()]{0,30}:|uncredited)$", re.I)


def parse_infobox(wikitext: str | Wikicode) -> dict[str, list[str]]:
    """Normalised infobox fields of a film page's lead; {} when it has no film infobox."""
    code = wikitext if isinstance(wikitext, Wikicode) else parse_lead(wikitext)
    box = find_infobox(code)
    if box is None:
        return {}
    out: dict[str, list[str]] = {}
    for p in box.params:
        field = normalise_key(str(p.name))
        if field is None or field in out:
            continue
        values = split_values(p.value, field)
        if values:
            out[field] = values
    return out


def release_year(infobox: dict[str, list[str]]) -> int | None:
    """The first four-digit year in the `released` field: the film's release year."""
    for v in infobox.get("released", []):
        m = re.search(r"\b(1[89]\d\d|20\d\d)\b", v)
        if m:
            return int(m.group(1))
    return None
