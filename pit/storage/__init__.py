"""The artifact store: every path pit reads or writes goes through here.

Callers name outputs by *keys* (`"checkpoints/3f2a/step-000100"`) relative to
one root, a local folder by default or `s3://bucket/prefix` for AWS or any
S3-compatible store (MinIO), and never learn which backend they are on.

Four promises the rest of pit builds on:

* **Atomic publish** (`store.py`). An output is a folder with a
  `MANIFEST.json` of every file's size and sha256, written last; readers
  trust only folders with a manifest, so none ever sees half an output, and
  two writers of one key never mix their files (on S3 each publication
  uploads under a folder of its own that the manifest names). What killed
  writers leave is pruned by the next one (`leftovers.py`).
* **Retries** (`backend.py`, under `pit.retry`'s one rule). Every operation
  is retried with exponential backoff on transient failures (connection
  refused or reset, timeouts, 5xx, throttling; never a full disk); after the
  last attempt a :class:`~pit.errors.StorageUnavailableError` names the
  endpoint and the fix, and Prefect's task retries take it up.
* **Verified local copies** (`cache.py`). :meth:`Store.fetch_dir` gives the
  local folder of an output: downloaded once under a file lock, checked
  against the manifest's sizes and sha256 (a local output is hashed where it
  lies), shared safely by processes, fetched again when the key is
  republished.
* **No secrets.** Credentials come only from the standard AWS environment
  variables, shared profiles or an instance role; the config holds at most
  a profile *name*. Error messages and log records are scrubbed of the
  secret key and session token even if a backend echoes them.

Content addressing (:func:`fingerprint`, `hashing.py`) lives here too: an
output's key carries a hash of its config and its inputs, and
:meth:`Store.cached` says whether that output is already finished, so it
can be reused.
"""

from pit.errors import CorruptOutputError
from pit.storage.backend import Backend
from pit.storage.cache import MARKER
from pit.storage.config import StorageConfig
from pit.storage.hashing import file_sha256, fingerprint
from pit.storage.manifest import MANIFEST, MANIFEST_FORMAT, local_problems, manifest_id
from pit.storage.models import fetch_model
from pit.storage.store import Store

__all__ = [
    "MANIFEST",
    "MANIFEST_FORMAT",
    "MARKER",
    "Backend",
    "CorruptOutputError",
    "StorageConfig",
    "Store",
    "fetch_model",
    "file_sha256",
    "fingerprint",
    "local_problems",
    "manifest_id",
]
