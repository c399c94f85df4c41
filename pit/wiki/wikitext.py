"""Wikitext to plain text: the lead section of an article as the paper's document.

The paper keeps only each article's lead, so we cut the wikitext at the first
section heading *before* parsing: mwparserfromhell's cost grows with the text it
sees, and the body of a long article is ten to fifty times its lead.

Rendering walks mwparserfromhell's node tree instead of calling `strip_code`,
because `strip_code` keeps the text of every template argument it does not know
(citation titles, navbox entries) and drops the date templates whose text a
reader does see ("released on 17 January 1997"). Here the rule is the reverse:
a template renders to nothing unless it is one of the few that render to prose
(dates, lists, language wrappers, `nowrap`), so unknown templates never leak
markup into a document.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable

import mwparserfromhell
from mwparserfromhell.nodes import (
    Argument,
    Comment,
    ExternalLink,
    Heading,
    HTMLEntity,
    Tag,
    Template,
    Text,
    Wikilink,
)
from mwparserfromhell.wikicode import Wikicode

_FIRST_HEADING = re.compile(r"^==[^=\n].*?==\s*$", re.M)

_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]

# Link namespaces whose links are not prose: media, categories, interwiki prefixes.
_DROP_LINK_PREFIXES = ("file:", "image:", "media:", "category:", "wikt:", ":category:")
_INTERLANG = re.compile(r"^:?[a-z]{2,3}(-[a-z]+)?:")

# Tags whose content is not prose (references, tables, galleries, maths, code).
_DROP_TAGS = {
    "ref",
    "references",
    "table",
    "gallery",
    "math",
    "score",
    "timeline",
    "syntaxhighlight",
    "source",
    "imagemap",
    "templatestyles",
    "noinclude",
    "includeonly",
    "mapframe",
    "graph",
    "chem",
    "hiero",
    "inputbox",
}
_BREAK_TAGS = {"br", "li", "p", "div", "dd", "dt"}

# Templates whose rendered text is their arguments, joined by ", ".
_LIST_TEMPLATES = {
    "ubl",
    "unbulleted list",
    "plainlist",
    "plain list",
    "flatlist",
    "hlist",
    "bulleted list",
    "ublist",
    "collapsible list",
    "enum",
    "indented plainlist",
    "unbulleted",
}
# Templates whose rendered text is one positional argument (index given).
_WRAPPER_TEMPLATES = {
    "nowrap": 1,
    "nobr": 1,
    "small": 1,
    "smaller": 1,
    "big": 1,
    "lang": 2,
    "transl": 2,
    "transliteration": 2,
    "nihongo": 1,
    "nihongo2": 1,
    "sic": 1,
    "em": 1,
    "strong": 1,
    "abbr": 1,
    "ill": 1,
    "interlanguage link": 1,
    "title case": 1,
    "visible anchor": 1,
    "vanchor": 1,
    "anchor": 0,
    "langx": 2,
    "keypress": 1,
    "mvar": 1,
    "script": 2,
    "ipa": 1,
    "audio": 2,
    "noitalic": 1,
    "not a typo": 1,
    "as written": 1,
    "linktext": 1,
}
_DATE_TEMPLATES = {
    "film date",
    "filmdate",
    "start date",
    "end date",
    "start and end dates",
    "release date",
    "birth date",
    "death date",
    "dts",
    "date",
    "birth date and age",
    "start date and age",
    "film release date",
}
_CURRENCY = {
    "us$": "US$",
    "usd": "$",
    "inr": "₹",
    "gbp": "£",
    "eur": "€",
    "jpy": "¥",
    "yen": "¥",
    "a$": "A$",
    "au$": "A$",
    "ca$": "CA$",
    "cad": "CA$",
    "pkr": "Rs",
    "bdt": "৳",
    "rmb": "CN¥",
    "cny": "CN¥",
    "rs": "Rs",
    "€": "€",
    "£": "£",
}


def lead_section(wikitext: str) -> str:
    """The wikitext before the first `== heading ==` (the whole text if there is none)."""
    m = _FIRST_HEADING.search(wikitext)
    return wikitext[: m.start()] if m else wikitext


def template_name(t: Template) -> str:
    """A template's name as MediaWiki resolves it: case- and underscore-insensitive."""
    name = str(t.name)
    name = re.sub(r"<!--.*?-->", "", name, flags=re.S)
    return " ".join(name.replace("_", " ").split()).lower().removeprefix("template:")


def positional(t: Template) -> list[Wikicode]:
    """A template's unnamed arguments, parsed, in order (no second parse needed)."""
    return [p.value for p in t.params if not p.showkey]


def _named(t: Template, *names: str) -> str | None:
    for n in names:
        if t.has(n):
            return str(t.get(n).value).strip()
    return None


def format_date(year: str, month: str = "", day: str = "", dmy: bool = False) -> str:
    """`1997`, `1997|1|17` -> "January 17, 1997" (or "17 January 1997" with df=yes)."""
    year, month, day = year.strip(), month.strip(), day.strip()
    if not re.fullmatch(r"\d{3,4}", year):
        return " ".join(x for x in (day, month, year) if x)
    if month.isdigit() and 1 <= int(month) <= 12:
        month = _MONTHS[int(month) - 1]
    elif month:
        month = month.capitalize()
    if not month:
        return year
    day = str(int(day)) if day.isdigit() else day
    if not day:
        return f"{month} {year}"
    return f"{day} {month} {year}" if dmy else f"{month} {day}, {year}"


def render_dates(t: Template) -> list[str]:
    """Each date a date template shows, with its place in parentheses.

    `{{Film date|1980|5|17|Kennedy Center|1980|5|21|United States}}` shows two
    releases; the infobox keeps both, the prose joins them.
    """
    name = template_name(t)
    dmy = (_named(t, "df") or "").lower() in {"y", "yes", "dmy", "1", "true"}
    args = [render(a).strip() for a in positional(t)]
    if name in {"film date", "filmdate", "film release date", "release date"}:
        out = []
        for i in range(0, len(args), 4):
            y, m, d, place = (args[i : i + 4] + ["", "", "", ""])[:4]
            if not y:
                continue
            date = format_date(y, m, d, dmy)
            out.append(f"{date} ({place})" if place else date)
        return out
    if name == "start and end dates" and len(args) >= 4:
        return [format_date(*args[:3], dmy=dmy), format_date(*(args[3:6] + ["", ""])[:3], dmy=dmy)]
    args = [a for a in args if a]
    return [format_date(*args[:3], dmy=dmy)] if args else []


def render_template(t: Template) -> str:
    """The prose a template shows a reader, or "" for the many that show none."""
    name = template_name(t)
    if name in _LIST_TEMPLATES:
        items = [render(p.value).strip() for p in t.params if not p.showkey]
        if len(items) == 1:
            items = [i.strip(" *") for i in items[0].split("\n") if i.strip(" *")]
        return ", ".join(i for i in items if i)
    if name in _DATE_TEMPLATES:
        return ", ".join(render_dates(t))
    if name in _WRAPPER_TEMPLATES or name.startswith("lang-"):
        idx = _WRAPPER_TEMPLATES.get(name, 1)
        args = positional(t)
        return render(args[idx - 1]) if 0 < idx <= len(args) else ""
    if name in _CURRENCY:
        args = positional(t)
        return _CURRENCY[name] + (render(args[0]) if args else "")
    if name == "based on":
        args = [render(a).strip() for a in positional(t)]
        return f"{args[0]} by {', '.join(args[1:])}" if len(args) > 1 else "".join(args)
    if name in {"convert", "cvt"}:
        return " ".join(render(a).strip() for a in positional(t)[:2])
    if name in {"'", "'s"}:
        return "'" if name == "'" else "'s"
    if name in {"-", "snd", "spaced ndash", "ndash", "dash"}:
        return " – "
    if name in {"nbsp", "spaces"}:
        return " "
    return ""


def _link_text(link: Wikilink) -> str:
    target = str(link.title).strip()
    low = target.lower()
    if low.startswith(_DROP_LINK_PREFIXES) or _INTERLANG.match(low):
        return ""
    if link.text is not None:
        return render(link.text)
    return target.lstrip(":").split("#")[0] or target


# An unclosed `[[target|` (its target goes, the text after it stays) or a stray `]]`.
_STRAY_OPEN = re.compile(r"\[\[(?:[^\[\]|\n]{1,255}\|)?")


def unbracket(text: str) -> str:
    """Text with the brackets of an unbalanced link removed, as a reader would want it.

    mwparserfromhell leaves a link it cannot close (`[[Tom Hale and ...` or a
    stray `]]`) as plain text, brackets included; MediaWiki shows the brackets
    and wikiextractor drops them. Dropping them keeps the sentence: before this,
    the line was taken for markup residue and the whole paragraph was lost.
    """
    if "[[" not in text and "]]" not in text:
        return text
    return _STRAY_OPEN.sub("", text).replace("]]", "")


def render(code: Wikicode | Iterable) -> str:
    """Plain text of parsed wikitext (see the module docstring for the rules)."""
    nodes = code.nodes if isinstance(code, Wikicode) else code
    out: list[str] = []
    for node in nodes:
        if isinstance(node, Text):
            out.append(unbracket(str(node.value)))
        elif isinstance(node, Wikilink):
            out.append(_link_text(node))
        elif isinstance(node, Template):
            out.append(render_template(node))
        elif isinstance(node, Tag):
            tag = str(node.tag).lower()
            if tag in _DROP_TAGS or node.wiki_markup in ("{|", "|-", "|", "||", "!"):
                continue
            if tag in _BREAK_TAGS:
                out.append("\n")
            if node.contents is not None and not node.self_closing:
                out.append(render(node.contents))
            if tag in {"li", "p", "div"}:
                out.append("\n")
        elif isinstance(node, HTMLEntity):
            out.append(node.normalize())
        elif isinstance(node, ExternalLink):
            out.append(render(node.title) if node.title is not None else "")
        elif isinstance(node, (Comment, Heading, Argument)):
            continue
        else:
            out.append(str(node))
    return "".join(out)


_RESIDUE = re.compile(r"\{\{|\}\}|\[\[|\]\]|<ref|\{\||\|\}")


def tidy(text: str) -> str:
    """Fold the white space rendering leaves and drop lines that are still markup.

    Lines that keep `{{`, `[[`, `<ref` or table pipes come from markup
    mwparserfromhell could not close (an unbalanced template in the source); a
    document is better without them than with them.
    """
    text = html.unescape(text).replace("\u00a0", " ")
    lines = []
    for line in text.split("\n"):
        line = re.sub(r"[ \t]+", " ", line).strip()
        if not line or _RESIDUE.search(line) or line.startswith(("|", "!", "*", "#", ":", ";")):
            if line.startswith(("*", "#", ":", ";")) and not _RESIDUE.search(line):
                line = line.lstrip("*#:; ")
                if line and "|" not in line:
                    lines.append(line)
            continue
        if "|" in line:
            continue
        lines.append(line)
    text = "\n".join(lines)
    text = re.sub(r"\(\s*[,;]?\s*\)", "", text)
    text = re.sub(r"\(\s*[,;]\s*", "(", text)
    text = re.sub(r" +([,.;:])", r"\1", text)
    text = re.sub(r"[ ]{2,}", " ", text)
    return text.strip()


_REFS = re.compile(r"<ref\b[^>]*/>|<ref\b[^>]*>.*?</ref\s*>|<!--.*?(?:-->|$)", re.S | re.I)


def strip_refs(wikitext: str) -> str:
    """Drop references and comments before parsing.

    Citations are the most common place for unbalanced braces in real articles
    (`{{cite web|...}` closed with one brace); one of them inside an infobox
    makes the parser treat the whole infobox as text. A reference never belongs
    to a document, so removing it first costs nothing and saves the infobox.
    """
    return _REFS.sub("", wikitext)


def parse_lead(wikitext: str) -> Wikicode:
    """The parsed lead section, references and comments removed."""
    return mwparserfromhell.parse(strip_refs(lead_section(wikitext)))


def lead_text(wikitext: str | Wikicode) -> str:
    """The lead section of an article as plain text: the document pit trains on."""
    code = wikitext if isinstance(wikitext, Wikicode) else parse_lead(wikitext)
    return tidy(render(code))
