"""A local dump mirror of monthly dumps cut from the real fixture pages, laid out as Wikimedia's.

Each month is a `enwiki/<YYYYMMDD>/` folder holding a multistream dump
(bz2 streams of a few pages, the siteinfo header first and the closing tag
last, as the real files are), its index (`offset:page_id:title` per page)
and a `dumpstatus.json` whose `articlesmultistreamdump` job lists both with
size and sha1. Later months add pages the earlier ones held back, and edit
pages: a new revision id, a later timestamp and a sentence added to the lead.
"""

from __future__ import annotations

import bz2
import hashlib
import html
import json
import re
from pathlib import Path

from real_data import ENWIKI_FILMS

DUMP = ENWIKI_FILMS / "enwikifilms-20220801-pages-articles-multistream.xml.bz2"
NEW = r"^(19[89]\d|20\d\d) films$"
OLD = r"^19[0-7]\d films$"
PAGES_PER_STREAM = 5


def fixture_pages() -> tuple[str, list[str]]:
    """The siteinfo header and every `<page>` element of the fixture dump, in order."""
    raw = bz2.decompress(DUMP.read_bytes()).decode("utf-8")
    head = raw[: raw.index("  <page>")]
    return head, re.findall(r"  <page>.*?</page>\n", raw, re.S)


def title(page: str) -> str:
    return html.unescape(re.search(r"<title>(.*?)</title>", page).group(1))


def page_id(page: str) -> int:
    return int(re.search(r"<id>(\d+)</id>", page).group(1))


def year_categories(page: str) -> set[str]:
    """The page's `YYYY films` categories: its links and the year of its `{{Film date}}`."""
    text = html.unescape(page)
    cats = set(re.findall(r"\[\[\s*Category\s*:\s*(\d{4} films)\s*[\]|]", text))
    for args in re.findall(r"\{\{\s*[Ff]ilm date\s*\|([^}]*)", text):
        years = [a.strip() for a in args.split("|") if "=" not in a]
        if years and re.fullmatch(r"\d{4}", years[0]):
            cats.add(f"{years[0]} films")
    return cats


def is_new_film(page: str) -> bool:
    return any(re.search(NEW, c) for c in year_categories(page))


def edited(page: str, note: str) -> str:
    """The page as a later revision: revision id + 1, a 2023 timestamp, `note` after the lead's
    first sentence line (the one that opens with the bold title)."""
    rev = re.search(r"<revision>\s*<id>(\d+)</id>", page)
    page = page[: rev.start(1)] + str(int(rev.group(1)) + 1) + page[rev.end(1):]
    page = re.sub(r"<timestamp>[^<]*</timestamp>", "<timestamp>2023-06-01T00:00:00Z</timestamp>",
                  page, count=1)
    return re.sub(r"(\n'''[^\n]*)", lambda m: m.group(1) + " " + note, page, count=1)


def write_month(mirror: Path, date: str, pages: list[str], status: str = "done") -> Path:
    """`enwiki/<date>/` with the dump of `pages`, its index and dumpstatus.json."""
    head, _ = fixture_pages()
    folder = mirror / "enwiki" / date
    folder.mkdir(parents=True, exist_ok=True)
    streams = [bz2.compress(head.encode())]
    lines = []
    offset = len(streams[0])
    for i in range(0, len(pages), PAGES_PER_STREAM):
        chunk = pages[i : i + PAGES_PER_STREAM]
        lines += [f"{offset}:{page_id(p)}:{title(p)}" for p in chunk]
        streams.append(bz2.compress("".join(chunk).encode()))
        offset += len(streams[-1])
    streams.append(bz2.compress(b"</mediawiki>\n"))
    files = {
        f"enwiki-{date}-pages-articles-multistream.xml.bz2": b"".join(streams),
        f"enwiki-{date}-pages-articles-multistream-index.txt.bz2":
            bz2.compress(("\n".join(lines) + "\n").encode()),
    }
    listed = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        listed[name] = {"size": len(data), "sha1": hashlib.sha1(data).hexdigest(),
                        "url": f"/enwiki/{date}/{name}"}
    status_doc = {"jobs": {"articlesmultistreamdump": {"status": status, "files": listed}},
                  "version": "0.8"}
    (folder / "dumpstatus.json").write_text(json.dumps(status_doc))
    return folder


def monthly_pages(held_back: int = 6) -> list[list[str]]:
    """Three months of pages: the first without its last `held_back` new films; the second
    with them and one film of the first edited; the third with another film edited."""
    _, pages = fixture_pages()
    films = [i for i, p in enumerate(pages) if is_new_film(p)]
    later = set(films[-held_back:])
    first = [p for i, p in enumerate(pages) if i not in later]
    second = list(pages)
    second[films[0]] = edited(pages[films[0]], "It was restored in 2023.")
    third = list(second)
    third[films[1]] = edited(pages[films[1]], "A sequel was announced in 2023.")
    return [first, second, third]
