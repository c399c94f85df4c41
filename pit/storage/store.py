"""Published outputs: folders that appear whole or not at all, checked against a manifest.

An output (a data set, a checkpoint, a model) is a folder with a
`MANIFEST.json` that lists every file with its size and sha256. The manifest
is written last, so a reader that trusts only folders with a manifest never
sees half an output. Locally the folder is built under `<key>.tmp-<uuid>` and
renamed into place; on S3, where a rename is a copy of every object, files are
uploaded under `<key>/` directly and the manifest object is what makes them
visible. :meth:`Store.fetch_dir` is the way back: the local folder of an
output, downloaded once into a cache and verified.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pit.storage.backend import Backend
from pit.storage.cache import cached_copy
from pit.storage.manifest import MANIFEST, build_manifest, manifest_id, write_local_atomic

log = logging.getLogger(__name__)


class Store(Backend):
    """The artifact store: keys under one root, and the published outputs among them."""

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
        full = build_manifest(local, manifest)
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
        write_local_atomic(staging / MANIFEST, json.dumps(full, indent=2).encode() + b"\n")
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
                self._commit_local(folder, key, build_manifest(folder, manifest))
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

    def fetch_dir(self, key: str, cache_root: str | os.PathLike[str]) -> Path:
        """The local folder of the published output `key`, to read it as plain files.

        A local store returns the output's own folder. A remote one returns a
        copy at `cache_root/<key>`, downloaded once and verified file by file
        against the manifest (see `pit.storage.cache`); later calls reuse it
        while it still matches the manifest. Raises FileNotFoundError if
        `key` has no manifest, and :class:`~pit.storage.CorruptOutputError`
        if the downloaded files do not match it.
        """
        unpublished = f"{self.url(key)} has no {MANIFEST}: it was never completely published"
        if self.is_local:
            folder = Path(self.url(key))
            if not (folder / MANIFEST).is_file():
                raise FileNotFoundError(unpublished)
            return folder
        manifest = self.read_manifest(key)
        if manifest is None:
            raise FileNotFoundError(unpublished)
        dest = Path(cache_root).expanduser() / key
        return cached_copy(self, key, dest, manifest["files"], manifest_id(manifest), manifest)

    def _sha256(self, url: str) -> str:
        def digest() -> str:
            h = hashlib.sha256()
            with self.fs.open(url, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            return h.hexdigest()

        return self._call("read", url, digest)

