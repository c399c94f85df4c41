"""Where dump files are read from: an HTTP mirror or any fsspec location, every request retried.

A monthly refresh reads a mirror nobody here runs, over links that drop. Every
request goes through :func:`pit.retry.retry`, so a timeout, a dropped
connection or a 503 is waited out, and once the budget is spent it surfaces as
a :class:`~pit.errors.TransientError` (which Prefect retries again later),
never as "no such file" and never as a quiet fallback to older data.

HTTP goes through httpx rather than fsspec so that a resumed download can send
`If-Range`: the server then returns the rest of the same file (206), or, when
the file changed or it ignores ranges, the whole new one (200), which we write
from byte 0 instead of appending it to old bytes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

import fsspec
import httpx

from pit.errors import DataError, TransientError
from pit.retry import TRANSIENT_STATUS, HTTPStatusFault, RetryPolicy, describe, is_transient, retry

T = TypeVar("T")


def is_http(url: str) -> bool:
    return url.startswith(("http://", "https://"))


@dataclass(frozen=True)
class Stat:
    """What a server says about one version of a file: its size and its validators."""

    size: int | None
    etag: str | None = None
    modified: str | None = None

    @property
    def validator(self) -> str | None:
        """What tells this version from the next: a strong ETag, else Last-Modified."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.modified

    @classmethod
    def of_response(cls, response: httpx.Response) -> Stat:
        size = None
        total = re.search(r"/(\d+)$", response.headers.get("content-range", ""))
        if total:
            size = int(total.group(1))
        elif response.status_code == 200 and "content-length" in response.headers:
            size = int(response.headers["content-length"])
        return cls(size, response.headers.get("etag"), response.headers.get("last-modified"))

    @classmethod
    def of_info(cls, info: dict[str, Any]) -> Stat:
        modified = info.get("LastModified") or info.get("last_modified") or info.get("mtime")
        etag = info.get("ETag") or info.get("etag")
        return cls(info.get("size"), etag, None if modified is None else str(modified))


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def _check(response: httpx.Response, url: str) -> None:
    """Raise for a reply that is not a success: not found, wait and retry, or bad input."""
    status = response.status_code
    if status < 400:
        return
    if status in (404, 410):
        raise FileNotFoundError(f"{url} is not on the server (HTTP {status})")
    if status in TRANSIENT_STATUS:
        raise HTTPStatusFault(url, status, _retry_after(response))
    raise DataError(
        f"{url} answered HTTP {status}; check the URL (and that the mirror allows downloads)"
    )


class Remote:
    """Reads dump mirrors: folder listings, status files, file sizes and resumable downloads.

    One HTTP connection pool for all requests; close it (or use `with`) when done.
    """

    def __init__(self, policy: RetryPolicy | None = None, timeout_s: float = 60.0) -> None:
        self.policy = policy or RetryPolicy()
        self.timeout_s = timeout_s
        self._client: httpx.Client | None = None

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout_s, follow_redirects=True)
        return self._client

    def _retry(
        self, what: str, url: str, fn: Callable[[], T], progress: Callable[[], object] | None = None
    ) -> T:
        started = time.monotonic()
        try:
            return retry(fn, what=f"{what} {url}", policy=self.policy, progress=progress)
        except Exception as exc:
            if not is_transient(exc) or isinstance(exc, TransientError):
                raise
            raise TransientError(
                f"cannot {what} {url}: still failing after {self.policy.attempts} tries in a row "
                f"over {time.monotonic() - started:.0f} s ({describe(exc)}). The mirror may be "
                "down or overloaded: run again later (a download resumes where it stopped) or "
                "point --dump at another mirror."
            ) from exc

    def listing(self, url: str) -> list[str]:
        """Names of the entries directly in a folder; FileNotFoundError if there is none."""
        if not is_http(url):
            fs, path = fsspec.core.url_to_fs(url)
            return [str(p).rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]

        def get() -> str:
            response = self.http.get(url.rstrip("/") + "/")
            _check(response, url)
            return response.text

        hrefs = re.findall(r'href="([^"?#]+)"', self._retry("list", url, get))
        return [unquote(h.rstrip("/").rsplit("/", 1)[-1]) for h in hrefs]

    def read_text(self, url: str) -> str | None:
        """A small text file (a status file), or None when the server has no such file."""

        def get() -> str:
            if not is_http(url):
                with fsspec.open(url, "rt") as f:
                    return f.read()
            response = self.http.get(url)
            _check(response, url)
            return response.text

        try:
            return self._retry("read", url, get)
        except FileNotFoundError:
            return None

    def stat(self, url: str) -> Stat:
        """Size and validators of a file as the server has it now."""

        def head() -> Stat:
            if not is_http(url):
                fs, path = fsspec.core.url_to_fs(url)
                return Stat.of_info(fs.info(path))
            response = self.http.head(url)
            if response.status_code in (405, 501):
                with self.http.stream("GET", url, headers={"Range": "bytes=0-0"}) as response:
                    _check(response, url)
                    return Stat.of_response(response)
            _check(response, url)
            return Stat.of_response(response)

        try:
            return self._retry("look up", url, head)
        except FileNotFoundError as e:
            raise DataError(f"{e}; check the URL or the mirror's dumpstatus.json") from e

    def fetch(
        self, url: str, part: Path, stat: Stat, on_restart: Callable[[Stat], None], chunk: int
    ) -> Stat:
        """Bring `part` up to the whole of `url`, resuming while the server has the same file.

        `stat` is the version the bytes in `part` belong to. When the server
        sends the file from byte 0 instead (it changed, or ranges are not
        honoured), `on_restart` gets the new version's Stat before `part` is
        truncated, so a record of what `part` holds is never older than its bytes.
        Returns the Stat of the version `part` now holds whole. `chunk` is the
        read size for fsspec sources; HTTP bytes are written as they arrive, so
        a dropped connection loses none of them.
        """

        def size() -> int:
            return part.stat().st_size if part.exists() else 0

        def restarted(new: Stat) -> None:
            nonlocal stat
            stat = new
            on_restart(new)

        def attempt() -> None:
            nonlocal stat
            if is_http(url):
                stat = self._fetch_http(url, part, stat, restarted)
            else:
                stat = self._fetch_fsspec(url, part, stat, restarted, chunk)
            if stat.size is not None and size() < stat.size:
                raise ConnectionError(f"the transfer ended at byte {size()} of {stat.size}")

        self._retry("download", url, attempt, progress=size)
        return stat

    def _fetch_http(
        self, url: str, part: Path, stat: Stat, on_restart: Callable[[Stat], None]
    ) -> Stat:
        have = part.stat().st_size if part.exists() else 0
        if stat.size is not None and have >= stat.size:
            if have == stat.size:
                return stat
            have = 0
        headers = {}
        if have:
            headers["Range"] = f"bytes={have}-"
            if stat.validator:
                headers["If-Range"] = stat.validator
        with self.http.stream("GET", url, headers=headers) as response:
            if response.status_code == 416:
                on_restart(stat)
                part.write_bytes(b"")
                raise ConnectionError(f"{url} refused the range from byte {have}; starting over")
            _check(response, url)
            got = Stat.of_response(response)
            start = re.match(r"bytes (\d+)-", response.headers.get("content-range", ""))
            resumed = response.status_code == 206 and start and int(start.group(1)) == have
            if not resumed:
                if response.status_code == 206:
                    raise ConnectionError(f"{url} sent a range that does not start at {have}")
                on_restart(got)
            with open(part, "ab" if resumed else "wb") as out:
                for block in response.iter_bytes():
                    out.write(block)
        return got if got.size is not None else stat

    def _fetch_fsspec(
        self, url: str, part: Path, stat: Stat, on_restart: Callable[[Stat], None], chunk: int
    ) -> Stat:
        fs, path = fsspec.core.url_to_fs(url)
        now = Stat.of_info(fs.info(path))
        have = part.stat().st_size if part.exists() else 0
        if now.validator != stat.validator or (now.size is not None and have > now.size):
            have = 0
        if have == 0:
            on_restart(now)
        mode = "ab" if have else "wb"
        with fs.open(path, "rb", block_size=chunk) as src, open(part, mode) as out:
            src.seek(have)
            while block := src.read(chunk):
                out.write(block)
        return now
