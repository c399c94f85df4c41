"""Which pages of a dump become documents, decided on raw bytes before any parsing.

A monthly English dump holds about 22 million `<page>` elements, of which a
category selection keeps a few thousand. Parsing is what costs, so the decision
is made on the page's undecoded bytes with a handful of `bytes.find` calls and
one regex: namespace, redirect, and the category names. Only pages that pass
are decoded, XML-parsed and handed to mwparserfromhell.

Categories come from three places:
- `[[Category:...]]` links in the wikitext;
- templates that add categories the wikitext does not show: `{{Film date|1997|...}}`
  puts a film in `1997 films` (TEMPLATE_CATEGORIES holds these rules);
- the dump's `categorylinks` table, when given: the authority, since it is what
  MediaWiki computed after expanding every template. With it, the selection is a
  set of page ids, the index says which streams hold them (the reader skips the
  rest without decompressing them), and the byte scan only checks each page's id.
"""

from __future__ import annotations

import gzip
import html
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pit.errors import DataError

_CATEGORY = re.compile(rb"\[\[\s*[Cc]ategory\s*:\s*([^\]|\n]+)")
_FILM_DATE = re.compile(rb"\{\{\s*[Ff]ilm[ _]?(?:release[ _])?date\s*\|([^}]{0,120})")
_PAGE_ID = re.compile(rb"<id>(\d+)</id>")
_NS = re.compile(rb"<ns>(-?\d+)</ns>")


def normalise_category(name: str) -> str:
    """MediaWiki's spelling of a category: underscores as spaces, first letter upper.

    Names come from raw bytes, so the dump's XML escapes (`&amp;`) are decoded too.
    """
    name = " ".join(html.unescape(name).replace("_", " ").split())
    return name[:1].upper() + name[1:]


def _film_date_categories(page: bytes) -> list[bytes]:
    """`{{Film date|df=y|1997|1|17}}` adds `1997 films` (the first positional year)."""
    out = []
    for m in _FILM_DATE.finditer(page):
        for arg in m.group(1).split(b"|"):
            arg = arg.strip()
            if b"=" in arg:
                continue
            if len(arg) == 4 and arg.isdigit():
                out.append(arg + b" films")
            break
    return out


# Rules for categories that templates add: (cheap byte test, extractor).
TEMPLATE_CATEGORIES = ((b"ilm", _film_date_categories),)


def page_categories(page: bytes) -> list[str]:
    """Every category a page's wikitext names or its known templates add, normalised."""
    raw = [m.group(1) for m in _CATEGORY.finditer(page)]
    for probe, extract in TEMPLATE_CATEGORIES:
        if probe in page:
            raw.extend(extract(page))
    seen: dict[str, None] = {}
    for r in raw:
        seen[normalise_category(r.decode("utf-8", "replace"))] = None
    return list(seen)


DEFAULT_DOMAINS: tuple[tuple[str, str], ...] = (("films", r"(?i)\bfilms?\b"),)


@dataclass(frozen=True)
class PageSelector:
    """The rule that says whether a raw `<page>` becomes a document, and which rule chose it.

    A page is selected by `category` (the new knowledge) or by `old_category`
    (earlier years: the world a pretrained model already knows). With a
    categorylinks table both are sets of page ids (`page_ids`, `old_page_ids`).
    Picklable on purpose: it travels to every worker process.
    """

    category: str
    namespaces: tuple[int, ...] = (0,)
    page_ids: frozenset[int] | None = None
    domains: tuple[tuple[str, str], ...] = DEFAULT_DOMAINS
    old_category: str | None = None
    old_page_ids: frozenset[int] | None = None

    def __post_init__(self) -> None:
        problems = []
        rules = [("category", self.category), *self.domains]
        if self.old_category is not None:
            rules.append(("old_category", self.old_category))
        for label, pattern in rules:
            try:
                re.compile(pattern)
            except re.error as e:
                problems.append(f"{label} regex {pattern!r} is invalid: {e}")
        if problems:
            raise DataError("; ".join(problems))

    @property
    def regex(self) -> re.Pattern:
        """The compiled category regex (re's own cache makes repeated calls cheap)."""
        return re.compile(self.category)

    @property
    def selected_ids(self) -> frozenset[int] | None:
        """Every page id either rule selects (None without a categorylinks table)."""
        if self.page_ids is None:
            return None
        return self.page_ids | (self.old_page_ids or frozenset())

    def matches(self, page: bytes) -> list[str] | None:
        """The page's categories when either rule selects it, or None when it is not selected.

        Cheap tests first: namespace, redirect, then the category scan.
        """
        head = page[:1024]
        m = _NS.search(head)
        if m is None or int(m.group(1)) not in self.namespaces:
            return None
        if b"<redirect" in head:
            return None
        ids = self.selected_ids
        if ids is not None:
            pid = _PAGE_ID.search(head)
            if pid is None or int(pid.group(1)) not in ids:
                return None
            return page_categories(page)
        cats = page_categories(page)
        return cats if self.selected_by(0, cats) else None

    def selected_by(self, page_id: int, categories: Iterable[str]) -> list[str]:
        """Which rules select the page: `category`, `old_category`, both, or neither.

        A page id set (from categorylinks) decides where there is one; the
        page's own categories decide otherwise.
        """
        cats = list(categories)
        if self.page_ids is not None:
            new = page_id in self.page_ids
        else:
            new = any(self.regex.search(c) for c in cats)
        old = False
        if self.old_page_ids is not None:
            old = page_id in self.old_page_ids
        elif self.old_category is not None:
            rx = re.compile(self.old_category)
            old = any(rx.search(c) for c in cats)
        return [name for name, hit in (("category", new), ("old_category", old)) if hit]

    def domain_of(self, categories: Iterable[str]) -> str:
        """The first domain whose regex matches one of the categories; "other" if none."""
        cats = list(categories)
        for name, pattern in self.domains:
            rx = re.compile(pattern)
            if any(rx.search(c) for c in cats):
                return name
        return "other"

    def year_of(self, categories: Iterable[str]) -> int | None:
        """The year of the first selecting category that names one (`2023 films` -> 2023)."""
        cats = list(categories)
        for pattern in (self.category, self.old_category):
            if pattern is None:
                continue
            rx = re.compile(pattern)
            for c in cats:
                if rx.search(c):
                    m = re.search(r"\b(1[0-9]\d\d|20\d\d)\b", c)
                    if m:
                        return int(m.group(1))
        return None


_ROW = re.compile(rb"\((\d+),'((?:[^'\\]|\\.)*)'")


def _open_text(path: str | Path):
    path = str(path)
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def iter_categorylinks(path: str | Path) -> Iterator[tuple[int, str]]:
    """(page id, category) pairs from a `categorylinks.sql(.gz)` dump table.

    The table is a series of `INSERT INTO ... VALUES (cl_from,'cl_to',...),(...);`
    lines; only the first two columns matter here, so a regex reads them without
    a MySQL server.
    """
    try:
        with _open_text(path) as f:
            for line in f:
                if not line.startswith(b"INSERT INTO"):
                    continue
                for m in _ROW.finditer(line):
                    name = m.group(2).replace(b"\\'", b"'").replace(b'\\"', b'"')
                    yield int(m.group(1)), normalise_category(name.decode("utf-8", "replace"))
    except (OSError, EOFError) as e:
        raise DataError(
            f"cannot read categorylinks table {path}: {e}; pass the "
            "`*-categorylinks.sql.gz` file of the same dump date, or omit it"
        ) from e


def page_ids_from_categorylinks(path: str | Path, category: str) -> frozenset[int]:
    """Ids of the pages the categorylinks table puts in a category matching `category`."""
    return page_ids_by_category(path, [category])[0]


def page_ids_by_category(path: str | Path, patterns: list[str]) -> list[frozenset[int]]:
    """For each regex, the ids of pages in a category it matches: one pass over the table.

    The English table is some gigabytes compressed, so new and old categories
    are read together rather than once each.
    """
    rxs = [re.compile(p) for p in patterns]
    found: list[set[int]] = [set() for _ in rxs]
    for pid, cat in iter_categorylinks(path):
        for rx, ids in zip(rxs, found, strict=True):
            if rx.search(cat):
                ids.add(pid)
    return [frozenset(ids) for ids in found]
