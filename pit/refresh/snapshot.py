"""One dump's pages of the configured categories, as `pit data wiki` publishes them.

The refresh builds each month's snapshot with the very code of `pit data
wiki` (`pit.wiki.build.build_wiki_dataset`: scan, clean, infobox QA,
docs.jsonl, qa.jsonl, card and the KnowledgeDataset tables), so a snapshot
can be handed to `pit compare --data` like any data set. It is published in
the artifact store under a key that carries a hash of the dump's content and
of every build setting that changes what is in it: a month started again
finds its snapshot there and does not scan the dump twice.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pit.artifacts import store_for
from pit.config import PitConfig
from pit.storage import MANIFEST, fingerprint
from pit.wiki.build import WikiBuildConfig, build_wiki_dataset
from pit.wiki.dump import DumpInfo, sha1_of

_HASH_CHARS = 16


def build_config(info: DumpInfo, dump: Path, index: Path, category: str,
                 old_category: str | None, out: str, workers: int | None,
                 test_domain: str) -> WikiBuildConfig:
    """The `pit data wiki` options of a month's snapshot."""
    return WikiBuildConfig(dump=str(dump), index=str(index), category=category,
                           old_category=old_category, out=out, workers=workers,
                           dump_date=info.date, test_domain=test_domain)


def snapshot_key(info: DumpInfo, dump: Path, config: WikiBuildConfig) -> str:
    """Where a dump's snapshot lives: the dump's content and the settings that shape it."""
    content = info.dump.sha1 or sha1_of(dump)
    what = config.model_dump(exclude={"dump", "index", "out", "overwrite", "workers", "chunk_mb",
                                      "previous"})
    h = fingerprint({"step": "wiki-snapshot", "build": what}, inputs={"dump": content})
    return f"datasets/{info.wiki}-{info.date}-{h[:_HASH_CHARS]}"


def build_snapshot(cfg: PitConfig, info: DumpInfo, dump: Path, index: Path, category: str,
                   old_category: str | None, workers: int | None) -> str:
    """The store key of the dump's snapshot, built and published unless it already is."""
    store = store_for(cfg)
    probe = build_config(info, dump, index, category, old_category, "unused", workers,
                         cfg.data.test_domain)
    key = snapshot_key(info, dump, probe)
    if store.cached(key) is not None:
        return key
    if store.is_local:
        build_wiki_dataset(probe.model_copy(update={"out": store.url(key)}))
        return key
    local = Path(cfg.workdir).resolve() / "refresh-build" / key
    shutil.rmtree(local, ignore_errors=True)
    card = build_wiki_dataset(probe.model_copy(update={"out": str(local)}))
    (local / MANIFEST).unlink()
    store.publish(local, key, {"kind": "dataset", "source": "wikipedia",
                               "fingerprint": card["fingerprint"], "dump_date": info.date})
    shutil.rmtree(local, ignore_errors=True)
    return key
