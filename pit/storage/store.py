"""Published outputs: folders that appear whole or not at all, checked against a manifest.

An output (a data set, a checkpoint, a model) is a folder with a
`MANIFEST.json` that lists every file with its size and sha256. The manifest
is written last, so a reader that trusts only folders with a manifest never
sees half an output, and every read checks the files against it.

Locally the folder is built under `<key>.tmp-<id>` (locked by its writer,
see `leftovers.py`) and renamed into place; a rename is atomic, and two
writers of one key each rename a complete folder, the last one winning.

S3 has no rename (a "move" copies every object) and no transaction over
several objects, so a publish never writes where another publish of the same
key writes. Each one uploads its files under a folder of its own beneath the
key, `<key>/.pit-<UTC time>-<random id>/`, and then writes `<key>/MANIFEST.json`
naming that folder (`"root"`) as its last step. One PUT of one object is
atomic, so a reader that goes through the manifest sees exactly one
publication's files: two writers racing on one key cannot mix their files
(the last manifest wins, complete), a writer killed mid-upload leaves a
folder no manifest names (never read), and the output the manifest named
before stays whole until the new manifest replaces it. Conditional PUTs
(If-None-Match) would only make the second writer fail, and a lock object
would outlive a killed writer; separate folders need neither. The price is
one level more in the bucket (`aws s3 cp --recursive` of an output brings
the `.pit-*` folder with it), and that leftovers need pruning: after writing
its manifest, a publish removes the folder of the manifest it replaced and
every other folder under the key whose newest object is older than
`storage.stale_after_s` (a live writer keeps adding objects; a dead one's
stop). :meth:`Store.fetch_dir` is the way back: the local folder of an
output, downloaded once into a cache and verified.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pit.errors import CorruptOutputError, StorageError
from pit.storage.backend import Backend
from pit.storage.cache import cached_copy
from pit.storage.leftovers import claim_new_dir, prune
from pit.storage.manifest import (
    MANIFEST,
    build_manifest,
    is_publication,
    local_problems,
    manifest_id,
    new_publication,
    write_local_atomic,
)

log = logging.getLogger(__name__)

_SWAP_TRIES = 5
_REFETCH_TRIES = 3


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
        pit adds `files` (relative path -> size and sha256), `format`,
        `published_at` and, on S3, `root`. Readers see the earlier output at
        `key` until this one is complete, then this one; never a mix. If this
        raises, `key` holds what it held before, and calling it again
        completes the output. `progress` is called with each relative path
        once it is stored.
        """
        local = Path(local_dir)
        full = build_manifest(local, manifest)
        if not self.is_local:
            return self._publish_remote(local, key, full, progress)
        dest = Path(self.url(key))
        prune(dest.parent, stale_after_s=self.config.stale_after_s)
        with claim_new_dir(dest.parent, f"{dest.name}.tmp-") as claim:

            def copy(src: str, dst: str) -> None:
                shutil.copy2(src, dst)
                if progress is not None:
                    progress(Path(src).relative_to(local).as_posix())

            try:
                shutil.copytree(local, claim.path, copy_function=copy, dirs_exist_ok=True)
                self._commit_local(claim.path, key, full)
            finally:
                shutil.rmtree(claim.path, ignore_errors=True)
        return full

    def _publish_remote(self, local: Path, key: str, full: dict[str, Any],
                        progress: Callable[[str], None] | None) -> dict[str, Any]:
        """Upload under a publication folder of its own, then point the manifest at it."""
        root = new_publication()
        self.put_dir(local, self.join(key, root), progress=progress)
        full["root"] = root
        replaced = self.read_manifest(key)
        self.write_json(self.join(key, MANIFEST), full)
        try:
            self._prune_remote(key, replaced)
        except (StorageError, OSError) as e:
            log.warning("published %s, but could not prune what it replaced: %s",
                        self.url(key), e)
        return full

    def _prune_remote(self, key: str, replaced: Mapping[str, Any] | None) -> None:
        """Remove publication folders under `key` that no reader will be sent to again."""
        current = self.read_manifest(key) or {}
        keep = {current.get("root")}
        superseded = (replaced or {}).get("root")
        for path in self._list_url(self.url(key)):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if not is_publication(name) or name in keep:
                continue
            folder = self.join(key, name)
            if name == superseded or self._age(folder) > self.config.stale_after_s:
                log.info("removing %s: no manifest names it any more", self.url(folder))
                self.rm(folder)
        if replaced is not None and not replaced.get("root"):
            for rel in replaced["files"]:
                self.rm(self.join(key, rel))

    def _age(self, key: str) -> float:
        """Seconds since the newest object under `key` was written (inf when there is none)."""
        url = self.url(key)

        def find() -> dict[str, Any]:
            try:
                return self.fs.find(url, detail=True)
            except FileNotFoundError:
                return {}

        found = self._call("list", url, find).values()
        stamps = [i["LastModified"].timestamp() for i in found if i.get("LastModified")]
        return time.time() - max(stamps) if stamps else float("inf")

    def _commit_local(self, staging: Path, key: str, full: dict[str, Any]) -> None:
        """Write the manifest into a finished staging folder and rename it into place.

        A rename onto a folder that is not empty fails on POSIX, so the
        output there (an older one, or a racing writer's) is first renamed
        aside and removed; a process still reading it keeps its open files.
        """
        dest = Path(self.url(key))
        write_local_atomic(staging / MANIFEST, json.dumps(full, indent=2).encode() + b"\n")
        dest.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(_SWAP_TRIES):
            try:
                os.rename(staging, dest)
                return
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
            old = dest.with_name(f"{dest.name}.old-{uuid.uuid4().hex[:12]}")
            with contextlib.suppress(FileNotFoundError):
                os.rename(dest, old)
            shutil.rmtree(old, ignore_errors=True)
        raise StorageError(f"could not move a finished output into {dest}: other writers kept "
                           "replacing it. Run one writer per output, or retry.")

    @contextlib.contextmanager
    def staging(self, key: str, manifest: dict[str, Any] | None = None) -> Iterator[Path]:
        """Write an output's files into a local folder; it is published on clean exit.

        `manifest` may be filled in inside the block (final metrics, say). On
        an exception nothing is published and the folder is removed; a
        process killed inside the block leaves the folder, which the next
        publish beside it removes. For a local store the folder already sits
        beside its destination, so publishing is one rename and no copy.
        """
        manifest = {} if manifest is None else manifest
        if self.is_local:
            dest = Path(self.url(key))
            parent, prefix = dest.parent, f"{dest.name}.tmp-"
        else:
            parent, prefix = Path(tempfile.gettempdir()) / f"pit-staging-{os.getuid()}", "out.tmp-"
        prune(parent, stale_after_s=self.config.stale_after_s)
        with claim_new_dir(parent, prefix) as claim:
            try:
                yield claim.path
                if self.is_local:
                    self._commit_local(claim.path, key, build_manifest(claim.path, manifest))
                else:
                    self.publish(claim.path, key, manifest)
            finally:
                shutil.rmtree(claim.path, ignore_errors=True)

    def read_manifest(self, key: str) -> dict[str, Any] | None:
        """The manifest of a published output, or None if it is not (yet) complete."""
        try:
            data = self.read_json(self.join(key, MANIFEST))
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:
            log.warning("ignoring %s: its %s is not valid JSON", self.url(key), MANIFEST)
            return None
        if not isinstance(data, dict) or "files" not in data:
            return None
        if data.get("root") and not is_publication(str(data["root"])):
            log.warning("ignoring %s: its %s names a files folder pit never makes (%r)",
                        self.url(key), MANIFEST, data["root"])
            return None
        return data

    def files_key(self, key: str, manifest: Mapping[str, Any]) -> str:
        """The key under which the files of the publication `manifest` describes lie."""
        return self.join(key, str(manifest.get("root") or ""))

    def read_file(self, key: str, rel: str) -> bytes:
        """One file of the published output `key`, checked against its manifest entry.

        Raises FileNotFoundError when `key` is not published or its manifest
        lists no `rel`, and :class:`CorruptOutputError` naming the file when
        its bytes do not match.
        """
        manifest = self.read_manifest(key)
        entry = (manifest or {}).get("files", {}).get(rel)
        if manifest is None or entry is None:
            raise FileNotFoundError(f"{self.url(key)} has no published file {rel}")
        data = self.read_bytes(self.join(self.files_key(key, manifest), rel))
        if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise CorruptOutputError(self.url(key), [f"{rel} does not match its size or sha256"])
        return data

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
        base = self.files_key(key, manifest)
        present = self._files(base)
        found: list[str] = []
        for rel, entry in sorted(manifest["files"].items()):
            url = self.url(self.join(base, rel))
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

        A local store returns the output's own folder once every file matches
        the manifest's size and sha256 (a byte flipped on disk is caught here,
        at the price of reading the folder once). A remote one returns a copy
        at `cache_root/<key>`, downloaded once and verified file by file
        against the manifest (see `pit.storage.cache`); later calls reuse it
        while it still matches. Raises FileNotFoundError if `key` has no
        manifest, and :class:`~pit.storage.CorruptOutputError`, naming each
        file, if the files do not match it.
        """
        unpublished = f"{self.url(key)} has no {MANIFEST}: it was never completely published"
        if self.is_local:
            folder = Path(self.url(key))
            manifest = self.read_manifest(key) if (folder / MANIFEST).is_file() else None
            if manifest is None:
                raise FileNotFoundError(unpublished)
            bad = local_problems(folder, manifest["files"])
            if bad:
                raise CorruptOutputError(self.url(key), bad)
            return folder
        dest = Path(cache_root).expanduser() / key
        for attempt in range(1, _REFETCH_TRIES + 1):
            manifest = self.read_manifest(key)
            if manifest is None:
                raise FileNotFoundError(unpublished)
            copy = {k: v for k, v in manifest.items() if k != "root"}
            try:
                return cached_copy(self, key, dest, manifest["files"], manifest_id(manifest),
                                   copy, files_key=self.files_key(key, manifest))
            except CorruptOutputError:
                now = self.read_manifest(key)
                if attempt == _REFETCH_TRIES or now is None or manifest_id(now) == manifest_id(
                        manifest):
                    raise
                log.info("%s was published again while it was read; reading the new one",
                         self.url(key))
        raise AssertionError("unreachable: the loop returns or raises")

    def _sha256(self, url: str) -> str:
        def digest() -> str:
            h = hashlib.sha256()
            with self.fs.open(url, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            return h.hexdigest()

        return self._call("read", url, digest)

