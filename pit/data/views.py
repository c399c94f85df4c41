"""Which rows of a data set play which part: test domain, cross domains, held-out retention.

A data set says what it holds (splits, domains); the `data` config says how a
comparison uses it. These functions apply one to the other, so nothing else
needs to know a domain's name or whether a question is held out.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pit.config import DataConfig
from pit.data.dataset import KnowledgeDataset


def cross_domains(ds: KnowledgeDataset, data: DataConfig) -> list[str]:
    """The domains cross-domain training reads: as configured, else every other domain."""
    if data.cross_domains is not None:
        return list(data.cross_domains)
    return [d for d in ds.domains if d != data.test_domain]


def training_view(ds: KnowledgeDataset, data: DataConfig, cross_domain: bool) -> KnowledgeDataset:
    """The rows a recipe stage may read, so that a source names a split and nothing more.

    Test rows come from the test domain; train rows from the test domain, or
    from the cross domains when `cross_domain` is on (the paper's cross-domain
    setting); old rows from every domain, since all of it is what the model
    already knows.
    """
    train_domains = set(cross_domains(ds, data)) if cross_domain else {data.test_domain}

    def keep(split: str, domain: str | None) -> bool:
        if split == "train":
            return domain in train_domains
        if split == "test":
            return domain == data.test_domain
        return True

    domain_of = {d["entity_id"]: d["domain"] for d in ds.docs}
    docs = [d for d in ds.docs if keep(d["split"], d["domain"])]
    qa = [q for q in ds.qa if keep(q["split"], domain_of.get(q["entity_id"]))]
    return KnowledgeDataset(docs=docs, qa=qa, meta=ds.meta)


def eval_questions(ds: KnowledgeDataset, data: DataConfig) -> list[dict[str, Any]]:
    """Test QA of the test domain: what every recipe is scored on."""
    return ds.qa_where("test", data.test_domain)


def eval_documents(ds: KnowledgeDataset, data: DataConfig) -> list[dict[str, Any]]:
    """Test documents of the test domain: the new knowledge, and its perplexity."""
    return ds.docs_where("test", data.test_domain)


def demonstrations(ds: KnowledgeDataset, data: DataConfig) -> list[dict[str, Any]]:
    """Train QA of the test domain: the shots the untrained base model is shown."""
    return ds.qa_where("train", data.test_domain)


def _rank(qa_id: str) -> str:
    return hashlib.sha256(qa_id.encode()).hexdigest()


def retention_questions(ds: KnowledgeDataset, data: DataConfig) -> list[dict[str, Any]]:
    """Old-world questions held out of all training, to measure forgetting.

    The `retention_questions` old QA pairs whose `qa_id` hashes lowest: a
    sample that depends on nothing but the ids, so it is the same however the
    rest of the data set (new years, other domains, row order) changes, and
    the same for the base model and for every recipe.
    """
    old = sorted(ds.qa_where("old"), key=lambda q: _rank(q["qa_id"]))
    return old[: data.retention_questions]


def retention_ids(ds: KnowledgeDataset, data: DataConfig) -> set[str]:
    """The ids every training example must leave out."""
    return {q["qa_id"] for q in retention_questions(ds, data)}
