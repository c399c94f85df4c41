"""The month's data set: new and changed pages to learn, earlier pages to train on, the old world.

A snapshot holds every page of the configured categories as of one dump. The
month's data set splits it by what the champion has already been taught:

- `test`: pages new since the last processed dump, or with a new revision
  (their documents are learned, their questions held out: acquisition);
- `train`: the categories' other pages, learned in earlier months (their QA
  pairs and documents are the recipe's train side, and a sample of their
  questions measures retention of earlier months);
- `old`: the pages of `old_category` (what the base model knows; the
  `data.retention_questions` held out of all training are the fixed probe set).

On the first month every page of the categories is new and there are no
earlier months, so the old split's documents and QA pairs (the probe set
left out) stand in as the train side, as the issue asks.

The result is a plain KnowledgeDataset published in the one layout every
source uses (`docs/`, `qa/`, `card.json`, JSONL), so the recipes, the
trainer and the evaluator read it like any other data set, keyed by a hash
of the snapshots it was cut from.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pit.artifacts import store_for
from pit.config import DataConfig, PitConfig
from pit.data.dataset import KnowledgeDataset
from pit.data.source import load_dataset
from pit.data.views import retention_ids
from pit.storage import fingerprint

_HASH_CHARS = 16


def _revisions(ds: KnowledgeDataset) -> dict[int, int]:
    """page id -> revision id of the categories' pages (the old world left out)."""
    return {int(d["source"]["page_id"]): int(d["source"]["revision_id"])
            for d in ds.docs if d["split"] != "old"}


def changes(current: KnowledgeDataset, previous: KnowledgeDataset | None) -> dict[str, list[int]]:
    """Page ids of the categories new since `previous`, with a new revision, and gone."""
    cur = _revisions(current)
    prev = _revisions(previous) if previous is not None else {}
    return {"new": sorted(p for p in cur if p not in prev),
            "changed": sorted(p for p in cur if p in prev and prev[p] != cur[p]),
            "removed": sorted(p for p in prev if p not in cur)}


def month_dataset(snapshot: KnowledgeDataset, previous: KnowledgeDataset | None,
                  data: DataConfig) -> KnowledgeDataset:
    """The month's splits of `snapshot`, given the snapshot processed before it (None: first)."""
    delta = changes(snapshot, previous)
    learn = {str(p) for p in delta["new"] + delta["changed"]}

    def split(doc: dict[str, Any]) -> str:
        if doc["split"] == "old":
            return "old"
        return "test" if doc["entity_id"] in learn else "train"

    docs = [{**d, "split": split(d)} for d in snapshot.docs]
    split_of = {d["doc_id"]: d["split"] for d in docs}
    qa = [{**q, "split": split_of[q["doc_id"]]} for q in snapshot.qa]
    if previous is None:
        probe = retention_ids(KnowledgeDataset(docs=docs, qa=qa), data)
        docs += [{**d, "split": "train"} for d in docs if d["split"] == "old"]
        qa += [{**q, "split": "train"} for q in qa
               if q["split"] == "old" and q["qa_id"] not in probe]
    meta = {**snapshot.meta, "source": "wikipedia-refresh", "snapshot": snapshot.fingerprint,
            "previous_dump_date": previous.meta.get("dump_date") if previous else None,
            "previous_snapshot": previous.fingerprint if previous else None,
            "changes": {k: len(v) for k, v in delta.items()}}
    return KnowledgeDataset(docs=docs, qa=qa, meta=meta)


def _rank(qa_id: str) -> str:
    return hashlib.sha256(qa_id.encode()).hexdigest()


def earlier_questions(ds: KnowledgeDataset, data: DataConfig) -> list[dict[str, Any]]:
    """Questions of pages learned in earlier months: `data.retention_questions` of them.

    Chosen by a hash of their ids, so month after month the same pages are
    asked as long as they stay. None on the first month: its train side is
    the old world, which the probe set already asks about.
    """
    if not ds.meta.get("previous_snapshot"):
        return []
    learned = sorted(ds.qa_where("train", data.test_domain), key=lambda q: _rank(q["qa_id"]))
    return learned[: data.retention_questions]


def month_key(cfg: PitConfig, snapshot_fp: str, previous_fp: str | None, date: str) -> str:
    h = fingerprint({"step": "refresh-month", "data": cfg.data},
                    exclude=["data.source"],
                    inputs={"snapshot": snapshot_fp, "previous": previous_fp or ""})
    return f"datasets/refresh-{date}-{h[:_HASH_CHARS]}"


def build_month(cfg: PitConfig, snapshot_key: str, previous_key: str | None
                ) -> tuple[str, KnowledgeDataset]:
    """The month's data set, published in the store (or found there): its key and content."""
    store = store_for(cfg)
    snapshot = load_dataset(cfg, snapshot_key)
    previous = load_dataset(cfg, previous_key) if previous_key else None
    key = month_key(cfg, snapshot.fingerprint, previous.fingerprint if previous else None,
                    snapshot.meta.get("dump_date") or "undated")
    if store.cached(key) is not None:
        return key, load_dataset(cfg, key)
    ds = month_dataset(snapshot, previous, cfg.data)
    card = {"kind": "pit.refresh.month", "snapshot": snapshot_key, "previous": previous_key,
            "dump_date": snapshot.meta.get("dump_date"), "changes": changes(snapshot, previous)}
    with store.staging(key, {"kind": "dataset", "fingerprint": ds.fingerprint}) as folder:
        ds.save(folder, card=card)
    return key, ds
