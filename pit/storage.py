"""The artifact store: every path pit reads or writes goes through here.

One module over fsspec that branches on the URL scheme of its root, as
OLMo-core's `io.py` does: a local folder by default, `s3://bucket/prefix` for
AWS or any S3-compatible store (MinIO). Callers name outputs by *keys*
(`"checkpoints/3f2a/step-000100"`) relative to that root and never learn which
backend they are on.

Three promises the rest of pit builds on:

* **Atomic publish.** An output (a data set, a checkpoint, a model) is a folder
  with a `MANIFEST.json` that lists every file with its size and sha256. The
  manifest is written last, so a reader that trusts only folders with a
  manifest never sees half an output. Locally the folder is built under
  `<key>.tmp-<uuid>` and renamed into place; on S3, where a rename is a copy of
  every object, files are uploaded under `<key>/` directly and the manifest
  object is what makes them visible.
* **Retries.** Every operation is retried with exponential backoff on transient
  failures (connection refused or reset, timeouts, 5xx, throttling). After the
  last attempt a :class:`~pit.errors.StorageError` names the endpoint and the
  fix. botocore's and s3fs's own retry loops are turned off so that one policy,
  set in :class:`StorageConfig`, decides how long pit waits for an outage.
* **No secrets.** Credentials come only from the standard AWS environment
  variables, shared profiles or an instance role; the config holds at most a
  profile *name*. Error messages and log records are scrubbed of the secret
  key and session token even if a backend echoes them.

Content addressing (:func:`fingerprint`) lives here too: an output's key
carries a hash of its config and its inputs, and :meth:`Store.cached` says
whether that output is already finished, so it can be reused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit

import fsspec
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pit.errors import StorageError

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
"""Name of the manifest inside a published output; its presence means "complete"."""

MANIFEST_FORMAT = 1
_RESERVED_MANIFEST_KEYS = ("files", "format", "published_at")
_STAGING_MARKERS = (".tmp-", ".old-")
_SECRET_ENV_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
_CREDENTIAL_FIX = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for "
    "temporary credentials), or AWS_PROFILE / storage.profile naming a profile in "
    "~/.aws/credentials"
)
_THROTTLING_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "RequestTimeTooSkewed",
    }
)
_REJECTED_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)

T = TypeVar("T")


class StorageConfig(BaseModel):
    """Where artifacts live and how hard to try when the store misbehaves.

    There are deliberately no key fields: configs end up in MLflow params and
    Prefect UIs, so credentials stay in the environment where AWS tools look.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    root: str = Field(
        "./pit-runs/artifacts",
        description="Local folder or s3://bucket/prefix under which every output is stored.",
    )
    endpoint_url: str | None = Field(
        None,
        description="S3 endpoint for MinIO or another S3-compatible store. Unset: "
        "AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL, then AWS itself.",
    )
    region: str | None = Field(
        None, description="S3 region. Unset: AWS_REGION / AWS_DEFAULT_REGION or the profile's."
    )
    profile: str | None = Field(
        None, description="Name of an AWS profile to take credentials from. Unset: AWS_PROFILE."
    )
    max_attempts: int = Field(
        5, ge=1, description="Tries per operation before giving up on a transient failure."
    )
    backoff_s: float = Field(
        0.5, ge=0, description="Wait before the second try; doubles on each further try."
    )
    backoff_max_s: float = Field(8.0, ge=0, description="Upper bound on one wait between tries.")
    connect_timeout_s: float = Field(5.0, gt=0, description="Seconds to open a connection.")
    read_timeout_s: float = Field(60.0, gt=0, description="Seconds to wait for a response.")

    @field_validator("root")
    @classmethod
    def _root_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("storage root is empty; give a folder or s3://bucket/prefix")
        return v

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_is_http(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"endpoint_url {v!r} must start with http:// or https://")
        return v

    def resolved_endpoint(self) -> str | None:
        """The endpoint S3 requests go to, resolved the way the AWS CLI resolves it."""
        return (
            self.endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or None
        )


# ---------------------------------------------------------------------------------------------
# Content addressing


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(_jsonable(v) for v in obj)
    if isinstance(obj, Path):
        return obj.as_posix()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise TypeError(f"cannot fingerprint a {type(obj).__name__}; pass plain data or a model")


def _drop(data: Any, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        if not isinstance(node, dict) or part not in node:
            raise ValueError(f"fingerprint exclude {dotted!r} names no field of the config")
        node = node[part]
    if not isinstance(node, dict) or leaf not in node:
        raise ValueError(f"fingerprint exclude {dotted!r} names no field of the config")
    del node[leaf]


def fingerprint(
    config: Any,
    *,
    exclude: Iterable[str] = (),
    inputs: Mapping[str, str] | Iterable[str] = (),
) -> str:
    """sha256 (hex) of a config and the fingerprints of the outputs it reads.

    The *whole* config enters the hash unless a field is listed in `exclude`
    (dotted paths such as `"tracking.uri"`), the opposite of opting fields in:
    forgetting to list a field then costs a recomputation, never a stale
    reuse. An `exclude` that names no field raises, since it is most likely a
    typo that silently keeps the field in. Named `inputs` are hashed by name,
    unnamed ones in the order given, because stage order matters.
    """
    data = _jsonable(config)
    for dotted in exclude:
        _drop(data, dotted)
    ins: Any = (
        {str(k): str(v) for k, v in inputs.items()}
        if isinstance(inputs, Mapping)
        else [str(v) for v in inputs]
    )
    payload = json.dumps(
        {"config": data, "inputs": ins},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a local file, read in chunks so multi-GB weights fit in memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Error classification


def _redact(text: str) -> str:
    for var in _SECRET_ENV_VARS:
        secret = os.environ.get(var)
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend([e.__cause__, e.__context__])


def _client_error(exc: BaseException) -> tuple[str, int]:
    """The S3 error code and HTTP status anywhere in the exception chain, if any."""
    for e in _chain(exc):
        response = getattr(e, "response", None)
        if isinstance(response, dict) and "Error" in response:
            code = str(response["Error"].get("Code", ""))
            status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            return code, status
    return "", 0


def _is_transient(exc: BaseException) -> bool:
    """Whether waiting and trying again may succeed (network trouble, overload)."""
    code, status = _client_error(exc)
    if code in _THROTTLING_CODES or status >= 500 or status == 429:
        return True
    if code:
        return False
    from botocore import exceptions as bce

    transient = (
        bce.EndpointConnectionError,
        bce.ConnectionClosedError,
        bce.ConnectTimeoutError,
        bce.ReadTimeoutError,
        bce.HTTPClientError,
        bce.ResponseStreamingError,
        ConnectionError,
        TimeoutError,
        socket.timeout,
    )
    for e in _chain(exc):
        if isinstance(e, transient):
            return True
        if type(e).__module__.startswith("aiohttp") and (
            "Connect" in type(e).__name__
            or "Disconnect" in type(e).__name__
            or "Payload" in type(e).__name__
        ):
            return True
        if type(e).__name__ == "FSTimeoutError":
            return True
    return False


def _missing_credentials(exc: BaseException) -> bool:
    from botocore import exceptions as bce

    return any(
        isinstance(e, (bce.NoCredentialsError, bce.PartialCredentialsError)) for e in _chain(exc)
    )


def _short(exc: BaseException) -> str:
    code, _ = _client_error(exc)
    name = code or type(exc).__name__
    text = str(exc).splitlines()[0] if str(exc) else ""
    return _redact(f"{name}: {text}" if text else name)[:300]


# ---------------------------------------------------------------------------------------------
# The store


class Store:
    """Keys under one root, on a local disk or in an object store.

    Construct from a :class:`StorageConfig` or a root URL. Nothing is
    contacted until the first operation; :meth:`check` fails early with the
    same clear errors.
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
        return f"Store({self.root!r})"

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
        attempts = self.config.max_attempts
        started = time.monotonic()
        for attempt in range(1, attempts + 1):
            try:
                return fn()
            except Exception as exc:
                if _is_transient(exc) and attempt < attempts:
                    delay = min(
                        self.config.backoff_s * 2 ** (attempt - 1), self.config.backoff_max_s
                    )
                    delay *= random.uniform(0.5, 1.0)
                    log.warning(
                        "%s %s failed (%s); retrying in %.2f s (attempt %d of %d)",
                        what,
                        url,
                        _short(exc),
                        delay,
                        attempt,
                        attempts,
                    )
                    time.sleep(delay)
                    continue
                raise self._translate(exc, what, url, attempt, time.monotonic() - started) from None
        raise AssertionError("unreachable: the loop returns or raises")

    def _translate(
        self, exc: Exception, what: str, url: str, attempts: int, elapsed: float
    ) -> Exception:
        code, status = _client_error(exc)
        if _missing_credentials(exc):
            return StorageError(
                f"no AWS credentials found to {what} {url} at {self._where()}: {_CREDENTIAL_FIX}"
            )
        if code in _REJECTED_CREDENTIAL_CODES:
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
        if _is_transient(exc):
            return StorageError(
                f"cannot {what} {url}: the store at {self._where()} failed {attempts} time(s) "
                f"over {elapsed:.1f} s ({_short(exc)}). Is the S3 endpoint up? Set "
                "AWS_ENDPOINT_URL (or storage.endpoint_url) to its address, or leave both unset "
                "for AWS itself; storage.max_attempts sets how long pit waits."
            )
        if isinstance(exc, FileNotFoundError):
            return FileNotFoundError(f"no such key in the artifact store: {url}")
        if isinstance(exc, PermissionError) and self.is_local:
            return StorageError(
                f"permission denied to {what} {url}: make the folder writable or choose another "
                "--artifact-root"
            )
        if isinstance(exc, (OSError, ValueError)) and self.scheme in ("s3", "s3a"):
            return StorageError(f"cannot {what} {url} at {self._where()}: {_short(exc)}")
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
                    if _client_error(exc) == ("404", 404) or _client_error(exc)[0] in (
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
            self._call("write", url, lambda: _write_local_atomic(Path(url), data))
        else:
            self._call("write", url, lambda: self.fs.pipe_file(url, data))

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def write_json(self, key: str, obj: Any) -> None:
        self.write_bytes(key, json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n")

    def ls(self, key: str = "") -> list[str]:
        """Keys directly under `key`, sorted; an absent folder lists as empty.

        Staging folders of publishes in flight (`*.tmp-*`, `*.old-*`) are left
        out, so a caller scanning for outputs never trips over one.
        """
        url = self.url(key)

        def listing() -> list[str]:
            try:
                return self.fs.ls(url, detail=False)
            except FileNotFoundError:
                return []

        base = self.fs._strip_protocol(url).rstrip("/")
        out = []
        for path in self._call("list", url, listing):
            name = self.fs._strip_protocol(path).rstrip("/")[len(base) :].strip("/")
            if name and not any(m in name for m in _STAGING_MARKERS):
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
        rels = _local_files(local)
        for rel in rels:
            url = self.url(self.join(key, rel))
            src = (local / rel).as_posix()
            self._call("upload", url, lambda src=src, url=url: self.fs.put_file(src, url))
            if progress is not None:
                progress(rel)
        return rels

    def get_dir(self, key: str, local_dir: str | os.PathLike[str]) -> Path:
        """Download every file under `key` into `local_dir`; returns that folder."""
        dest = Path(local_dir)
        for rel in sorted(self._files(key)):
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            url = self.url(self.join(key, rel))
            self._call(
                "download", url, lambda url=url, t=target: self.fs.get_file(url, t.as_posix())
            )
        dest.mkdir(parents=True, exist_ok=True)
        return dest

    # -- published outputs -------------------------------------------------------------------

    def publish(
        self,
        local_dir: str | os.PathLike[str],
        key: str,
        manifest: Mapping[str, Any] | None = None,
        *,
        progress: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Publish a local folder as the output `key`, all or nothing.

        `manifest` holds the caller's own fields (step, config, fingerprint);
        pit adds `files` (relative path → size and sha256), `format` and
        `published_at`. Any earlier output at `key` is withdrawn first, so
        readers never see old files under a new manifest. If this raises, no
        manifest exists for `key`, and calling it again completes the output.
        `progress` is called with each relative path once it is stored.
        """
        local = Path(local_dir)
        full = _build_manifest(local, manifest)
        if self.is_local:
            staging = Path(self.url(key) + f".tmp-{uuid.uuid4().hex[:12]}")

            def copy(src: str, dst: str) -> None:
                shutil.copy2(src, dst)
                if progress is not None:
                    progress(Path(src).relative_to(local).as_posix())

            try:
                shutil.copytree(local, staging, copy_function=copy)
                self._commit_local(staging, key, full)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            return full
        self.rm(self.join(key, MANIFEST))
        self.rm(key)
        self.put_dir(local, key, progress=progress)
        self.write_json(self.join(key, MANIFEST), full)
        return full

    def _commit_local(self, staging: Path, key: str, full: dict[str, Any]) -> None:
        """Write the manifest into a finished staging folder and rename it into place."""
        dest = Path(self.url(key))
        _write_local_atomic(staging / MANIFEST, json.dumps(full, indent=2).encode() + b"\n")
        dest.parent.mkdir(parents=True, exist_ok=True)
        old = None
        if dest.exists():
            old = dest.with_name(dest.name + f".old-{uuid.uuid4().hex[:12]}")
            os.replace(dest, old)
        os.replace(staging, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    @contextlib.contextmanager
    def staging(self, key: str, manifest: dict[str, Any] | None = None) -> Iterator[Path]:
        """Write an output's files into a local folder; it is published on clean exit.

        `manifest` may be filled in inside the block (final metrics, say). On
        an exception nothing is published and the folder is removed. For a
        local store the folder already sits beside its destination, so
        publishing is one rename and no copy.
        """
        manifest = {} if manifest is None else manifest
        if self.is_local:
            folder = Path(self.url(key) + f".tmp-{uuid.uuid4().hex[:12]}")
            folder.mkdir(parents=True)
        else:
            folder = Path(tempfile.mkdtemp(prefix="pit-staging-"))
        try:
            yield folder
            if self.is_local:
                self._commit_local(folder, key, _build_manifest(folder, manifest))
            else:
                self.publish(folder, key, manifest)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def read_manifest(self, key: str) -> dict[str, Any] | None:
        """The manifest of a published output, or None if it is not (yet) complete."""
        try:
            data = self.read_json(self.join(key, MANIFEST))
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:
            log.warning("ignoring %s: its %s is not valid JSON", self.url(key), MANIFEST)
            return None
        return data if isinstance(data, dict) and "files" in data else None

    def is_complete(self, key: str) -> bool:
        """Whether `key` holds a finished output (its manifest exists)."""
        return self.exists(self.join(key, MANIFEST))

    def problems(self, key: str, *, hashes: bool = False) -> list[str]:
        """What is wrong with a published output; empty when it matches its manifest.

        Sizes come from one listing; `hashes=True` also reads every file back
        and compares its sha256, which costs a full download.
        """
        manifest = self.read_manifest(key)
        if manifest is None:
            return [f"{self.url(key)} has no {MANIFEST}, so it was never completely published"]
        present = self._files(key)
        found: list[str] = []
        for rel, entry in sorted(manifest["files"].items()):
            url = self.url(self.join(key, rel))
            if rel not in present:
                found.append(f"{url} is listed in the manifest but missing")
            elif present[rel] != entry["size"]:
                found.append(f"{url} has {present[rel]} bytes, the manifest says {entry['size']}")
            elif hashes and self._sha256(url) != entry["sha256"]:
                found.append(f"{url} does not match the sha256 in its manifest")
        return found

    def verify(self, key: str, *, hashes: bool = False) -> bool:
        """Whether a published output is intact; logs a warning naming each problem."""
        found = self.problems(key, hashes=hashes)
        for problem in found:
            log.warning("corrupt or incomplete output: %s", problem)
        return not found

    def cached(self, key: str, *, hashes: bool = False) -> dict[str, Any] | None:
        """The manifest of a finished, intact output at `key`, for reuse; else None.

        A corrupt output is reported (a warning) and treated as absent, so the
        caller recomputes and republishes it rather than trusting it.
        """
        manifest = self.read_manifest(key)
        if manifest is None or not self.verify(key, hashes=hashes):
            return None
        return manifest

    def _sha256(self, url: str) -> str:
        def digest() -> str:
            h = hashlib.sha256()
            with self.fs.open(url, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            return h.hexdigest()

        return self._call("read", url, digest)


def fetch_model(url: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Download a model folder from an `s3://` (or other fsspec) URL once; return the local copy.

    A folder published by pit (with a manifest) is checked file by file
    against it; a folder uploaded by hand (a `config.json`, no manifest) is
    taken with a warning, since nothing can vouch that it is complete. The
    copy is cached under `cache_dir` (default `~/.cache/pit/models`) by a hash
    of the URL and the manifest's publication time, so a republished model is
    fetched again.
    """
    from pit.errors import ModelNotFoundError

    store = Store(url)
    manifest = store.read_manifest("")
    if manifest is None:
        if not store.exists("config.json"):
            raise ModelNotFoundError(
                f"model {url} not found: there is no {MANIFEST} or config.json under it. "
                "Check the URI (a folder holding config.json and model.safetensors), "
                "or use a local folder or a Hugging Face id."
            )
        log.warning("model %s has no %s; downloading it unverified", url, MANIFEST)
    elif not store.verify(""):
        raise ModelNotFoundError(
            f"model {url} is incomplete or corrupt (its files do not match its {MANIFEST}); "
            "publish it again"
        )
    stamp = (manifest or {}).get("published_at", "")
    root = Path(cache_dir) if cache_dir else Path("~/.cache/pit/models").expanduser()
    dest = root / hashlib.sha256(f"{store.root}|{stamp}".encode()).hexdigest()[:16]
    if (dest / ".complete").exists():
        return dest
    partial = dest.with_name(dest.name + f".partial-{uuid.uuid4().hex[:8]}")
    try:
        store.get_dir("", partial)
        if manifest is not None:
            bad = [rel for rel, e in manifest["files"].items()
                   if file_sha256(partial / rel) != e["sha256"]]
            if bad:
                raise ModelNotFoundError(
                    f"model {url}: {', '.join(sorted(bad))} did not match the sha256 in its "
                    f"{MANIFEST} after download; publish it again"
                )
        (partial / ".complete").touch()
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(partial, dest)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return dest


# ---------------------------------------------------------------------------------------------
# Local helpers


def _local_files(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise StorageError(f"cannot publish {folder}: it is not a folder")
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST
    )


def _build_manifest(folder: Path, manifest: Mapping[str, Any] | None) -> dict[str, Any]:
    user = dict(manifest or {})
    clash = [k for k in _RESERVED_MANIFEST_KEYS if k in user]
    if clash:
        raise ValueError(f"manifest keys {clash} are reserved for the store")
    files = {
        rel: {"size": (folder / rel).stat().st_size, "sha256": file_sha256(folder / rel)}
        for rel in _local_files(folder)
    }
    return {
        **user,
        "format": MANIFEST_FORMAT,
        "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": files,
    }


def _write_local_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{uuid.uuid4().hex[:12]}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
