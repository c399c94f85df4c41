"""Find the newest finished dump on a mirror and download it: resumable, verified, shareable.

A mirror is anything laid out like https://dumps.wikimedia.org: `<wiki>/<YYYYMMDD>/`
folders, each with a `dumpstatus.json` that says which jobs are `done` and lists
their files with size and sha1. Dumps are written over several days, so the
newest folder is often incomplete: we take the newest date whose multistream
job is done, never just the newest folder. On enwiki the one combined file and
its index come from the `articlesmultistreamdumprecombine` job (there
`articlesmultistreamdump` holds numbered parts); small wikis have only
`articlesmultistreamdump`, with the single file. The first is preferred.

A download goes to `<name>.part`, beside `<name>.part.source.json`, a record
of which version of the remote file those bytes belong to (ETag or
Last-Modified, and size). A rerun resumes from the part's length only while
the server still has that version (HTTP `If-Range`), and starts over
otherwise, because a 24 GB file over a flaky link rarely arrives in one go but
bytes of two versions must never be joined. The file gets its final name only
once its size and sha1 match dumpstatus.json (or, for a bare URL with no
status file, the size the server gives); `<name>.source.json` then records its
version, so a `latest` URL whose file changed on the mirror is fetched again
rather than reused forever. A lock per file name lets processes share a cache:
the second waits for the first and then finds the file there.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pit.errors import DataError
from pit.wiki.remote import Remote, Stat

log = logging.getLogger(__name__)

JOBS = ("articlesmultistreamdumprecombine", "articlesmultistreamdump")
"""Jobs that may hold the combined multistream file and its index, preferred first."""
DUMP_SUFFIX = "-pages-articles-multistream.xml.bz2"
INDEX_SUFFIX = "-pages-articles-multistream-index.txt.bz2"
STATUS = "dumpstatus.json"


@dataclass(frozen=True)
class DumpFile:
    """One file of a dump job, as dumpstatus.json describes it."""

    name: str
    url: str
    size: int | None
    sha1: str | None


@dataclass(frozen=True)
class DumpInfo:
    """The multistream dump and its index for one wiki and date, and the job that made them."""

    wiki: str
    date: str
    dump: DumpFile
    index: DumpFile
    job: str = JOBS[-1]


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


@contextlib.contextmanager
def _using(remote: Remote | None) -> Iterator[Remote]:
    if remote is not None:
        yield remote
        return
    with Remote() as own:
        yield own


def plain_name(name: object, where: str) -> str:
    """`name` if it is a plain file name; a DataError if it could point outside a folder."""
    if (
        not isinstance(name, str)
        or name.strip() in ("", ".", "..")
        or any(c in name for c in "/\\\x00")
    ):
        raise DataError(
            f"{where} names a file {name!r}, which is not a plain file name; pit refuses it, "
            "since it would be written outside the download folder. The mirror is damaged or "
            "not laid out like dumps.wikimedia.org: point --dump at another one."
        )
    return name


def list_dates(mirror: str, wiki: str = "enwiki", remote: Remote | None = None) -> list[str]:
    """The `YYYYMMDD` folders of a wiki on a mirror, newest first."""
    root = _join(mirror, wiki)
    with _using(remote) as r:
        try:
            entries = r.listing(root)
        except OSError as e:
            raise DataError(
                f"cannot list {root}: {e}; pass a mirror base whose `{wiki}/` folder "
                "holds YYYYMMDD dump folders (like https://dumps.wikimedia.org)"
            ) from e
    return sorted({e for e in entries if re.fullmatch(r"\d{8}", e)}, reverse=True)


def _file_from(name: str, meta: dict[str, Any], mirror: str, folder: str) -> DumpFile:
    url = meta.get("url")
    if url and url.startswith("/"):
        url = _join(mirror, url)
    elif not url:
        url = _join(folder, name)
    return DumpFile(name=name, url=url, size=meta.get("size"), sha1=meta.get("sha1"))


def _status(text: str | None, url: str) -> dict[str, Any]:
    """The jobs of a status file; empty (with a warning) when it is not a status file."""
    if text is None:
        return {}
    try:
        status = json.loads(text)
    except json.JSONDecodeError:
        log.warning("ignoring %s: it is not valid JSON", url)
        return {}
    jobs = status.get("jobs") if isinstance(status, dict) else None
    return jobs if isinstance(jobs, dict) else {}


def _done_files(job: Any) -> dict[str, Any]:
    if not isinstance(job, dict) or job.get("status") != "done":
        return {}
    files = job.get("files")
    return files if isinstance(files, dict) else {}


def read_status(
    mirror: str, wiki: str, date: str, remote: Remote | None = None
) -> DumpInfo | None:
    """The multistream files of one date if a job that holds them is done, else None.

    A status file that is missing or not JSON means "not finished"; one that
    cannot be read for a network fault raises TransientError (after retries),
    so a flaky link never passes for "this month's dump is not ready yet".
    """
    folder = _join(mirror, wiki, date)
    url = _join(folder, STATUS)
    with _using(remote) as r:
        jobs = _status(r.read_text(url), url)
    for job in JOBS:
        files = _done_files(jobs.get(job))
        for name in files:
            plain_name(name, f"{url} (job {job})")
        dump = [n for n in files if n.endswith(DUMP_SUFFIX)]
        index = [n for n in files if n.endswith(INDEX_SUFFIX)]
        if dump and index:
            return DumpInfo(
                wiki,
                date,
                _file_from(dump[0], files[dump[0]], mirror, folder),
                _file_from(index[0], files[index[0]], mirror, folder),
                job,
            )
    return None


def find_latest(mirror: str, wiki: str = "enwiki", remote: Remote | None = None) -> DumpInfo:
    """The newest date whose multistream file and index are finished on the mirror."""
    with _using(remote) as r:
        dates = list_dates(mirror, wiki, r)
        for date in dates:
            info = read_status(mirror, wiki, date, r)
            if info is not None:
                return info
    raise DataError(
        f"no finished `{JOBS[0]}` or `{JOBS[1]}` job with the multistream file and its index "
        f"for {wiki} on {mirror} (dates seen: {', '.join(dates) or 'none'}); "
        "wait for the running dump to finish or point at another mirror"
    )


def file_at_url(url: str, remote: Remote | None = None) -> DumpFile:
    """A dump file named by its URL, with size and sha1 when a status file beside it lists them."""
    folder, _, last = url.rstrip("/").rpartition("/")
    name = plain_name(last, url)
    status_url = _join(folder, STATUS)
    with _using(remote) as r:
        jobs = _status(r.read_text(status_url), status_url)
    for job in jobs.values():
        files = job.get("files") if isinstance(job, dict) else None
        meta = files.get(name) if isinstance(files, dict) else None
        if isinstance(meta, dict):
            return DumpFile(name, url, meta.get("size"), meta.get("sha1"))
    return DumpFile(name, url, None, None)


def sha1_of(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (made if absent), waiting for whoever holds it."""
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process that is downloading into %s", path.parent)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _write_record(path: Path, url: str, stat: Stat, **extra: Any) -> None:
    record = {"url": url, "validator": stat.validator, "size": stat.size, **extra}
    path.write_text(json.dumps(record, indent=2) + "\n")


def _problem(path: Path, file: DumpFile, stat: Stat) -> str | None:
    """Why the bytes at `path` are not the file, or None when they are."""
    size = path.stat().st_size
    want, says = (file.size, STATUS) if file.size is not None else (stat.size, "the server")
    if want is not None and size != want:
        return f"has {size} bytes, {says} says {want}"
    if file.sha1 and sha1_of(path) != file.sha1:
        return f"sha1 differs from {STATUS} ({file.sha1})"
    return None


def _is_current(final: Path, file: DumpFile, remote: Remote) -> bool:
    """Whether a downloaded file is still the one the status or the server describes."""
    if file.sha1 or file.size is not None:
        return _problem(final, file, Stat(None)) is None
    record = _read_record(final.with_name(final.name + ".source.json"))
    if record is None or record.get("url") != file.url or not record.get("validator"):
        return False
    now = remote.stat(file.url)
    return now.validator == record["validator"] and final.stat().st_size == now.size


def download(
    file: DumpFile, dest_dir: str | Path, chunk: int = 1 << 22, remote: Remote | None = None
) -> Path:
    """Fetch one dump file into `dest_dir`, resuming a `.part` of the same version; verify it.

    A final file that is there and still current is not fetched again. A
    resumed part that fails verification is dropped and the file downloaded
    once more from the start; a fresh download that fails is a DataError.
    """
    name = plain_name(file.name, file.url)
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    final, part = dest / name, dest / (name + ".part")
    part_record = dest / (name + ".part.source.json")
    with _using(remote) as r, _locked(dest / (name + ".lock")):
        if final.exists() and _is_current(final, file, r):
            return final
        for fresh in (False, True):
            stat = r.stat(file.url)
            record = _read_record(part_record)
            same = record is not None and (
                record.get("url") == file.url
                and record.get("validator") is not None
                and record.get("validator") == stat.validator
                and record.get("size") == stat.size
            )
            # A part from before records were kept can still be resumed when a sha1 will judge it.
            if fresh or not (same or (record is None and file.sha1)):
                part.unlink(missing_ok=True)
            resumed = part.exists() and part.stat().st_size > 0
            _write_record(part_record, file.url, stat)
            got = r.fetch(
                file.url, part, stat, lambda s: _write_record(part_record, file.url, s), chunk
            )
            problem = _problem(part, file, got)
            if problem is None:
                break
            part.unlink(missing_ok=True)
            part_record.unlink(missing_ok=True)
            if not resumed:
                raise DataError(
                    f"{file.url} downloaded to {part} {problem}; the partial file was removed, "
                    "run again to download it afresh"
                )
            log.warning("%s resumed from an earlier part %s; downloading it whole", name, problem)
        part.replace(final)
        _write_record(final.with_name(name + ".source.json"), file.url, got)
        part_record.unlink(missing_ok=True)
    return final


def fetch_latest(
    mirror: str, dest_dir: str | Path, wiki: str = "enwiki", remote: Remote | None = None
) -> tuple[DumpInfo, Path, Path]:
    """Find the newest finished dump, download dump and index; return (info, dump, index)."""
    with _using(remote) as r:
        info = find_latest(mirror, wiki, r)
        dump = download(info.dump, dest_dir, remote=r)
        return info, dump, download(info.index, dest_dir, remote=r)
