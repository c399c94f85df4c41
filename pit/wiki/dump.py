"""Find the newest finished dump on a mirror and download it, resumable and verified.

A mirror is anything laid out like https://dumps.wikimedia.org: `<wiki>/<YYYYMMDD>/`
folders, each with a `dumpstatus.json` that says which jobs are `done` and lists
their files with size and sha1. Dumps are written over several days, so the
newest folder is often incomplete: we take the newest date whose
`articlesmultistreamdump` job is done, never just the newest folder.

Downloads go to `<name>.part` and resume from its length (an HTTP range
request through fsspec), because a 24 GB file over a flaky link rarely arrives
in one go; the file is renamed to its final name only after its size and sha1
match dumpstatus.json, so a file with the final name is always a whole one.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import fsspec

from pit.errors import DataError

JOB = "articlesmultistreamdump"


@dataclass(frozen=True)
class DumpFile:
    """One file of a dump job, as dumpstatus.json describes it."""

    name: str
    url: str
    size: int | None
    sha1: str | None


@dataclass(frozen=True)
class DumpInfo:
    """The multistream dump and its index for one wiki and date."""

    wiki: str
    date: str
    dump: DumpFile
    index: DumpFile


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def list_dates(mirror: str, wiki: str = "enwiki") -> list[str]:
    """The `YYYYMMDD` folders of a wiki on a mirror, newest first."""
    root = _join(mirror, wiki)
    fs, path = fsspec.core.url_to_fs(root)
    try:
        entries = fs.ls(path, detail=False)
    except (OSError, FileNotFoundError) as e:
        raise DataError(
            f"cannot list {root}: {e}; pass a mirror base whose `{wiki}/` folder "
            "holds YYYYMMDD dump folders (like https://dumps.wikimedia.org)"
        ) from e
    dates = {m.group(1) for e in entries if (m := re.search(r"(\d{8})/?$", str(e)))}
    return sorted(dates, reverse=True)


def _file_from(name: str, meta: dict, mirror: str, folder: str) -> DumpFile:
    url = meta.get("url")
    if url and url.startswith("/"):
        url = _join(mirror, url)
    elif not url:
        url = _join(folder, name)
    return DumpFile(name=name, url=url, size=meta.get("size"), sha1=meta.get("sha1"))


def read_status(mirror: str, wiki: str, date: str) -> DumpInfo | None:
    """The multistream files of one date if its job is done, else None."""
    folder = _join(mirror, wiki, date)
    try:
        with fsspec.open(_join(folder, "dumpstatus.json"), "rt") as f:
            status = json.load(f)
    except (OSError, FileNotFoundError, json.JSONDecodeError):
        return None
    job = status.get("jobs", {}).get(JOB, {})
    if job.get("status") != "done":
        return None
    files = job.get("files", {})
    dump = [n for n in files if n.endswith("-pages-articles-multistream.xml.bz2")]
    index = [n for n in files if n.endswith("-pages-articles-multistream-index.txt.bz2")]
    if not dump or not index:
        return None
    return DumpInfo(
        wiki,
        date,
        _file_from(dump[0], files[dump[0]], mirror, folder),
        _file_from(index[0], files[index[0]], mirror, folder),
    )


def find_latest(mirror: str, wiki: str = "enwiki") -> DumpInfo:
    """The newest date whose multistream job is done on the mirror."""
    dates = list_dates(mirror, wiki)
    for date in dates:
        info = read_status(mirror, wiki, date)
        if info is not None:
            return info
    raise DataError(
        f"no finished `{JOB}` for {wiki} on {mirror} (dates seen: {', '.join(dates) or 'none'}); "
        "wait for the running dump to finish or point at another mirror"
    )


def sha1_of(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(file: DumpFile, dest_dir: str | Path, chunk: int = 1 << 22) -> Path:
    """Fetch one dump file into `dest_dir`, resuming a `.part` file; verify size and sha1.

    A final file that is already there and verifies is not fetched again.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / file.name
    part = dest_dir / (file.name + ".part")
    if final.exists() and _verified(final, file, raise_=False):
        return final
    have = part.stat().st_size if part.exists() else 0
    if file.size is not None and have > file.size:
        part.unlink()
        have = 0
    try:
        with fsspec.open(file.url, "rb", block_size=chunk) as src, open(part, "ab") as out:
            if have:
                src.seek(have)
            while block := src.read(chunk):
                out.write(block)
    except (OSError, ValueError) as e:
        raise DataError(
            f"download of {file.url} stopped at byte "
            f"{part.stat().st_size if part.exists() else 0}: {e}; run again to resume from there"
        ) from e
    _verified(part, file, raise_=True)
    part.replace(final)
    return final


def _verified(path: Path, file: DumpFile, raise_: bool) -> bool:
    size = path.stat().st_size
    problem = None
    if file.size is not None and size != file.size:
        problem = f"has {size} bytes, dumpstatus.json says {file.size}"
    elif file.sha1 and sha1_of(path) != file.sha1:
        problem = f"sha1 differs from dumpstatus.json ({file.sha1})"
    if problem is None:
        return True
    if raise_:
        path.unlink(missing_ok=True)
        raise DataError(
            f"{file.url} downloaded to {path} {problem}; the partial file was removed, "
            "run again to download it afresh"
        )
    return False


def fetch_latest(
    mirror: str, dest_dir: str | Path, wiki: str = "enwiki"
) -> tuple[DumpInfo, Path, Path]:
    """Find the newest finished dump, download dump and index; return (info, dump, index)."""
    info = find_latest(mirror, wiki)
    return info, download(info.dump, dest_dir), download(info.index, dest_dir)
