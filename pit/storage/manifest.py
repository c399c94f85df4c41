"""The manifest that makes a folder a published output, and checks of files against it.

`MANIFEST.json` lists every file of an output with its size and sha256. It is
written last, so its presence means "complete"; a reader compares what it
finds (or downloads) with it before trusting a single byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pit.errors import StorageError
from pit.storage.hashing import file_sha256

MANIFEST = "MANIFEST.json"
"""Name of the manifest inside a published output; its presence means "complete"."""

MANIFEST_FORMAT = 1
STAGING_MARKERS = (".tmp-", ".old-")
"""Infixes of the sibling folders a publish or a download builds and swaps; never outputs."""

LEFTOVER = re.compile(r"\.(tmp|old)-[0-9a-f]{12}$")
"""The whole shape of those names (`<name>.tmp-<12 hex>`): nothing else is ever pruned."""

PUBLICATION_PREFIX = ".pit-"
"""Start of the folder under an S3 output's key that holds one publication's files."""

_PUBLICATION = re.compile(r"^\.pit-\d{8}T\d{6}Z-[0-9a-f]{12}$")


def new_publication() -> str:
    """A fresh publication folder name: its UTC start time (sorts by age) and a random id."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{PUBLICATION_PREFIX}{stamp}-{uuid.uuid4().hex[:12]}"


def is_publication(name: str) -> bool:
    """Whether a folder name is one :func:`new_publication` made."""
    return bool(_PUBLICATION.match(name))

_RESERVED_MANIFEST_KEYS = ("files", "format", "published_at", "root")


def local_files(folder: Path) -> list[str]:
    """Relative paths of every file under `folder` but the manifest, sorted."""
    if not folder.is_dir():
        raise StorageError(f"cannot publish {folder}: it is not a folder")
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST
    )


def build_manifest(folder: Path, manifest: Mapping[str, Any] | None) -> dict[str, Any]:
    """The caller's fields plus `files` (size and sha256 of each), `format`, `published_at`."""
    user = dict(manifest or {})
    clash = [k for k in _RESERVED_MANIFEST_KEYS if k in user]
    if clash:
        raise ValueError(f"manifest keys {clash} are reserved for the store")
    files = {
        rel: {"size": (folder / rel).stat().st_size, "sha256": file_sha256(folder / rel)}
        for rel in local_files(folder)
    }
    return {
        **user,
        "format": MANIFEST_FORMAT,
        "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": files,
    }


def manifest_id(manifest: Mapping[str, Any]) -> str:
    """sha256 of a manifest's canonical JSON: which publication of a key a copy holds."""
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def local_problems(folder: Path, files: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What is wrong with a local copy, given a manifest's `files`; empty when it matches.

    Every file's size, and its sha256 where the entry has one, so a flipped
    byte is caught as surely as a truncated file.
    """
    bad = []
    for rel, entry in sorted(files.items()):
        path = folder / rel
        if not path.is_file():
            bad.append(f"{rel} is missing")
        elif path.stat().st_size != entry["size"] or (
            "sha256" in entry and file_sha256(path) != entry["sha256"]
        ):
            bad.append(f"{rel} does not match its size or sha256")
    return bad


def write_local_atomic(path: Path, data: bytes) -> None:
    """Write a file through a sibling temporary and a rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{uuid.uuid4().hex[:12]}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
