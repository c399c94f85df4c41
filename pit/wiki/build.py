"""Build the Wiki2023-style data set from a dump: scan, QA, split, publish.

The output folder is what `pit data wiki` promises (DESIGN.md §3), in the one
layout every source publishes: the KnowledgeDataset tables `docs/` and `qa/`
(Hugging Face `datasets` folders) and `card.json` (counts per domain and split,
dump date, timings, the data set's meta and stats) at the root, beside the
wiki's own `docs.jsonl` and `qa.jsonl` (page id, title, revision id,
categories, text, infobox; page id, question, answers, generator) and
`delta.json` when a previous snapshot is given. So `KnowledgeDataset.load(out)`
reads it like the output of `pit data synth`. It is published through
`pit.storage` (a local folder or `s3://`): files are written to a staging
folder, the store's `MANIFEST.json` (sizes and sha256 of every file) last, and
only then renamed into place, so a reader that trusts folders with a manifest
never sees half a data set, and a failed build (a damaged dump, a bad page
under `on_error="raise"`) leaves the previous output untouched.

Splits: documents of the test domain go to `test` or `train` by a hash of
their page id, not at random and not by content, so a film stays in the same
split every month even when its article is edited; documents of other domains
are `train` (the paper's cross-domain setting trains on them and tests on
films). Pages of `old_category` (earlier years: what a pretrained model already
knows) are the `old` split of the test domain, with their QA, so retention can
be asked about them. A page in both a `category` and an `old_category`
category is new: it may hold what the model has not seen, so it must not
stand for what it knows. The card counts and names such pages.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from pit.data.dataset import KnowledgeDataset
from pit.errors import ConfigError, DataError
from pit.storage.destination import destination_problem, store_and_key
from pit.wiki.pagestream import DEFAULT_MAX_PAGE_MB
from pit.wiki.qa_infobox import infobox_qa
from pit.wiki.reader import ScanResult, default_workers, scan_dump
from pit.wiki.select import DEFAULT_DOMAINS, PageSelector, page_ids_by_category

QAGenerator = Callable[[dict[str, Any]], list[dict[str, Any]]]


class WikiBuildConfig(BaseModel):
    """Everything `pit data wiki` needs; defaults finish on a laptop."""

    dump: str = Field(description="pages-articles(-multistream).xml.bz2: local path or URL")
    index: str | None = Field(None, description="multistream index; without it one worker streams")
    category: str = Field(
        description=r"regex over category names of the new pages, e.g. '^2023 films$'"
    )
    old_category: str | None = Field(
        None,
        description=(
            r"regex over category names of earlier pages, e.g. '^20(1[5-9]|2[0-2]) films$': "
            "the `old` split of the test domain (what a pretrained model already knows, "
            "asked again to measure retention); a page matching both regexes is new"
        ),
    )
    out: str = Field(description="output folder (local path, s3:// or another fsspec URL)")
    overwrite: bool = Field(
        False,
        description=(
            "replace `out` even when it holds files pit did not publish there (never the "
            "current or home directory)"
        ),
    )
    workers: int | None = Field(None, description="worker processes; None means all cores")
    chunk_mb: float = Field(8.0, description="compressed MB of whole streams per worker task")
    max_page_mb: float = Field(
        DEFAULT_MAX_PAGE_MB,
        description=(
            "most MiB of XML one page may hold; a page still not closed beyond it (a damaged "
            "dump, a bz2 bomb) stops the scan with an error instead of filling memory"
        ),
    )
    on_error: Literal["raise", "skip"] = Field(
        "raise", description="damaged streams/pages: fail the build, or skip and count them"
    )
    categorylinks: str | None = Field(
        None, description="categorylinks.sql(.gz) of the same dump: authoritative categories"
    )
    namespaces: list[int] = Field([0], description="page namespaces to keep (0 = articles)")
    domains: dict[str, str] = Field(
        dict(DEFAULT_DOMAINS), description="domain name -> category regex; first match wins"
    )
    test_domain: str = Field(
        "films", description="domain split into train/test (and old); others are train"
    )
    test_fraction: float = Field(
        0.13, description="test share of the test domain (paper: 256/1976)"
    )
    max_qa_per_doc: int = Field(8, description="infobox QA pairs per document, at most")
    infobox_qa: bool = Field(True, description="write QA pairs from the infobox")
    previous: str | None = Field(None, description="previous snapshot folder, for delta.json")
    dump_date: str | None = Field(None, description="YYYYMMDD; read from the file name if unset")

    @property
    def max_page_bytes(self) -> int:
        return int(self.max_page_mb * (1 << 20))

    def problems(self) -> list[str]:
        """Every problem with this config at once, so a user fixes them in one pass."""
        out = []
        rules = [("category", self.category), *self.domains.items()]
        if self.old_category is not None:
            rules.append(("old_category", self.old_category))
        for label, pattern in rules:
            try:
                re.compile(pattern)
            except re.error as e:
                out.append(f"{label} regex {pattern!r}: {e}")
        if self.old_category is not None and self.old_category == self.category:
            out.append(
                "old_category is the same regex as category, so no page could be old: "
                "give the categories of earlier years, e.g. '^20(1[5-9]|2[0-2]) films$'"
            )
        if self.test_domain not in self.domains:
            out.append(
                f"test_domain {self.test_domain!r} is not one of the domains "
                f"{sorted(self.domains)}: name one, or add it with --domain NAME=REGEX"
            )
        for label, path in (
            ("dump", self.dump),
            ("index", self.index),
            ("categorylinks", self.categorylinks),
        ):
            if path and "://" not in path and not Path(path).exists():
                out.append(f"{label} {path} does not exist")
        if self.previous and not Path(self.previous, "docs.jsonl").exists():
            out.append(f"previous {self.previous} has no docs.jsonl (not a `pit data wiki` output)")
        if not 0 <= self.test_fraction < 1:
            out.append(f"test_fraction {self.test_fraction} must be in [0, 1)")
        if self.workers is not None and self.workers < 1:
            out.append(f"workers {self.workers} must be at least 1")
        if self.chunk_mb <= 0:
            out.append(f"chunk_mb {self.chunk_mb} must be positive")
        if self.max_page_mb <= 0:
            out.append(f"max_page_mb {self.max_page_mb} must be positive")
        unsafe = destination_problem(
            self.out, overwrite=self.overwrite, flag="--overwrite (overwrite=true in the flow)"
        )
        if unsafe:
            out.append(unsafe)
        return out

    def validate_all(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(problems, source="pit data wiki options")

    def selector(self) -> PageSelector:
        ids = old_ids = None
        if self.categorylinks:
            patterns = [self.category, *([self.old_category] if self.old_category else [])]
            found = page_ids_by_category(self.categorylinks, patterns)
            ids, old_ids = found[0], (found[1] if self.old_category else None)
        return PageSelector(
            category=self.category,
            namespaces=tuple(self.namespaces),
            page_ids=ids,
            domains=tuple(self.domains.items()),
            old_category=self.old_category,
            old_page_ids=old_ids,
        )

    def date(self) -> str | None:
        if self.dump_date:
            return self.dump_date
        m = re.search(r"-(\d{8})-", Path(self.dump).name)
        return m.group(1) if m else None


def split_of(page_id: int, domain: str, test_domain: str, test_fraction: float) -> str:
    """`test` for a fixed share of the test domain by page-id hash, else `train`."""
    if domain != test_domain:
        return "train"
    h = int.from_bytes(hashlib.sha256(f"enwiki:{page_id}".encode()).digest()[:8], "big")
    return "test" if h / 2**64 < test_fraction else "train"


def place(record: dict[str, Any], config: WikiBuildConfig) -> tuple[str, str]:
    """The domain and split of a scanned record (see the module docstring for the rules)."""
    if record.get("selected_by") == ["old_category"]:
        return config.test_domain, "old"
    split = split_of(record["page_id"], record["domain"], config.test_domain, config.test_fraction)
    return record["domain"], split


def delta(records: list[dict[str, Any]], previous: str | Path) -> dict[str, list[int]]:
    """Pages new since the previous snapshot, pages with a new revision, pages gone."""
    prev: dict[int, int] = {}
    with open(Path(previous) / "docs.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            prev[int(row["page_id"])] = int(row["revision_id"])
    cur = {r["page_id"]: r["revision_id"] for r in records}
    return {
        "new": sorted(p for p in cur if p not in prev),
        "changed": sorted(p for p in cur if p in prev and prev[p] != cur[p]),
        "removed": sorted(p for p in prev if p not in cur),
    }


def _generate_all(
    records: list[dict[str, Any]], qa_generator: QAGenerator | None
) -> tuple[dict[Any, list[dict[str, Any]]] | None, dict[str, Any] | None]:
    """All documents' generated QA at once, for generators that batch (`generate(docs)`).

    An LLM generator sends its requests concurrently only when it sees every
    document together; a plain callable is asked one document at a time.
    Returns the pairs by page id and the generator's counts (None for a
    plain callable).
    """
    batch = getattr(qa_generator, "generate", None)
    if not callable(batch):
        return None, None
    pairs, stats = batch(records)
    by_page: dict[Any, list[dict[str, Any]]] = {}
    for p in pairs:
        by_page.setdefault(p["page_id"], []).append(p)
    return by_page, stats


def assemble(
    records: list[dict[str, Any]], config: WikiBuildConfig, qa_generator: QAGenerator | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], KnowledgeDataset, dict[str, Any] | None]:
    """docs.jsonl rows, qa.jsonl rows, the KnowledgeDataset, and the QA generator's counts."""
    date = config.date()
    docs, qa, kd_docs, kd_qa = [], [], [], []
    generated, generation = _generate_all(records, qa_generator)
    for rec in records:
        domain, split = place(rec, config)
        docs.append({**rec, "domain": domain, "split": split})
        doc_id = f"enwiki-{rec['page_id']}"
        kd_docs.append(
            {
                "doc_id": doc_id,
                "entity_id": str(rec["page_id"]),
                "title": rec["title"],
                "text": rec["text"],
                "domain": domain,
                "split": split,
                "source": {
                    "page_id": rec["page_id"],
                    "revision_id": rec["revision_id"],
                    "dump_date": date,
                    "timestamp": rec["timestamp"],
                },
            }
        )
        pairs: list[dict[str, Any]] = []
        if config.infobox_qa:
            pairs.extend(infobox_qa(rec, config.max_qa_per_doc))
        if generated is not None:
            pairs.extend(generated.get(rec["page_id"], []))
        elif qa_generator is not None:
            pairs.extend(qa_generator(rec))
        seen: set[str] = set()
        for p in pairs:
            if p["question"] in seen or not p.get("answers"):
                continue
            seen.add(p["question"])
            qa.append(
                {
                    "page_id": rec["page_id"],
                    "question": p["question"],
                    "answers": list(p["answers"]),
                    "generator": p.get("generator", "custom"),
                }
            )
            kd_qa.append(
                {
                    "qa_id": f"{doc_id}-q{len(seen) - 1}",
                    "doc_id": doc_id,
                    "entity_id": str(rec["page_id"]),
                    "question": p["question"],
                    "answers": list(p["answers"]),
                    "split": split,
                    "generator": p.get("generator", "custom"),
                }
            )
    ds = KnowledgeDataset(
        docs=kd_docs,
        qa=kd_qa,
        meta={
            "source": "wikipedia",
            "dump": config.dump,
            "dump_date": date,
            "category": config.category,
            "old_category": config.old_category,
            "test_domain": config.test_domain,
        },
    )
    return docs, qa, ds, generation


def card(
    config: WikiBuildConfig,
    scan: ScanResult,
    docs: list[dict[str, Any]],
    qa: list[dict[str, Any]],
    ds: KnowledgeDataset,
    changes: dict[str, list[int]] | None,
    timings: dict[str, Any],
    generation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What card.json says beside the data set's meta and stats: counts, dump, timings.

    `generation` is the LLM QA generator's counts; the documents it skipped
    because the endpoint refused them are counted and named here.
    """
    counts = Counter(f"{d['domain']}/{d['split']}" for d in docs)
    key_of = {d["page_id"]: f"{d['domain']}/{d['split']}" for d in docs}
    qa_counts = Counter(key_of[q["page_id"]] for q in qa)
    both = [d["title"] for d in docs if len(d.get("selected_by", ())) == 2]
    return {
        "kind": "pit.data.wiki",
        "dump": config.dump,
        "index": config.index,
        "dump_date": config.date(),
        "category": config.category,
        "old_category": config.old_category,
        "fingerprint": ds.fingerprint,
        "counts": {
            "pages": scan.stats.pages,
            "streams": scan.stats.streams,
            "docs": len(docs),
            "qa": len(qa),
            "empty_text": scan.stats.empty,
            "bad_streams": scan.stats.bad_streams,
            "bad_pages": scan.stats.bad_pages,
            "in_both_categories": len(both),
            "llm_refused_docs": (generation or {}).get("refused", 0),
            "docs_by_domain_split": dict(sorted(counts.items())),
            "qa_by_domain_split": dict(sorted(qa_counts.items())),
        },
        "in_both_categories": both[:100],
        "errors": scan.stats.errors[:100],
        "llm_qa": None if generation is None else {
            **{k: v for k, v in generation.items() if k != "refused_docs"},
            "refused_docs": generation.get("refused_docs", [])[:100],
        },
        "delta": None if changes is None else {k: len(v) for k, v in changes.items()},
        "timings": timings,
        "config": config.model_dump(),
    }


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def build_wiki_dataset(
    config: WikiBuildConfig, qa_generator: QAGenerator | None = None, scan: ScanResult | None = None
) -> dict[str, Any]:
    """Scan the dump (unless `scan` is given), write and publish the data set.

    Returns the card (also written as card.json).
    """
    import datasets

    config.validate_all()
    t0 = time.perf_counter() - (scan.seconds if scan is not None else 0.0)
    if scan is None:
        scan = scan_dump(
            config.dump,
            config.index,
            config.selector(),
            workers=config.workers or default_workers(),
            chunk_bytes=int(config.chunk_mb * (1 << 20)),
            max_page_bytes=config.max_page_bytes,
            on_error=config.on_error,
        )
    t_scan = time.perf_counter()
    if not any("category" in r.get("selected_by", ()) for r in scan.records):
        raise DataError(
            f"no page of {config.dump} is in a category matching --category "
            f"{config.category!r} ({scan.stats.pages} pages scanned, {len(scan.records)} "
            "selected by --old-category): nothing new to learn. Check the regex against the "
            "dump's category names, e.g. '^2023 films$'; a film's year category counts."
        )
    docs, qa, ds, generation = assemble(scan.records, config, qa_generator)
    t_qa = time.perf_counter()
    changes = delta(scan.records, config.previous) if config.previous else None

    store, key = store_and_key(config.out)
    published: dict[str, Any] = {"kind": "dataset", "source": "wikipedia"}
    with store.staging(key, published) as staging:
        _write_jsonl(staging / "docs.jsonl", docs)
        _write_jsonl(staging / "qa.jsonl", qa)
        if changes is not None:
            (staging / "delta.json").write_text(json.dumps(changes))
        timings = {
            "scan_s": round(scan.seconds, 3),
            "qa_s": round(t_qa - t_scan, 3),
            "total_s": round(time.perf_counter() - t0, 3),
            "workers": scan.workers,
            "compressed_mb_per_s": round(scan.stats.compressed_bytes / 1e6 / scan.seconds, 2)
            if scan.seconds
            else None,
        }
        out = card(config, scan, docs, qa, ds, changes, timings, generation)
        datasets.disable_progress_bars()
        ds.save(staging, jsonl=False, card=out)
        published.update(fingerprint=ds.fingerprint, dump_date=config.date(), docs=len(docs))
    return {**out, "meta": ds.meta, "stats": ds.stats()}


def load_card(out: str | Path) -> dict[str, Any]:
    """The card of a published output; DataError when it was never completely published."""
    store, key = store_and_key(str(out))
    if store.read_manifest(key) is None:
        raise DataError(
            f"{out} has no MANIFEST.json: it is not a finished `pit data wiki` output "
            "(build it again with `pit data wiki`)"
        )
    return json.loads(store.read_file(key, "card.json"))
