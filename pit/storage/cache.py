"""Local copies of remote outputs: downloaded once, verified, safe for processes that share them.

Training, evaluation and resume read outputs (data sets, checkpoints,
models) from a local folder. For a remote store that folder is a copy under
a cache root, made so that it can be trusted:

* processes fetching one key take turns under a file lock beside the copy
  (`.<name>.lock`), so the first downloads and the others find its copy;
  the lock only saves work, it is not what makes the copy trustworthy;
* files are downloaded into a sibling folder of a unique name
  (`<dest>.tmp-<id>`, locked by its writer), each checked against the
  manifest's size and sha256, and only a complete, verified folder is
  renamed into place; where locks are not to be had, two processes each
  build their own and the second rename finds the first copy there;
* what a killed fetch left (`<dest>.tmp-*`, `<dest>.old-*`) is removed by
  the next fetch of that key (see `leftovers.py`);
* a marker file in the copy records which publication of the key it holds
  (the sha256 of the manifest), so a republished key is fetched again;
* a cached copy is reused only if its marker names the current manifest
  and every file still matches it, so a file damaged on the local disk
  is fetched again rather than trained on.

Re-hashing a reused copy costs a read of it, about a second per GB: less
than its download, and the price of never resuming from a flipped bit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pit.errors import CorruptOutputError, StorageError
from pit.storage.backend import Backend
from pit.storage.leftovers import claim_new_dir, file_lock, prune
from pit.storage.manifest import MANIFEST, local_problems, write_local_atomic

log = logging.getLogger(__name__)

MARKER = ".pit-fetched.json"
"""File inside a cached copy naming the manifest it was verified against."""

_SWAP_TRIES = 5


def _marker_id(folder: Path) -> str | None:
    try:
        return json.loads((folder / MARKER).read_text()).get("manifest")
    except (OSError, ValueError, AttributeError):
        return None


def _usable(dest: Path, files: Mapping[str, Mapping[str, Any]], identity: str) -> bool:
    """Whether `dest` is a copy of this very publication whose files all still match it."""
    if not dest.is_dir():
        return False
    if _marker_id(dest) != identity:
        log.info("cached copy %s holds another publication; fetching it again", dest)
        return False
    bad = local_problems(dest, files)
    if bad:
        log.warning("cached copy %s is damaged (%s); fetching it again", dest, "; ".join(bad))
    return not bad


def _download(
    store: Backend, key: str, folder: Path, files: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    log.info("downloading %d file(s) of %s into %s", len(files), store.url(key), folder)
    """Fetch every listed file into `folder`; returns the problems (missing or mismatched files)."""
    missing = []
    for rel in sorted(files):
        try:
            store.get_file(store.join(key, rel), folder / rel)
        except FileNotFoundError:
            missing.append(rel)
    folder.mkdir(parents=True, exist_ok=True)
    present = {rel: entry for rel, entry in files.items() if rel not in missing}
    return [f"{rel} is missing" for rel in missing] + local_problems(folder, present)


def _swap_in(tmp: Path, dest: Path, files: Mapping[str, Mapping[str, Any]], identity: str) -> None:
    """Rename a verified copy into place, unless an equally good one got there first.

    A rename onto an existing non-empty folder fails on POSIX, so a stale or
    damaged copy is first renamed aside (`.old-<uuid>`) and then removed;
    a process still reading it keeps its open files.
    """
    for _ in range(_SWAP_TRIES):
        try:
            os.rename(tmp, dest)
            return
        except OSError:
            if not dest.exists():
                continue
            if _usable(dest, files, identity):
                return
            old = dest.with_name(f"{dest.name}.old-{uuid.uuid4().hex[:12]}")
            with contextlib.suppress(FileNotFoundError):
                os.rename(dest, old)
            shutil.rmtree(old, ignore_errors=True)
    raise StorageError(
        f"could not move a downloaded copy into {dest}: other processes kept replacing it. "
        "Give each job its own cache folder, or retry."
    )


def cached_copy(
    store: Backend,
    key: str,
    dest: Path,
    files: Mapping[str, Mapping[str, Any]],
    identity: str,
    manifest: Mapping[str, Any] | None = None,
    *,
    files_key: str | None = None,
) -> Path:
    """`dest` holding the files of `key` as `files` describes them, downloaded only if needed.

    `identity` names the publication (see :func:`~pit.storage.manifest.manifest_id`);
    `manifest`, when given, is written into the copy as its `MANIFEST.json`;
    `files_key` is where the files lie when not directly under `key`.
    Raises :class:`CorruptOutputError`, naming each file, if the downloaded
    files do not match.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest.parent / f".{dest.name}.lock"):
        prune(dest.parent, prefix=f"{dest.name}.", stale_after_s=store.config.stale_after_s)
        if _usable(dest, files, identity):
            return dest
        with claim_new_dir(dest.parent, f"{dest.name}.tmp-") as claim:
            tmp = claim.path
            try:
                bad = _download(store, files_key if files_key is not None else key, tmp, files)
                if bad:
                    raise CorruptOutputError(f"{store.url(key)} (as downloaded)", bad)
                if manifest is not None:
                    write_local_atomic(tmp / MANIFEST,
                                       json.dumps(manifest, indent=2).encode() + b"\n")
                marker = {"manifest": identity, "source": store.url(key)}
                (tmp / MARKER).write_text(json.dumps(marker) + "\n")
                _swap_in(tmp, dest, files, identity)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return dest
