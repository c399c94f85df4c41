"""Where a comparison's data set comes from: the synthetic world, or one published before.

`data.source` is `synthetic` (the world of the `world` section, built once and
published in the artifact store under a hash of that section) or a data set
published by `pit data synth` / `pit data wiki`: a local folder, an `s3://`
URL, or a key of the artifact store. `build_dataset` turns either into a
reference the later steps pass around; `load_dataset` reads it back.
"""

from __future__ import annotations

from pathlib import Path

from pit.artifacts import computing, local_folder, store_for
from pit.config import PitConfig
from pit.data.dataset import KnowledgeDataset
from pit.data.world import build_world
from pit.errors import DataError
from pit.keys import dataset_key
from pit.storage import MANIFEST, Store

SYNTHETIC = "synthetic"


def build_dataset(cfg: PitConfig) -> str:
    """Build (or reuse) the synthetic world, or locate the published data set; return its ref."""
    if cfg.data.source == SYNTHETIC:
        store = store_for(cfg)
        key = dataset_key(cfg)
        with computing(cfg, key, "the synthetic world"):
            if store.cached(key) is None:
                ds = build_world(cfg.world)
                with store.staging(key, {"kind": "dataset",
                                         "fingerprint": ds.fingerprint}) as folder:
                    ds.save(folder)
        return key
    source = cfg.data.source
    if not source.startswith("s3://") and Path(source).expanduser().is_dir():
        source = str(Path(source).expanduser().resolve())
    dataset_folder(cfg, source)
    return source


def _url_store(cfg: PitConfig, url: str) -> Store:
    """A store rooted at a data set's URL, reached with the comparison's S3 settings."""
    return Store(cfg.storage.model_copy(update={"root": url.rstrip("/")}))


def dataset_folder(cfg: PitConfig, ref: str) -> Path:
    """A local folder holding the data set `ref` (a URL is downloaded once)."""
    if ref.startswith("s3://"):
        store = _url_store(cfg, ref)
        return local_folder(cfg, store, "")
    path = Path(ref).expanduser()
    if path.is_dir():
        _check_published_folder(path)
        return path
    store = store_for(cfg)
    if store.cached(ref) is not None:
        return local_folder(cfg, store, ref)
    raise DataError(
        f"data.source {ref!r} is neither a folder, an s3:// URL nor a data set published in "
        f"the artifact store {store.url()}. Pass the folder or URL `pit data synth --out` or "
        "`pit data wiki --out` wrote, or data.source=synthetic."
    )


def _check_published_folder(path: Path) -> None:
    """A folder pit published must match its manifest, bytes included; a hand-made one is taken
    as it is."""
    if not (path / MANIFEST).is_file():
        return
    problems = Store(path.parent).problems(path.name, hashes=True)
    if problems:
        raise DataError(f"data set {path} is incomplete or damaged: {'; '.join(problems)}. "
                        "Publish it again.")


def load_dataset(cfg: PitConfig, ref: str) -> KnowledgeDataset:
    return KnowledgeDataset.load(dataset_folder(cfg, ref))
