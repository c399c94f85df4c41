"""The artifact store of a comparison, and local folders of what is published there.

Training and evaluation read models and data sets through `from_pretrained`
and `load_from_disk`, which want a local folder. On a local store the
published folder is that folder; on S3 it is a verified copy under
`<workdir>/cache` (:meth:`Store.fetch_dir`). `local_folder` is the one
place that asks for it.

Two comparisons started at once on one work folder share its outputs: each
step that computes an output (the synthetic world, the base model, a
stage) does so under `computing`, a lock per output key in
`<workdir>/locks`, so the second waits for the first and then reuses what
it published instead of training the same stage beside it, writing the same
checkpoints and replacing a folder the first is reading. Processes on other
work folders (other hosts sharing a bucket) are not held back: for them the
store's publish keeps two writers of one key from mixing their files.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

from pit.config import PitConfig
from pit.errors import StorageError
from pit.keys import is_store_key
from pit.storage import Store
from pit.storage.leftovers import file_lock


def store_for(cfg: PitConfig) -> Store:
    return Store(cfg.storage)


def cache_root(cfg: PitConfig, store: Store) -> Path:
    """Copies of one store's outputs go under `<workdir>/cache`, apart from other stores'."""
    tag = hashlib.sha256(store.root.encode()).hexdigest()[:12]
    return Path(cfg.workdir) / "cache" / tag


@contextlib.contextmanager
def computing(cfg: PitConfig, key: str, what: str) -> Iterator[None]:
    """Held while this process finds out whether `key` is published, and computes it if not.

    `what` names the output in the message logged while another process of
    this work folder holds the lock.
    """
    store = store_for(cfg)
    name = hashlib.sha256(store.url(key).encode()).hexdigest()[:24]
    lock = Path(cfg.workdir) / "locks" / f"{name}.lock"
    with file_lock(lock, waiting=f"waiting for another process to finish {what} "
                                 f"({store.url(key)})"):
        yield


def local_folder(cfg: PitConfig, store: Store, key: str) -> Path:
    """A local folder holding the published output `key` of `store` (copied once if remote)."""
    try:
        return store.fetch_dir(key, cache_root(cfg, store))
    except FileNotFoundError:
        raise StorageError(
            f"{store.url(key)} is not a complete published output (no valid manifest); "
            "publish it again or check the key"
        ) from None


def published_folder(cfg: PitConfig, key: str) -> Path:
    """A local folder of an output of this comparison's store."""
    return local_folder(cfg, store_for(cfg), key)


def model_path(cfg: PitConfig, ref: str) -> str:
    """Where `from_pretrained` finds a model reference: a published key or an external id."""
    return str(published_folder(cfg, ref)) if is_store_key(ref) else ref


def model_url(cfg: PitConfig, ref: str) -> str:
    """A model reference as users paste it: the store URL of a key, else the id itself."""
    return store_for(cfg).url(ref) if is_store_key(ref) else ref
