"""Damaged dumps: a clear error naming file and offset, or skipped and counted, not published.

Each test rebuilds a copy of the real fixture in tmp_path with one fault in one
bz2 stream, and a matching index, so the fault sits where a real one would.
"""

from __future__ import annotations

import bz2
import json
import re
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from real_data import ENWIKI_FILMS

from pit.errors import DataError
from pit.wiki.build import WikiBuildConfig, build_wiki_dataset, load_card
from pit.wiki.reader import read_index, scan_dump
from pit.wiki.select import PageSelector

FIXTURE = ENWIKI_FILMS
DUMP = FIXTURE / "enwikifilms-20220801-pages-articles-multistream.xml.bz2"
INDEX = FIXTURE / "enwikifilms-20220801-pages-articles-multistream-index.txt.bz2"
SELECT = PageSelector(category=r"^\d{4} films$")
FILMS = 31


def streams() -> list[bytes]:
    raw = DUMP.read_bytes()
    bounds = [0, *read_index(str(INDEX)), len(raw)]
    return [raw[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def rebuild(tmp: Path, which: int, fault: Callable[[bytes], bytes], compressed: bool = False):
    """A fixture copy with stream `which` passed through `fault`; returns (dump, index, offset).

    Stream 0 is the siteinfo header; 1 holds the redirects and Anarchism; 2 nine films
    and a TV series; 4 starts with "Cars 2", 5 with "That's the Woman I Want".

    `fault` sees the decompressed XML of the stream (or its bz2 bytes when
    `compressed`), and the index is rewritten for the new stream lengths.
    """
    parts = streams()
    part = parts[which]
    parts[which] = fault(part) if compressed else bz2.compress(fault(bz2.decompress(part)))
    dump = tmp / "enwikibad-20220801-pages-articles-multistream.xml.bz2"
    dump.write_bytes(b"".join(parts))
    old = bz2.decompress(INDEX.read_bytes()).decode().splitlines()
    old_offsets = [0, *read_index(str(INDEX))]
    new_offsets = [sum(len(p) for p in parts[:i]) for i in range(len(parts))]
    remap = dict(zip(old_offsets, new_offsets, strict=True))
    lines = []
    for line in old:
        off, rest = line.split(":", 1)
        lines.append(f"{remap[int(off)]}:{rest}")
    index = tmp / "enwikibad-20220801-pages-articles-multistream-index.txt.bz2"
    index.write_bytes(bz2.compress("\n".join(lines).encode() + b"\n"))
    return dump, index, new_offsets[which]


def _first_film(xml: bytes, fault: Callable[[bytes], bytes]) -> bytes:
    start = xml.find(b"<page>")
    end = xml.find(b"</page>", start) + 7
    return xml[:start] + fault(xml[start:end]) + xml[end:]


def test_truncated_stream_names_file_and_offset(tmp_path):
    dump, index, offset = rebuild(tmp_path, 2, lambda b: b[: len(b) // 2], compressed=True)
    with pytest.raises(DataError) as err:
        scan_dump(str(dump), str(index), SELECT, workers=1)
    msg = str(err.value)
    assert str(dump) in msg and f"byte offset {offset}" in msg and "truncated" in msg
    assert "--on-error skip" in msg


def test_truncated_stream_is_skipped_and_counted(tmp_path):
    dump, index, _ = rebuild(tmp_path, 2, lambda b: b[: len(b) // 2], compressed=True)
    scan = scan_dump(str(dump), str(index), SELECT, workers=2, chunk_bytes=1, on_error="skip")
    assert scan.stats.bad_streams == 1
    assert len(scan.records) == FILMS - 9  # stream 2 holds 9 of the films
    assert len(scan.stats.errors) == 1


def test_malformed_xml_in_a_film_page_names_file_and_offset(tmp_path):
    def break_title(xml: bytes) -> bytes:
        return _first_film(xml, lambda p: p.replace(b"</title>", b"", 1))

    dump, index, offset = rebuild(tmp_path, 4, break_title)
    with pytest.raises(DataError, match="malformed XML") as err:
        scan_dump(str(dump), str(index), SELECT, workers=2, chunk_bytes=1)
    assert str(dump) in str(err.value) and f"byte offset {offset}" in str(err.value)
    scan = scan_dump(str(dump), str(index), SELECT, workers=1, on_error="skip")
    assert scan.stats.bad_pages == 1 and len(scan.records) == FILMS - 1


def test_unclosed_page_is_malformed(tmp_path):
    dump, index, offset = rebuild(tmp_path, 1, lambda x: x.replace(b"</page>", b"", 1))
    with pytest.raises(DataError, match=f"byte offset {offset}.*never closed"):
        scan_dump(str(dump), str(index), SELECT, workers=1)


def test_invalid_utf8_names_file_and_offset(tmp_path):
    def bad_bytes(xml: bytes) -> bytes:
        return _first_film(xml, lambda p: p.replace(b"<title>", b"<title>\xff\xfe", 1))

    dump, index, offset = rebuild(tmp_path, 5, bad_bytes)
    with pytest.raises(DataError, match="invalid UTF-8") as err:
        scan_dump(str(dump), str(index), SELECT, workers=1)
    assert str(dump) in str(err.value) and f"byte offset {offset}" in str(err.value)


def test_truncated_file_without_index_names_the_offset(tmp_path):
    raw = DUMP.read_bytes()
    cut = tmp_path / "enwikicut-20220801-pages-articles.xml.bz2"
    cut.write_bytes(raw[: len(raw) - 5000])
    with pytest.raises(DataError, match=rf"{cut.name}.*(truncated|corrupt)"):
        scan_dump(str(cut), None, SELECT)


def test_index_beyond_the_end_of_the_file(tmp_path):
    raw = DUMP.read_bytes()
    cut = tmp_path / "enwikicut-20220801-pages-articles-multistream.xml.bz2"
    cut.write_bytes(raw[:300_000])
    with pytest.raises(DataError, match="truncated or the index belongs to another dump"):
        scan_dump(str(cut), str(INDEX), SELECT)


def test_failed_build_publishes_nothing_and_keeps_the_previous_output(tmp_path):
    out = tmp_path / "out"
    good = WikiBuildConfig(
        dump=str(DUMP),
        index=str(INDEX),
        category=r"^\d{4} films$",
        out=str(out),
        workers=1,
    )
    before = build_wiki_dataset(good)
    dump, index, _ = rebuild(tmp_path, 2, lambda b: b[:-100], compressed=True)
    bad = good.model_copy(update={"dump": str(dump), "index": str(index)})
    with pytest.raises(DataError):
        build_wiki_dataset(bad)
    assert load_card(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out", dump.name, index.name]
    )  # no staging folder left behind
    fresh = tmp_path / "fresh"
    with pytest.raises(DataError):
        build_wiki_dataset(bad.model_copy(update={"out": str(fresh)}))
    assert not fresh.exists()


def test_skip_mode_publishes_with_the_counts_in_the_card(tmp_path):
    dump, index, offset = rebuild(tmp_path, 2, lambda b: b[:-100], compressed=True)
    cfg = WikiBuildConfig(
        dump=str(dump),
        index=str(index),
        category=r"^\d{4} films$",
        out=str(tmp_path / "out"),
        workers=1,
        on_error="skip",
    )
    card = build_wiki_dataset(cfg)
    assert card["counts"]["bad_streams"] == 1
    assert card["counts"]["docs"] == FILMS - 9
    assert f"byte offset {offset}" in card["errors"][0]
    on_disk = json.loads((tmp_path / "out" / "card.json").read_text())
    assert on_disk["counts"] == card["counts"]


def _endless_page_dump(tmp: Path, text_mib: int) -> tuple[Path, Path, int]:
    """The fixture, then a page whose text runs `text_mib` MiB and never closes; with an index.

    Written streamed: the text is one compressed MiB of "a" repeated, bz2 streams
    concatenated as multistream dumps are, so a few kB on disk expand to the full text
    (a bz2 bomb, in effect). Returns the dump, its index and the endless page's offset.
    """
    dump = tmp / "enwikiendless-20220801-pages-articles-multistream.xml.bz2"
    mib_of_a = bz2.compress(b"a" * (1 << 20))
    with open(dump, "wb") as f:
        f.write(DUMP.read_bytes())
        offset = f.tell()
        f.write(bz2.compress(b"<page><title>Endless</title><ns>0</ns><id>99</id><revision>"
                             b"<id>1</id><text>"))
        for _ in range(text_mib):
            f.write(mib_of_a)
    index = tmp / "enwikiendless-20220801-pages-articles-multistream-index.txt.bz2"
    index.write_bytes(bz2.compress(bz2.decompress(INDEX.read_bytes()).rstrip(b"\n")
                                   + f"\n{offset}:99:Endless\n".encode()))
    return dump, index, offset


@pytest.mark.parametrize("indexed", [False, True], ids=["streaming", "indexed"])
def test_a_page_that_never_closes_stops_the_scan_at_the_page_limit_not_at_the_end(
        tmp_path, indexed):
    dump, index, offset = _endless_page_dump(tmp_path, text_mib=256)
    started = time.perf_counter()
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as err:
            scan_dump(str(dump), str(index) if indexed else None, SELECT,
                      max_page_bytes=2 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 10
    assert peak < 24 << 20, f"{peak / (1 << 20):.0f} MiB held for a 2 MiB page limit"
    message = str(err.value)
    assert str(dump) in message and "is not closed after 2 MiB" in message
    assert "max_page_mb (--max-page-mb, now 2)" in message
    where = re.search(r"byte offset (\d+)", message)
    if indexed:
        assert int(where.group(1)) == offset  # the stream that holds the page
    else:
        assert offset < int(where.group(1)) <= dump.stat().st_size  # read up to there


def test_the_page_limit_is_a_build_setting_and_a_damaged_build_publishes_nothing(tmp_path):
    dump, index, _ = _endless_page_dump(tmp_path, text_mib=8)
    cfg = WikiBuildConfig(dump=str(dump), index=str(index), category=r"^\d{4} films$",
                          out=str(tmp_path / "out"), workers=1, max_page_mb=1)
    with pytest.raises(DataError, match=r"not closed after 1 MiB.*--max-page-mb, now 1\)"):
        build_wiki_dataset(cfg)
    assert not (tmp_path / "out").exists()
    card = build_wiki_dataset(cfg.model_copy(update={"max_page_mb": 16, "on_error": "skip"}))
    assert card["counts"]["bad_streams"] == 1 and card["counts"]["docs"] == FILMS
