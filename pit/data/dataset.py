"""KnowledgeDataset: the two tables (documents and QA pairs) every recipe reads.

Both the synthetic world and Wikipedia dumps end up here, so the trainer and the
evaluator never know where their facts came from. A data set is addressed by a
fingerprint of its content: the same records give the same fingerprint, on any
machine, which is what lets base models and results be cached and compared.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pit.errors import DataError

DOC_COLUMNS = ("doc_id", "entity_id", "title", "text", "domain", "split", "source")
QA_COLUMNS = ("qa_id", "doc_id", "entity_id", "question", "answers", "split", "generator")
SPLITS = ("old", "train", "test")


def _canonical(rows: Iterable[dict[str, Any]]) -> bytes:
    return "\n".join(json.dumps(r, sort_keys=True, ensure_ascii=False) for r in rows).encode()


@dataclass
class KnowledgeDataset:
    """Documents and QA pairs, each row tagged with a split and a domain.

    `entity_id` joins a QA pair to every document (paraphrase) about its subject;
    `doc_id` names the one document the pair was written from.
    """

    docs: list[dict[str, Any]]
    qa: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name, rows, cols in (("docs", self.docs, DOC_COLUMNS), ("qa", self.qa, QA_COLUMNS)):
            for i, row in enumerate(rows):
                missing = [c for c in cols if c not in row]
                if missing:
                    problems.append(f"{name}[{i}] lacks columns {missing}")
                    break
        for i, row in enumerate(self.qa):
            if not row.get("answers"):
                problems.append(f"qa[{i}] ({row.get('qa_id')}) has no answers")
                break
        if problems:
            raise DataError("KnowledgeDataset is malformed: " + "; ".join(problems))

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(_canonical(self.docs))
        h.update(b"\0")
        h.update(_canonical(self.qa))
        return h.hexdigest()[:16]

    def docs_where(self, split: str, domain: str | None = None) -> list[dict[str, Any]]:
        return [d for d in self.docs
                if d["split"] == split and (domain is None or d["domain"] == domain)]

    def qa_where(self, split: str, domain: str | None = None) -> list[dict[str, Any]]:
        domains = {d["entity_id"]: d["domain"] for d in self.docs}
        return [
            q
            for q in self.qa
            if q["split"] == split and (domain is None or domains.get(q["entity_id"]) == domain)
        ]

    @property
    def domains(self) -> list[str]:
        return sorted({d["domain"] for d in self.docs})

    def stats(self) -> dict[str, Any]:
        """Counts per domain and split: the data card users read before training."""
        out: dict[str, Any] = {"fingerprint": self.fingerprint}
        for dom in self.domains:
            for split in SPLITS:
                nd = len(self.docs_where(split, dom))
                if nd:
                    out[f"{dom}/{split}/docs"] = nd
                    out[f"{dom}/{split}/qa"] = len(self.qa_where(split, dom))
        return out

    def save(
        self, path: str | Path, jsonl: bool = True, card: dict[str, Any] | None = None
    ) -> Path:
        """Write both tables as Hugging Face data sets under `path`, with `card.json` beside them.

        This is the one layout every source publishes (`pit data synth`, `pit data
        wiki`): `docs/`, `qa/` and `card.json` at the root of the folder. `jsonl`
        also writes the tables as `docs.jsonl` and `qa.jsonl`; a source with JSONL
        of its own schema at those names (the wiki's) turns it off. `card` adds
        the source's own fields (counts, dump date, timings) to the card, whose
        `meta` and `stats` are always the data set's.
        """
        import datasets

        datasets.disable_progress_bars()  # pit shows its own progress; these would interleave
        extra = dict(card or {})
        clash = sorted({"meta", "stats"} & set(extra))
        if clash:
            raise ValueError(f"card keys {clash} are the data set's own; rename them")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        docs = [{**d, "source": json.dumps(d["source"], sort_keys=True)} for d in self.docs]
        datasets.Dataset.from_list(docs).save_to_disk(str(path / "docs"))
        datasets.Dataset.from_list(self.qa).save_to_disk(str(path / "qa"))
        if jsonl:
            for name, rows in (("docs", self.docs), ("qa", self.qa)):
                with open(path / f"{name}.jsonl", "w", encoding="utf-8") as f:
                    for r in rows:
                        f.write(json.dumps(r, ensure_ascii=False) + "\n")
        full = {**extra, "meta": self.meta, "stats": self.stats()}
        (path / "card.json").write_text(json.dumps(full, indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, path: str | Path) -> KnowledgeDataset:
        """The data set saved at `path` by `save`, whichever source published it."""
        import datasets

        path = Path(path)
        if not (path / "docs").is_dir() or not (path / "qa").is_dir():
            hint = ""
            if (path / "dataset" / "docs").is_dir():
                hint = (
                    " It keeps them under dataset/, the layout of an older `pit data wiki`: "
                    "build it again, or pass its dataset/ folder."
                )
            raise DataError(
                f"{path} is not a saved KnowledgeDataset (expected docs/ and qa/ folders); "
                "build one with `pit data synth` or `pit data wiki`." + hint
            )
        docs = datasets.load_from_disk(str(path / "docs")).to_list()
        for d in docs:
            d["source"] = json.loads(d["source"])
        qa = datasets.load_from_disk(str(path / "qa")).to_list()
        meta = {}
        if (path / "card.json").exists():
            meta = json.loads((path / "card.json").read_text()).get("meta", {})
        return cls(docs=docs, qa=qa, meta=meta)
