"""Finding the newest finished dump on a mirror and downloading it, over a folder and real HTTP."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from real_data import ENWIKI_FILMS

from pit.errors import DataError, TransientError
from pit.retry import RetryPolicy
from pit.wiki.dump import DumpFile, download, fetch_latest, file_at_url, find_latest
from pit.wiki.params import BuildDatasetParams
from pit.wiki.reader import scan_dump
from pit.wiki.remote import Remote
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
    with pytest.raises(DataError, match="no finished .*`articlesmultistreamdump` job.*20230201"):
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
    assert [p.name for p in (tmp_path / "other").iterdir()] == [bad.name + ".lock"]


class Mirror:
    """What a test mirror serves and does: its files, the requests it saw, faults to inject.

    `faults[path]` is a queue, one entry per coming GET of that path: "503"
    answers Service Unavailable, "drop" sends half the body and closes the
    connection, "stall" waits `stall_s` before answering (past the client's
    timeout), "replace" writes `replacements[path]` over the file just before
    answering (a mirror that changes it between a client's HEAD and its GET).
    `ranges=False` makes it ignore Range, as some servers do.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[tuple[str, str, str | None, str | None]] = []
        self.faults: dict[str, list[str]] = {}
        self.replacements: dict[str, bytes] = {}
        self.ranges = True
        self.stall_s = 1.0
        self.pace_s = 0.0

    def gets(self, path: str) -> list[tuple[str | None, str | None]]:
        """(Range, If-Range) of each GET of `path`."""
        return [(r, i) for m, p, r, i in self.requests if m == "GET" and p == path]


class MirrorHandler(BaseHTTPRequestHandler):
    """A dump mirror over HTTP: listings, byte ranges, ETag and If-Range, as real mirrors serve."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self.serve(body=False)

    def do_GET(self) -> None:
        self.serve(body=True)

    def serve(self, body: bool) -> None:
        mirror: Mirror = self.server.mirror
        path = unquote(urlsplit(self.path).path)
        rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
        mirror.requests.append((self.command, path, rng, if_range))
        queue = mirror.faults.get(path) if self.command == "GET" else None
        fault = queue.pop(0) if queue else None
        if fault == "stall":
            time.sleep(mirror.stall_s)
        if fault == "replace":
            (mirror.root / path.lstrip("/")).write_bytes(mirror.replacements[path])
        if fault == "503":
            return self.reply(503, b"busy", {"Retry-After": "0"}, body)
        target = mirror.root / path.lstrip("/")
        if target.is_dir():
            links = "".join(f'<a href="{p.name}/">{p.name}/</a>\n' for p in target.iterdir())
            return self.reply(200, f"<html><body>{links}</body></html>".encode(), {}, body)
        if not target.is_file():
            return self.reply(404, b"not found", {}, body)
        data = target.read_bytes()
        etag = f'"{hashlib.sha1(data).hexdigest()[:16]}"'
        headers = {
            "ETag": etag,
            "Last-Modified": formatdate(target.stat().st_mtime, usegmt=True),
            "Accept-Ranges": "bytes",
        }
        status, start = 200, 0
        m = re.match(r"bytes=(\d+)-", rng or "")
        if m and mirror.ranges and if_range in (None, etag, headers["Last-Modified"]):
            start, status = int(m.group(1)), 206
            if start >= len(data):
                return self.reply(416, b"", {"Content-Range": f"bytes */{len(data)}"}, body)
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        payload = data[start:]
        if fault == "drop":
            self.reply(status, payload[: len(payload) // 2], headers, body, len(payload))
            self.close_connection = True
            return None
        return self.reply(status, payload, headers, body)

    def reply(self, status, payload, headers, body, length=None) -> None:
        try:
            self.send_response(status)
            for k, v in {"Content-Length": str(len(payload) if length is None else length),
                         "Content-Type": "application/octet-stream", **headers}.items():
                self.send_header(k, v)
            self.end_headers()
            if body:
                pace = self.server.mirror.pace_s
                step = 16_384 if pace else len(payload) or 1
                for i in range(0, len(payload), step):
                    self.wfile.write(payload[i : i + step])
                    self.wfile.flush()
                    time.sleep(pace)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def serve(root: Path):
    """A mirror of `root` on 127.0.0.1; yields (base URL, Mirror)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), MirrorHandler)
    server.daemon_threads = True
    server.mirror = Mirror(root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.mirror
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http_mirror(tmp_path):
    yield from serve(make_mirror(tmp_path / "mirror"))


FAST = RetryPolicy(attempts=4, backoff_s=0.01, backoff_max_s=0.05)


def fast_remote(timeout_s: float = 5.0) -> Remote:
    return Remote(FAST, timeout_s=timeout_s)


def test_fetch_latest_over_http_resumes_and_reads(http_mirror, tmp_path):
    url, mirror = http_mirror
    cache = tmp_path / "cache"
    cache.mkdir()
    name = "enwiki-20230101-pages-articles-multistream.xml.bz2"
    (cache / (name + ".part")).write_bytes(DUMP.read_bytes()[:123_456])
    info, dump, index = fetch_latest(url, cache)
    assert info.date == "20230101"
    assert dump.read_bytes() == DUMP.read_bytes()
    assert mirror.gets(f"/enwiki/20230101/{name}")[0][0] == "bytes=123456-"
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


def write_status(folder: Path, jobs: dict[str, tuple[str, dict[str, Path | None]]]) -> None:
    """A dumpstatus.json for `folder`: job -> (status, {file name: source bytes or None})."""
    doc = {"jobs": {}, "version": "0.8"}
    for job, (status, files) in jobs.items():
        listed = {}
        for name, src in files.items():
            if src is not None:
                shutil.copy(src, folder / name)
                data = src.read_bytes()
                listed[name] = {"size": len(data), "sha1": hashlib.sha1(data).hexdigest()}
            else:
                listed[name] = {"size": 1234}
            listed[name]["url"] = f"/enwiki/{folder.name}/{name}"
        doc["jobs"][job] = {"status": status, "files": listed}
    (folder / "dumpstatus.json").write_text(json.dumps(doc))


def enwiki_folder(root: Path, date: str, recombine: str) -> None:
    """A date laid out as enwiki is: numbered parts in one job, the combined file in another."""
    folder = root / "enwiki" / date
    folder.mkdir(parents=True)
    parts = {
        f"enwiki-{date}-pages-articles-multistream{i}.xml-p{i}p{i + 9}.bz2": None
        for i in (1, 2)
    } | {f"enwiki-{date}-pages-articles-multistream-index{i}.txt-p{i}p{i + 9}.bz2": None
         for i in (1, 2)}
    combined = {
        f"enwiki-{date}-pages-articles-multistream.xml.bz2": DUMP,
        f"enwiki-{date}-pages-articles-multistream-index.txt.bz2": INDEX,
    }
    write_status(folder, {
        "articlesmultistreamdump": ("done", parts),
        "articlesmultistreamdumprecombine": (recombine, combined),
    })


def test_on_enwiki_the_combined_file_comes_from_the_recombine_job(tmp_path):
    mirror = tmp_path / "mirror"
    enwiki_folder(mirror, "20240601", "done")
    enwiki_folder(mirror, "20240701", "in-progress")  # parts done, combined file not yet
    info = find_latest(str(mirror))
    assert (info.date, info.job) == ("20240601", "articlesmultistreamdumprecombine")
    assert info.dump.name == "enwiki-20240601-pages-articles-multistream.xml.bz2"
    assert info.index.name == "enwiki-20240601-pages-articles-multistream-index.txt.bz2"
    _, dump, index = fetch_latest(str(mirror), tmp_path / "cache")
    assert dump.read_bytes() == DUMP.read_bytes() and index.read_bytes() == INDEX.read_bytes()
    small = find_latest(str(make_mirror(tmp_path / "small")))  # one job holds the single file
    assert small.job == "articlesmultistreamdump"


@pytest.mark.parametrize(
    "name",
    ["../../escaped-pages-articles-multistream.xml.bz2",
     "/tmp/abs-pages-articles-multistream.xml.bz2", "", ".."],
)
def test_status_file_names_that_are_not_plain_file_names_are_refused(tmp_path, name):
    folder = tmp_path / "mirror" / "enwiki" / "20240601"
    folder.mkdir(parents=True)
    write_status(folder, {"articlesmultistreamdump": ("done", {
        "enwiki-20240601-pages-articles-multistream.xml.bz2": DUMP,
        "enwiki-20240601-pages-articles-multistream-index.txt.bz2": INDEX,
    })})
    status = json.loads((folder / "dumpstatus.json").read_text())
    status["jobs"]["articlesmultistreamdump"]["files"][name] = {"size": 10, "url": "/x"}
    (folder / "dumpstatus.json").write_text(json.dumps(status))
    with pytest.raises(DataError, match=f"dumpstatus.json.* names a file {re.escape(repr(name))}"
                       ".*not a plain file name"):
        fetch_latest(str(tmp_path / "mirror"), tmp_path / "cache")
    with pytest.raises(DataError, match="not a plain file name"):
        download(DumpFile(name, str(DUMP), None, None), tmp_path / "cache")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mirror"]


def test_a_connection_dropped_mid_file_is_resumed_where_it_stopped(http_mirror, tmp_path):
    url, mirror = http_mirror
    path = "/enwiki/20230101/enwiki-20230101-pages-articles-multistream.xml.bz2"
    mirror.faults[path] = ["drop"] * 5  # more drops than FAST's 4 tries: each one made headway
    with fast_remote() as remote:
        _, dump, _ = fetch_latest(url, tmp_path / "cache", remote=remote)
    assert dump.read_bytes() == DUMP.read_bytes()
    size = DUMP.stat().st_size
    assert len(mirror.gets(path)) == 6
    (first, _), (second, validator), (third, again) = mirror.gets(path)[:3]
    assert first is None and second == f"bytes={size // 2}-"
    assert third == f"bytes={size // 2 + (size - size // 2) // 2}-"
    assert validator is not None and validator == again  # If-Range: the same file, or all of it


def test_http_503_is_retried_with_backoff_and_then_named(http_mirror, tmp_path):
    url, mirror = http_mirror
    status = "/enwiki/20230101/dumpstatus.json"
    path = "/enwiki/20230101/enwiki-20230101-pages-articles-multistream.xml.bz2"
    mirror.faults = {status: ["503", "503"], path: ["503", "503", "503"]}
    with fast_remote() as remote:
        info, dump, _ = fetch_latest(url, tmp_path / "cache", remote=remote)
        assert info.date == "20230101" and dump.read_bytes() == DUMP.read_bytes()
        assert len(mirror.gets(status)) == 3 and len(mirror.gets(path)) == 4
        mirror.faults[path] = ["503"] * 10
        with pytest.raises(TransientError, match=rf"cannot download {url}{path}: still failing "
                           r"after 4 tries.*HTTP 503.*run again later") as err:
            download(info.dump, tmp_path / "other", remote=remote)
    assert not isinstance(err.value, DataError)  # so the fetch task's retries take it up


def test_a_status_file_timeout_is_retried_never_a_fallback_to_last_months_dump(
    http_mirror, tmp_path
):
    url, mirror = http_mirror
    status = "/enwiki/20230101/dumpstatus.json"
    mirror.stall_s = 0.6
    mirror.faults[status] = ["stall", "drop"]
    with fast_remote(timeout_s=0.2) as remote:
        assert find_latest(url, remote=remote).date == "20230101"
        mirror.faults[status] = ["stall"] * 4
        with pytest.raises(TransientError, match=f"cannot read {url}{status}.*4 tries"):
            find_latest(url, remote=remote)


def test_a_url_is_checked_against_the_status_file_beside_it(http_mirror, tmp_path):
    url, mirror = http_mirror
    folder = "/enwiki/20230101/"
    params = BuildDatasetParams(
        dump=f"{url}{folder}enwiki-20230101-pages-articles-multistream.xml.bz2",
        index=f"{url}{folder}enwiki-20230101-pages-articles-multistream-index.txt.bz2",
        category="films", out=str(tmp_path / "out"), cache=str(tmp_path / "cache"),
    )
    file = file_at_url(params.dump)
    assert file.size == DUMP.stat().st_size
    assert file.sha1 == hashlib.sha1(DUMP.read_bytes()).hexdigest()
    dump, index = params.resolve_dump()
    assert Path(dump).read_bytes() == DUMP.read_bytes()
    status = mirror.root / "enwiki" / "20230101" / "dumpstatus.json"
    status.write_text(status.read_text().replace(file.sha1, "0" * 40))
    with pytest.raises(DataError, match="sha1 differs from dumpstatus.json"):
        params.model_copy(update={"cache": str(tmp_path / "fresh")}).resolve_dump()


def test_a_latest_file_that_changed_on_the_mirror_is_downloaded_again(http_mirror, tmp_path):
    url, mirror = http_mirror
    path = "/enwiki/latest/enwiki-latest-pages-articles-multistream-index.txt.bz2"
    (mirror.root / "enwiki" / "latest").mkdir()
    served = mirror.root / path.lstrip("/")
    served.write_bytes(INDEX.read_bytes())
    cache = tmp_path / "cache"
    with fast_remote() as remote:
        file = file_at_url(url + path, remote)
        assert (file.size, file.sha1) == (None, None)  # latest/ has no status file
        assert download(file, cache, remote=remote).read_bytes() == INDEX.read_bytes()
        assert download(file, cache, remote=remote).read_bytes() == INDEX.read_bytes()
        assert len(mirror.gets(path)) == 1  # unchanged: asked about, not fetched again
        served.write_bytes(DUMP.read_bytes()[:5000])
        assert download(file, cache, remote=remote).read_bytes() == DUMP.read_bytes()[:5000]
        assert len(mirror.gets(path)) == 2


def test_a_stale_part_is_never_appended_to(http_mirror, tmp_path):
    url, mirror = http_mirror
    path = "/enwiki/latest/enwiki-latest-pages-articles-multistream.xml.bz2"
    (mirror.root / "enwiki" / "latest").mkdir()
    served = mirror.root / path.lstrip("/")
    raw = DUMP.read_bytes()
    versions = [raw, raw[:200_000] + bytes(50_000), raw[100_000:], raw[::-1]]
    served.write_bytes(versions[0])
    cache = tmp_path / "cache"
    part = cache / (served.name + ".part")
    file = DumpFile(served.name, url + path, None, None)

    def interrupted() -> None:
        mirror.faults[path] = ["drop"]
        with Remote(RetryPolicy(attempts=1), timeout_s=5) as once, pytest.raises(TransientError):
            download(file, cache, remote=once)
        assert 0 < part.stat().st_size < served.stat().st_size

    def completed(version: bytes) -> tuple[str | None, str | None]:
        """Download again; the file must be `version`, in one GET; that GET's headers."""
        before = len(mirror.gets(path))
        assert download(file, cache, remote=remote).read_bytes() == version
        assert len(mirror.gets(path)) == before + 1
        return mirror.gets(path)[-1]

    with fast_remote() as remote:
        interrupted()  # half of version 0 in the part; the mirror then changes the file
        served.write_bytes(versions[1])
        assert completed(versions[1]) == (None, None)  # started over: no range asked
        served.write_bytes(versions[2])
        interrupted()  # half of version 2; the server then stops honouring ranges
        mirror.ranges = False
        assert completed(versions[2])[0] is not None  # a range asked, the whole file taken
        mirror.ranges = True
        served.write_bytes(bytes(1000) + versions[3][1000:])
        interrupted()  # half of an early version 3; it changes between our HEAD and our GET
        mirror.faults[path] = ["replace"]
        mirror.replacements[path] = versions[3]
        assert completed(versions[3])[1] is not None  # If-Range sent, and the server said no


SHARED_DOWNLOAD = """
import sys
from pit.wiki.dump import download, file_at_url
print(download(file_at_url(sys.argv[1]), sys.argv[2]))
"""


def test_two_downloads_of_one_file_share_one_transfer(http_mirror, tmp_path):
    url, mirror = http_mirror
    path = "/enwiki/20230101/enwiki-20230101-pages-articles-multistream.xml.bz2"
    mirror.pace_s = 0.03
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SHARED_DOWNLOAD, url + path, str(tmp_path / "cache")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert (tmp_path / "cache" / Path(path).name).read_bytes() == DUMP.read_bytes()
    assert len(mirror.gets(path)) == 1  # the second waited, then found the file whole
