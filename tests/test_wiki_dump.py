"""Finding the newest finished dump on a mirror and downloading it, over a folder and real HTTP."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from real_data import ENWIKI_FILMS

from pit.errors import DataError
from pit.wiki.dump import DumpFile, download, fetch_latest, find_latest
from pit.wiki.reader import scan_dump
from pit.wiki.select import PageSelector

FIXTURE = ENWIKI_FILMS
DUMP = FIXTURE / "enwikifilms-20220801-pages-articles-multistream.xml.bz2"
INDEX = FIXTURE / "enwikifilms-20220801-pages-articles-multistream-index.txt.bz2"


def make_mirror(root: Path) -> Path:
    """A mirror like dumps.wikimedia.org: an older finished dump and a newer one still running."""
    for date, status in (("20230101", "done"), ("20230201", "in-progress"), ("20221201", "done")):
        folder = root / "enwiki" / date
        folder.mkdir(parents=True)
        files = {}
        for src, suffix in (
            (DUMP, "pages-articles-multistream.xml.bz2"),
            (INDEX, "pages-articles-multistream-index.txt.bz2"),
        ):
            name = f"enwiki-{date}-{suffix}"
            shutil.copy(src, folder / name)
            data = src.read_bytes()
            files[name] = {
                "size": len(data),
                "url": f"/enwiki/{date}/{name}",
                "sha1": hashlib.sha1(data).hexdigest(),
            }
        status_doc = {
            "jobs": {"articlesmultistreamdump": {"status": status, "files": files}},
            "version": "0.8",
        }
        (folder / "dumpstatus.json").write_text(json.dumps(status_doc))
    return root


def test_newest_finished_dump_is_chosen_not_the_newest_folder(tmp_path):
    mirror = make_mirror(tmp_path / "mirror")
    info = find_latest(str(mirror))
    assert info.date == "20230101"
    assert info.dump.name == "enwiki-20230101-pages-articles-multistream.xml.bz2"
    assert info.dump.size == DUMP.stat().st_size
    with pytest.raises(DataError, match="cannot list .*dewiki"):
        find_latest(str(mirror), wiki="dewiki")
    for status in mirror.glob("enwiki/*/dumpstatus.json"):
        status.write_text(status.read_text().replace('"done"', '"in-progress"'))
    with pytest.raises(DataError, match="no finished `articlesmultistreamdump`.*20230201"):
        find_latest(str(mirror))


def test_download_resumes_a_partial_file_and_verifies_sha1(tmp_path):
    mirror = make_mirror(tmp_path / "mirror")
    info = find_latest(str(mirror))
    dest = tmp_path / "cache"
    dest.mkdir()
    (dest / (info.dump.name + ".part")).write_bytes(DUMP.read_bytes()[:100_000])
    path = download(info.dump, dest, chunk=50_000)
    assert path.read_bytes() == DUMP.read_bytes()
    assert not (dest / (info.dump.name + ".part")).exists()
    bad = DumpFile(info.index.name, info.index.url, info.index.size, "0" * 40)
    with pytest.raises(DataError, match="sha1 differs"):
        download(bad, tmp_path / "other")
    assert not any((tmp_path / "other").iterdir())


class RangeHandler(SimpleHTTPRequestHandler):
    """http.server with byte ranges, as real dump mirrors serve them."""

    ranges: list[str] = []

    def log_message(self, *args) -> None:
        pass

    def send_head(self):
        rng = self.headers.get("Range")
        path = self.translate_path(self.path)
        if not rng or os.path.isdir(path) or not os.path.exists(path):
            return super().send_head()
        self.ranges.append(f"{self.path} {rng}")
        data = Path(path).read_bytes()
        m = re.match(r"bytes=(\d+)-(\d*)", rng)
        start = int(m.group(1))
        end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return io.BytesIO(data[start : end + 1])


@pytest.fixture
def http_mirror(tmp_path):
    root = make_mirror(tmp_path / "mirror")
    RangeHandler.ranges = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_fetch_latest_over_http_resumes_and_reads(http_mirror, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    name = "enwiki-20230101-pages-articles-multistream.xml.bz2"
    (cache / (name + ".part")).write_bytes(DUMP.read_bytes()[:123_456])
    info, dump, index = fetch_latest(http_mirror, cache)
    assert info.date == "20230101"
    assert dump.read_bytes() == DUMP.read_bytes()
    dump_ranges = [r.split(" bytes=")[1] for r in RangeHandler.ranges if name in r]
    assert dump_ranges and dump_ranges[0].startswith("123456-"), RangeHandler.ranges
    scan = scan_dump(str(dump), str(index), PageSelector(category=r"^\d{4} films$"))
    assert len(scan.records) == 31


def test_cli_builds_from_the_newest_finished_dump_on_a_mirror(tmp_path):
    import typer
    from typer.testing import CliRunner

    from pit.wiki.cli import wiki

    app = typer.Typer()
    app.command("wiki")(wiki)
    app.command("noop")(lambda: None)
    mirror = make_mirror(tmp_path / "mirror")
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        [
            "wiki",
            "--dump",
            str(mirror),
            "--category",
            r"^\d{4} films$",
            "--out",
            str(out),
            "--cache",
            str(tmp_path / "cache"),
            "--workers",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    card = json.loads((out / "card.json").read_text())
    assert card["dump_date"] == "20230101" and card["counts"]["docs"] == 31
    assert (tmp_path / "cache" / "enwiki-20230101-pages-articles-multistream.xml.bz2").exists()
