"""The month's dump on a mirror: the newest finished one newer than the last processed.

A mirror (a folder or URL laid out like dumps.wikimedia.org) writes a dump
over several days, so the newest `<wiki>/<YYYYMMDD>/` folder is often not
finished yet: its `dumpstatus.json` decides (`pit.wiki.dump.read_status`).
A scheduled refresh polls on a few days of the month; until the new dump is
finished, the newest finished one is the one processed last month, and the
refresh is a no-op. Dates at or before the last processed one are never
read, so a poll costs one listing and a status file or two. Downloads reuse
`pit.wiki.dump.download`: resumable, checked against the status file's size
and sha1, shared by processes through a lock.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from pit.errors import DataError
from pit.wiki.dump import DumpInfo, download, list_dates, read_status
from pit.wiki.remote import Remote

log = logging.getLogger(__name__)


def _using(remote: Remote | None) -> contextlib.AbstractContextManager[Remote]:
    """The caller's connection pool, left open, or one of our own, closed after use."""
    return contextlib.nullcontext(remote) if remote is not None else Remote()


def newer_dump(mirror: str, wiki: str, after: str | None,
               remote: Remote | None = None) -> DumpInfo | None:
    """The newest finished dump of `wiki` dated after `after` (YYYYMMDD), or None.

    A mirror with no date folder at all for `wiki` is a DataError (the wrong
    URL or wiki name, not a dump still running).
    """
    with _using(remote) as r:
        dates = list_dates(mirror, wiki, r)
        if not dates:
            raise DataError(f"{mirror} has no {wiki}/YYYYMMDD dump folders; point --mirror at a "
                            "mirror base laid out like https://dumps.wikimedia.org, or check "
                            "--wiki")
        for date in dates:
            if after is not None and date <= after:
                break
            info = read_status(mirror, wiki, date, r)
            if info is not None:
                return info
            log.info("%s %s is not finished yet (dumpstatus.json)", wiki, date)
    return None


def fetch_dump(info: DumpInfo, cache: str | Path, remote: Remote | None = None
               ) -> tuple[Path, Path]:
    """Local paths of the dump and its index, downloaded into `cache` (or found there)."""
    dest = Path(cache).expanduser()
    with _using(remote) as r:
        return download(info.dump, dest, remote=r), download(info.index, dest, remote=r)
