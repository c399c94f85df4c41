"""Keys under one root, on a local disk or in an object store, each operation retried.

One class over fsspec that branches on the URL scheme of its root, as
OLMo-core's `io.py` does: a local folder by default, `s3://bucket/prefix` for
AWS or any S3-compatible store (MinIO). Callers name files by *keys*
(`"checkpoints/3f2a/step-000100"`) relative to that root and never learn
which backend they are on. Every operation runs under pit's one retry rule
(`pit.retry`); after the last attempt a transient fault becomes a
:class:`~pit.errors.StorageUnavailableError`, which names the endpoint and
the fix and which Prefect's task retries take up, while bad input (a missing
bucket, rejected credentials) becomes a plain :class:`~pit.errors.StorageError`.
botocore's and s3fs's own retry loops are turned off so that one policy, set
in :class:`StorageConfig`, decides how long pit waits for an outage.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit

import fsspec

from pit.errors import StorageError, StorageUnavailableError
from pit.retry import RetryPolicy, is_transient, retry, service_error
from pit.storage.config import MAX_ATTEMPTS_ENV, StorageConfig
from pit.storage.faults import CREDENTIAL_FIX, REJECTED_CREDENTIAL_CODES, missing_credentials, short
from pit.storage.manifest import STAGING_MARKERS, is_publication, local_files, write_local_atomic

T = TypeVar("T")


class Backend:
    """Keys under one root, on a local disk or in an object store: plain files, retried.

    Construct from a :class:`StorageConfig` or a root URL. Nothing is
    contacted until the first operation; :meth:`check` fails early with the
    same clear errors. :class:`~pit.storage.Store` adds published outputs on top.
    """

    def __init__(self, config: StorageConfig | str | os.PathLike[str] | None = None) -> None:
        if config is None:
            config = StorageConfig()
        elif not isinstance(config, StorageConfig):
            config = StorageConfig(root=os.fspath(config))
        self.config = config
        parts = urlsplit(config.root)
        scheme = parts.scheme if len(parts.scheme) > 1 else ""
        self.scheme = "file" if scheme in ("", "file") else scheme
        self.endpoint: str | None = None
        self._checked = False
        if self.scheme == "file":
            local = parts.path if scheme == "file" else config.root
            self.root = Path(local).expanduser().resolve().as_posix()
            self.fs: fsspec.AbstractFileSystem = fsspec.filesystem("file", auto_mkdir=True)
        elif self.scheme in ("s3", "s3a"):
            self.bucket = parts.netloc
            if not self.bucket:
                raise StorageError(
                    f"storage root {config.root!r} names no bucket; use s3://bucket/prefix"
                )
            self.root = f"s3://{self.bucket}/{parts.path.strip('/')}".rstrip("/")
            self.endpoint = config.resolved_endpoint()
            self.fs = self._s3_filesystem()
        else:
            self.root = config.root.rstrip("/")
            self.fs = fsspec.filesystem(self.scheme, skip_instance_cache=True)

    def _s3_filesystem(self) -> fsspec.AbstractFileSystem:
        import s3fs

        client_kwargs: dict[str, Any] = {}
        if self.endpoint:
            client_kwargs["endpoint_url"] = self.endpoint
        if self.config.region:
            client_kwargs["region_name"] = self.config.region
        extra: dict[str, Any] = {}
        if self.config.profile:
            extra["profile"] = self.config.profile
        fs = s3fs.S3FileSystem(
            client_kwargs=client_kwargs,
            config_kwargs={
                "retries": {"max_attempts": 1, "mode": "standard"},
                "connect_timeout": self.config.connect_timeout_s,
                "read_timeout": self.config.read_timeout_s,
            },
            # A cached instance or listing would outlive a restarted server or a
            # writer in another process; the store is shared, so always ask.
            skip_instance_cache=True,
            use_listings_cache=False,
            **extra,
        )
        fs.retries = 1
        return fs

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root!r})"

    @property
    def is_local(self) -> bool:
        """Whether outputs live on this machine's disk (renames are atomic there)."""
        return self.scheme == "file"

    # -- keys and URLs -----------------------------------------------------------------------

    @staticmethod
    def join(*parts: str) -> str:
        """Join key parts with `/`, dropping empty parts and stray slashes."""
        return "/".join(p.strip("/") for p in parts if p and p.strip("/"))

    def url(self, key: str = "") -> str:
        """The full path or URL of a key, as a user would paste it into a shell."""
        key = key.strip("/")
        if ".." in key.split("/"):
            raise ValueError(f"key {key!r} escapes the store root")
        return f"{self.root}/{key}" if key else self.root

    def _where(self) -> str:
        if self.scheme not in ("s3", "s3a"):
            return self.root
        return f"{self.root} (endpoint {self.endpoint or 'AWS default'})"

    # -- the retry policy --------------------------------------------------------------------

    def _call(self, what: str, url: str, fn: Callable[[], T]) -> T:
        """Run one storage operation under the retry policy, translating failures.

        A missing key stays a FileNotFoundError (naming the URL): it is an
        answer the caller may expect, not a failure of the store.
        """
        if not self._checked and self.scheme in ("s3", "s3a"):
            self.check()
        return self._retry(what, url, fn)

    def _retry(self, what: str, url: str, fn: Callable[[], T]) -> T:
        started = time.monotonic()
        policy = RetryPolicy(self.config.max_attempts, self.config.backoff_s,
                             self.config.backoff_max_s)
        try:
            return retry(fn, what=f"{what} {url}", policy=policy, explain=short)
        except Exception as exc:
            raise self._translate(
                exc, what, url, self.config.max_attempts, time.monotonic() - started
            ) from None

    def _translate(
        self, exc: Exception, what: str, url: str, attempts: int, elapsed: float
    ) -> Exception:
        code, status = service_error(exc)
        if missing_credentials(exc):
            return StorageError(
                f"no AWS credentials found to {what} {url} at {self._where()}: {CREDENTIAL_FIX}"
            )
        if code in REJECTED_CREDENTIAL_CODES:
            return StorageError(
                f"the S3 endpoint rejected the credentials ({code}) to {what} {url} at "
                f"{self._where()}: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile"
            )
        if code == "NoSuchBucket":
            return self._no_bucket()
        if code in ("AccessDenied", "AllAccessDisabled") or status == 403:
            return StorageError(
                f"access denied to {what} {url} at {self._where()}: the credentials in use lack "
                "permission; grant s3:GetObject/PutObject/ListBucket/DeleteObject on the bucket "
                "or pick another --artifact-root"
            )
        if is_transient(exc):
            return StorageUnavailableError(
                f"cannot {what} {url}: the store at {self._where()} failed {attempts} time(s) "
                f"over {elapsed:.1f} s ({short(exc)}). Is the S3 endpoint up? Set "
                "AWS_ENDPOINT_URL (or storage.endpoint_url) to its address, or leave both unset "
                f"for AWS itself; storage.max_attempts (or {MAX_ATTEMPTS_ENV}) sets how many "
                "tries pit makes before leaving it to the task's retries."
            )
        if isinstance(exc, FileNotFoundError):
            return FileNotFoundError(f"no such key in the artifact store: {url}")
        if isinstance(exc, PermissionError) and self.is_local:
            return StorageError(
                f"permission denied to {what} {url}: make the folder writable or choose another "
                "--artifact-root"
            )
        if isinstance(exc, (OSError, ValueError)) and self.scheme in ("s3", "s3a"):
            return StorageError(f"cannot {what} {url} at {self._where()}: {short(exc)}")
        return exc

    def _no_bucket(self) -> StorageError:
        endpoint = f" --endpoint-url {self.endpoint}" if self.endpoint else ""
        return StorageError(
            f"bucket {self.bucket!r} does not exist at {self._where()}: create it with "
            f"`aws s3 mb s3://{self.bucket}{endpoint}` (or the MinIO console), or set "
            "--artifact-root / storage.root to an existing bucket"
        )

    def check(self) -> None:
        """Fail now, with a clear message, if the store cannot be used.

        For S3 this asks for the bucket once per Store, which is what turns a
        missing bucket, missing credentials or a dead endpoint into one
        readable error instead of a FileNotFoundError on the first read.
        """
        if self.scheme in ("s3", "s3a"):

            def head() -> None:
                try:
                    self.fs.call_s3("head_bucket", Bucket=self.bucket)
                except Exception as exc:
                    if service_error(exc) == ("404", 404) or service_error(exc)[0] in (
                        "NoSuchBucket",
                        "NotFound",
                    ):
                        raise self._no_bucket() from None
                    raise

            self._retry("reach bucket", f"s3://{self.bucket}", head)
        elif self.is_local:
            Path(self.root).mkdir(parents=True, exist_ok=True)
        self._checked = True

    # -- plain operations --------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        """Whether a file or a non-empty folder exists at `key`."""
        url = self.url(key)
        return self._call("check", url, lambda: self.fs.exists(url))

    def open(self, key: str, mode: str = "rb") -> IO[Any]:
        """Open a key as a file; only the opening is retried, not the streaming after it."""
        url = self.url(key)
        if "w" in mode and self.is_local:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
        return self._call("open", url, lambda: self.fs.open(url, mode))

    def read_bytes(self, key: str) -> bytes:
        url = self.url(key)
        return self._call("read", url, lambda: self.fs.cat_file(url))

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write a whole object; readers see the old content or the new, never a mix.

        S3 PUTs are atomic already; locally the bytes go to a sibling temporary
        file that is renamed over the target.
        """
        url = self.url(key)
        if self.is_local:
            self._call("write", url, lambda: write_local_atomic(Path(url), data))
        else:
            self._call("write", url, lambda: self.fs.pipe_file(url, data))

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def write_json(self, key: str, obj: Any) -> None:
        self.write_bytes(key, json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n")

    def _list_url(self, url: str) -> list[str]:
        """The paths directly under `url`, as the filesystem names them; none when absent."""

        def listing() -> list[str]:
            try:
                return self.fs.ls(url, detail=False)
            except FileNotFoundError:
                return []

        return self._call("list", url, listing)

    def ls(self, key: str = "") -> list[str]:
        """Keys directly under `key`, sorted; an absent folder lists as empty.

        Staging folders of publishes in flight (`*.tmp-*`, `*.old-*`) and the
        publication folders of S3 outputs (`.pit-*`) are left out, so a caller
        scanning for outputs never trips over one.
        """
        url = self.url(key)
        base = self.fs._strip_protocol(url).rstrip("/")
        out = []
        for path in self._list_url(url):
            name = self.fs._strip_protocol(path).rstrip("/")[len(base) :].strip("/")
            if name and not any(m in name for m in STAGING_MARKERS) and not is_publication(name):
                out.append(self.join(key, name))
        return sorted(out)

    def rm(self, key: str) -> None:
        """Remove a key or a whole folder; removing what is not there is fine."""
        url = self.url(key)

        def remove() -> None:
            with contextlib.suppress(FileNotFoundError):
                if self.fs.exists(url):
                    self.fs.rm(url, recursive=True)

        self._call("remove", url, remove)

    def _files(self, key: str) -> dict[str, int]:
        """Relative path → size of every file under a key (one listing call on S3)."""
        url = self.url(key)
        base = self.fs._strip_protocol(url).rstrip("/") + "/"

        def find() -> dict[str, Any]:
            try:
                return self.fs.find(url, detail=True)
            except FileNotFoundError:
                return {}

        found = self._call("list", url, find)
        return {
            path[len(base) :]: int(info.get("size") or 0)
            for path, info in found.items()
            if path.startswith(base) and info.get("type", "file") != "directory"
        }

    def put_dir(
        self,
        local_dir: str | os.PathLike[str],
        key: str,
        *,
        progress: Callable[[str], None] | None = None,
    ) -> list[str]:
        """Upload a local folder's files under `key`, each retried on its own.

        Retrying per file means a blip mid-checkpoint costs one file, not the
        whole upload. Returns the relative paths uploaded.
        """
        local = Path(local_dir)
        rels = local_files(local)
        for rel in rels:
            url = self.url(self.join(key, rel))
            src = (local / rel).as_posix()
            self._call("upload", url, lambda src=src, url=url: self.fs.put_file(src, url))
            if progress is not None:
                progress(rel)
        return rels

    def get_file(self, key: str, local_path: str | os.PathLike[str]) -> Path:
        """Download one key to a local file (its folder is made); retried as a whole."""
        target = Path(local_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        url = self.url(key)
        self._call("download", url, lambda: self.fs.get_file(url, target.as_posix()))
        return target

    def get_dir(self, key: str, local_dir: str | os.PathLike[str]) -> Path:
        """Download every file under `key` into `local_dir`; returns that folder."""
        dest = Path(local_dir)
        for rel in sorted(self._files(key)):
            self.get_file(self.join(key, rel), dest / rel)
        dest.mkdir(parents=True, exist_ok=True)
        return dest
