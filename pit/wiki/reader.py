"""Read a pages-articles dump in parallel and keep only the selected pages.

A `pages-articles-multistream.xml.bz2` file is a concatenation of independent
bz2 streams of 100 pages each, and its index lists the byte offset of every
stream. So the file cuts into byte ranges of whole streams that any process can
decompress on its own: the parent reads only the index, plans chunks of a few
megabytes, and each worker opens the file, seeks, decompresses its streams and
returns just the records it selected. Nothing but those records crosses a
process boundary, so the work scales with cores until the disk gives out.

Decompression is the floor: bz2 runs at a few tens of MB/s per core, and every
byte has to pass through it. Everything after it is kept cheaper than it: pages
are found with `bytes.find`, selected with `PageSelector.matches` on raw bytes,
and only selected pages (about 0.1% of an English dump for one year of films)
are decoded, XML-parsed and given to mwparserfromhell.

With a page-id selection (the categorylinks table) the index also says which
streams hold a selected page, and only those are read at all.

A plain single-stream `.xml.bz2` (or a multistream file without its index) is
read by one worker, streaming, with the same page loop.

Bad input never passes silently. A bz2 stream that does not decompress, a page
that is not well-formed XML or not UTF-8 raises `DataError` naming the file and
the byte offset of its stream; with `on_error="skip"` it is skipped and counted
in `ScanStats` instead, and the counts go to the manifest. Memory stays
bounded on damaged input too: data is decompressed and cut into pages piece
by piece (`pagestream`), and a page longer than `max_page_bytes` is an error.
"""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any, Literal

import fsspec

from pit.errors import DataError
from pit.wiki.infobox import parse_infobox, release_year
from pit.wiki.pagestream import DEFAULT_MAX_PAGE_MB, Inflater, PageError, pages_in, whole_pages
from pit.wiki.select import PageSelector
from pit.wiki.wikitext import lead_text, parse_lead

OnError = Literal["raise", "skip"]
MAX_PAGE_BYTES = int(DEFAULT_MAX_PAGE_MB * (1 << 20))

_FIX = (
    "The dump file is damaged: download it again (dumpstatus.json gives its sha1; "
    "`pit.wiki.dump.download` verifies it), or pass --on-error skip to skip and count "
    "bad streams and pages."
)


@dataclass(frozen=True)
class Chunk:
    """Whole bz2 streams of one file, as `(start, end)` byte ranges: one worker's task.

    Consecutive streams usually, but not always: with a page-id selection (the
    categorylinks table) only the streams holding a selected page are listed.
    No streams means "the whole file, streaming" (a dump without index).
    """

    path: str
    streams: tuple[tuple[int, int], ...]

    @property
    def nbytes(self) -> int:
        return sum(e - s for s, e in self.streams)


@dataclass
class ScanStats:
    """What a scan saw, kept for the manifest and the benchmark."""

    streams: int = 0
    pages: int = 0
    selected: int = 0
    empty: int = 0
    compressed_bytes: int = 0
    bad_streams: int = 0
    bad_pages: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: ScanStats) -> None:
        for name in (
            "streams",
            "pages",
            "selected",
            "empty",
            "compressed_bytes",
            "bad_streams",
            "bad_pages",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.extend(other.errors)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["errors"] = self.errors[:100]
        return d


def read_index(index: str, page_ids: frozenset[int] | None = None) -> list[int]:
    """Sorted distinct stream offsets of a `multistream-index.txt(.bz2)` file.

    Each line is `offset:page_id:title`; titles may hold colons, offsets repeat
    for the pages of one stream. With `page_ids`, only the offsets of streams
    holding one of those pages.
    """
    offsets: set[int] = set()
    compression = "bz2" if str(index).endswith(".bz2") else None
    try:
        with fsspec.open(index, "rt", encoding="utf-8", compression=compression) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                parts = line.split(":", 2)
                if len(parts) < 3 or not parts[0].isdigit() or not parts[1].isdigit():
                    raise DataError(
                        f"{index}: line {n} is not `offset:page_id:title` ({line[:80]!r}); "
                        "pass the `-multistream-index.txt.bz2` file that belongs to the dump"
                    )
                if page_ids is None or int(parts[1]) in page_ids:
                    offsets.add(int(parts[0]))
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read dump index {index}: {e}; download it again") from e
    return sorted(offsets)


def plan_chunks(
    dump: str,
    index: str | None,
    chunk_bytes: int = 8 << 20,
    page_ids: frozenset[int] | None = None,
) -> list[Chunk]:
    """Cut the dump into chunks of whole streams of about `chunk_bytes` each.

    With `page_ids` (from the categorylinks table) streams holding none of those
    pages are left out, so they are never read or decompressed: for one year of
    films that is most of the dump.
    """
    if index is None:
        return [Chunk(str(dump), ())]
    offsets = read_index(index)
    with fsspec.open(dump, "rb") as f:
        size = f.size if getattr(f, "size", None) is not None else f.seek(0, 2)
    if not offsets:
        raise DataError(f"{index} lists no streams; pass the index of {dump}")
    if offsets[-1] >= size:
        raise DataError(
            f"{index} points at byte {offsets[-1]} but {dump} has only {size} bytes: "
            "the dump is truncated or the index belongs to another dump"
        )
    bounds = offsets + [size]
    streams = list(zip(bounds[:-1], bounds[1:], strict=True))
    if page_ids is not None:
        wanted = set(read_index(index, page_ids))
        streams = [st for st in streams if st[0] in wanted]
    chunks: list[Chunk] = []
    group: list[tuple[int, int]] = []
    for st in streams:
        group.append(st)
        if sum(e - s for s, e in group) >= chunk_bytes:
            chunks.append(Chunk(str(dump), tuple(group)))
            group = []
    if group:
        chunks.append(Chunk(str(dump), tuple(group)))
    return chunks


def _read_runs(chunk: Chunk) -> Iterator[tuple[int, int, bytes]]:
    """(start, end, bytes) of each stream, reading each contiguous run of streams at once."""
    runs: list[list[tuple[int, int]]] = []
    for st in chunk.streams:
        if runs and runs[-1][-1][1] == st[0]:
            runs[-1].append(st)
        else:
            runs.append([st])
    try:
        with fsspec.open(chunk.path, "rb") as f:
            for run in runs:
                first, last = run[0][0], run[-1][1]
                f.seek(first)
                raw = f.read(last - first)
                if len(raw) < last - first:
                    raise DataError(
                        f"{chunk.path}: expected bytes up to offset {last} but the file ends at "
                        f"{first + len(raw)}: it is truncated or the index belongs to another "
                        f"dump. {_FIX}"
                    )
                for s, e in run:
                    yield s, e, raw[s - first : e - first]
    except OSError as e:
        raise DataError(f"cannot read {chunk.path}: {e}") from e


def parse_page(page: bytes) -> dict[str, Any]:
    """Title, ids, timestamp and wikitext of one raw `<page>` element."""
    try:
        text = page.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PageError(f"invalid UTF-8 at byte {e.start} of the page ({e.reason})") from e
    try:
        el = ET.fromstring(text)
    except ET.ParseError as e:
        line, col = e.position
        raise PageError(f"malformed XML at line {line}, column {col} of the page ({e})") from e
    rev = el.find("revision")
    if rev is None or el.findtext("id") is None:
        raise PageError("malformed XML: <page> without <id> or <revision>")
    return {
        "page_id": int(el.findtext("id") or 0),
        "title": el.findtext("title") or "",
        "ns": int(el.findtext("ns") or 0),
        "revision_id": int(rev.findtext("id") or 0),
        "timestamp": rev.findtext("timestamp") or "",
        "wikitext": rev.findtext("text") or "",
    }


def make_record(page: bytes, categories: list[str], selector: PageSelector) -> dict[str, Any]:
    """The document record of one selected page: lead text, infobox, domain, year, rule."""
    p = parse_page(page)
    lead = parse_lead(p.pop("wikitext"))
    infobox = parse_infobox(lead)
    p.pop("ns")
    return {
        **p,
        "categories": categories,
        "selected_by": selector.selected_by(p["page_id"], categories),
        "domain": selector.domain_of(categories),
        "year": selector.year_of(categories) or release_year(infobox),
        "text": lead_text(lead),
        "infobox": infobox,
    }


def _scan_data(
    data: bytes,
    where: str,
    selector: PageSelector,
    on_error: OnError,
    stats: ScanStats,
    records: list[dict[str, Any]],
    offset: int = 0,
) -> None:
    for page in pages_in(data, where, offset):
        stats.pages += 1
        cats = selector.matches(page)
        if cats is None:
            continue
        try:
            rec = make_record(page, cats, selector)
        except PageError as e:
            msg = f"{where}, page {stats.pages}: {e}"
            if on_error == "raise":
                raise DataError(f"{msg}. {_FIX}") from e
            stats.bad_pages += 1
            stats.errors.append(msg)
            continue
        if not rec["text"]:
            stats.empty += 1
            continue
        stats.selected += 1
        records.append(rec)


def scan_chunk(
    chunk: Chunk, selector: PageSelector, on_error: OnError = "raise",
    max_page_bytes: int = MAX_PAGE_BYTES,
) -> tuple[list[dict[str, Any]], ScanStats]:
    """Decompress one chunk, select pages, and build their records (runs in a worker).

    A stream that fails is failed whole: with `on_error="skip"` none of its
    pages count, as if it had not decompressed at all.
    """
    if not chunk.streams:
        return _scan_streaming(chunk.path, selector, on_error, max_page_bytes)
    stats = ScanStats()
    records: list[dict[str, Any]] = []
    for s, e, raw in _read_runs(chunk):
        where = f"{chunk.path}: bz2 stream at byte offset {s}"
        stats.streams += 1
        stats.compressed_bytes += e - s
        mine, found = ScanStats(), []
        try:
            inflater = Inflater()
            for offset, data in whole_pages(inflater.pieces([raw]), max_page_bytes):
                _scan_data(data, where, selector, on_error, mine, found, offset)
            inflater.finish()
        except PageError as err:
            err = PageError(err if str(err).startswith(where) else f"{where}: {err}")
            if on_error == "raise":
                raise DataError(f"{err}. {_FIX}") from err
            stats.bad_streams += 1
            stats.errors.append(str(err))
            continue
        stats.add(mine)
        records.extend(found)
    return records, stats


def _scan_streaming(
    path: str, selector: PageSelector, on_error: OnError, max_page_bytes: int
) -> tuple[list[dict[str, Any]], ScanStats]:
    """One pass over a dump without index: decompress piece by piece, cut pages as they close."""
    stats = ScanStats()
    records: list[dict[str, Any]] = []
    inflater = Inflater()

    def blocks() -> Iterator[bytes]:
        with fsspec.open(path, "rb") as f:
            while block := f.read(1 << 20):
                stats.compressed_bytes += len(block)
                yield block

    def where() -> str:
        return f"{path}: bz2 data near byte offset {inflater.consumed}"

    try:
        for offset, data in whole_pages(inflater.pieces(blocks()), max_page_bytes):
            _scan_data(data, where(), selector, on_error, stats, records, offset)
        inflater.finish()
    except PageError as e:
        raise DataError(f"{e if str(e).startswith(path) else f'{where()}: {e}'}. {_FIX}") from e
    stats.streams += inflater.streams
    return records, stats


@dataclass
class ScanResult:
    """Selected records in dump order, with the counts and timing of the scan."""

    records: list[dict[str, Any]]
    stats: ScanStats
    seconds: float
    workers: int


def scan_dump(
    dump: str,
    index: str | None,
    selector: PageSelector,
    *,
    workers: int = 1,
    chunk_bytes: int = 8 << 20,
    on_error: OnError = "raise",
    progress: Callable[[ScanStats], None] | None = None,
    max_page_bytes: int = MAX_PAGE_BYTES,
) -> ScanResult:
    """Scan a whole dump with `workers` processes; records come back in dump order.

    One worker runs in this process (no pool to start, nothing to pickle), which
    is also what a single-stream dump gets. At most two chunks per worker are in
    flight, and each holds at most one page of `max_page_bytes` besides one
    piece of decompressed data, so memory stays flat however large (or
    damaged) the dump.
    """
    t0 = time.perf_counter()
    if index is None:
        workers = 1
    chunks = plan_chunks(
        str(dump), None if index is None else str(index), chunk_bytes, selector.selected_ids
    )
    total = ScanStats()
    records: list[dict[str, Any]] = []

    def take(result: tuple[list[dict[str, Any]], ScanStats]) -> None:
        recs, st = result
        records.extend(recs)
        total.add(st)
        if progress is not None:
            progress(total)

    if workers <= 1 or len(chunks) == 1:
        for c in chunks:
            take(scan_chunk(c, selector, on_error, max_page_bytes))
    else:
        ctx = get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=ctx) as pool:
            pending: deque[Future] = deque()
            it = iter(chunks)
            try:
                for c in it:
                    pending.append(pool.submit(scan_chunk, c, selector, on_error,
                                               max_page_bytes))
                    if len(pending) >= 2 * workers:
                        take(pending.popleft().result())
                while pending:
                    take(pending.popleft().result())
            except BaseException:
                for fut in pending:
                    fut.cancel()
                raise
    return ScanResult(records, total, time.perf_counter() - t0, max(1, workers))


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
