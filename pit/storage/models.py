"""Model folders in a remote store, fetched to local disk for `from_pretrained`."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from pit.errors import CorruptOutputError, ModelNotFoundError
from pit.storage.cache import cached_copy
from pit.storage.manifest import MANIFEST, manifest_id
from pit.storage.store import Store

log = logging.getLogger(__name__)

DEFAULT_MODEL_CACHE = "~/.cache/pit/models"


def fetch_model(url: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Download a model folder from an `s3://` (or other fsspec) URL once; return the local copy.

    A folder published by pit (with a manifest) goes through
    :meth:`Store.fetch_dir`: checked file by file, reused while it matches,
    fetched again once republished. A folder uploaded by hand (a
    `config.json`, no manifest) is taken with a warning, since nothing can
    vouch that it is complete; its copy is checked against the sizes the
    store lists. The copy lives under `cache_dir` (default
    `~/.cache/pit/models`) in a folder named by a hash of the URL.
    """
    store = Store(url)
    root = Path(cache_dir or DEFAULT_MODEL_CACHE).expanduser()
    dest = root / hashlib.sha256(store.root.encode()).hexdigest()[:16]
    manifest = store.read_manifest("")
    if manifest is None:
        if not store.exists("config.json"):
            raise ModelNotFoundError(
                f"model {url} not found: there is no {MANIFEST} or config.json under it. "
                "Check the URI (a folder holding config.json and model.safetensors), "
                "or use a local folder or a Hugging Face id."
            )
        log.warning("model %s has no %s; downloading it unverified", url, MANIFEST)
        files = {rel: {"size": size} for rel, size in store._files("").items()}
        return cached_copy(store, "", dest, files, manifest_id({"files": files}))
    if not store.verify(""):
        raise ModelNotFoundError(
            f"model {url} is incomplete or corrupt (its files do not match its {MANIFEST}); "
            "publish it again"
        )
    try:
        return store.fetch_dir("", dest)
    except CorruptOutputError as e:
        raise ModelNotFoundError(
            f"model {url}: {'; '.join(e.problems)} after download; publish it again"
        ) from e
