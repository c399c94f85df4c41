"""From a recipe stage to the batches of each epoch, deterministically by seed.

Batches hold one kind of example only (all documents or all QA pairs), so each
batch gets its kind's learning rate and batch size, as the paper trains
documents and QA with separate settings, and short QA pairs are never padded
to the length of a document. A shuffled stage still mixes the two kinds: the
order of the batches is shuffled across the whole epoch. With `train.packing`,
each kind's examples are packed into rows instead (`pit.train.packing`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from pit.config import TrainConfig
from pit.data.dataset import KnowledgeDataset
from pit.errors import DataError
from pit.recipe import Source, Stage
from pit.train.examples import Example, ExampleBuilder
from pit.train.packing import Row, SlotCost, pack_rows, row_length

QA_SOURCES = ("train_qa", "old_qa")


@dataclass(frozen=True)
class Batch:
    """Examples of one kind; a packed batch also holds them laid out in `rows` of `row_len`."""

    kind: str
    examples: list[Example]
    rows: tuple[Row, ...] | None = None
    row_len: int = 0


def resolve_source(
    ds: KnowledgeDataset, source: Source, train: TrainConfig, exclude_qa: set[str] | None = None
) -> list[dict[str, Any]]:
    """The rows a source names; `limit` keeps a fixed, seeded sample.

    `ds` is already narrowed to the stage's domains (`pit.data.views.training_view`:
    the test domain, or the cross domains for train rows), so a source is a split.
    """
    if source.name == "replay":
        old = ds.docs_where("old")
        share = train.replay_share if source.share is None else source.share
        n = round(share * len(ds.docs_where("test")))
        return random.Random(train.seed).sample(old, min(n, len(old)))
    split, table = source.name.split("_")
    rows = ds.qa_where(split) if table == "qa" else ds.docs_where(split)
    if exclude_qa and table == "qa":
        rows = [r for r in rows if r["qa_id"] not in exclude_qa]
    if source.limit is not None:
        n = source.limit if isinstance(source.limit, int) else int(getattr(train, source.limit))
        rows = random.Random(train.seed).sample(rows, min(n, len(rows)))
    return rows


def stage_examples(
    ds: KnowledgeDataset,
    stage: Stage,
    builder: ExampleBuilder,
    train: TrainConfig,
    exclude_qa: set[str] | None = None,
) -> list[Example]:
    """Every example of one epoch of the stage, before batching."""
    qa_rows: list[dict[str, Any]] = []
    doc_rows: list[dict[str, Any]] = []
    for src in stage.sources:
        rows = resolve_source(ds, src, train, exclude_qa)
        (qa_rows if src.name in QA_SOURCES else doc_rows).extend(rows)
        if src.name == "replay" and src.with_qa:
            films = {d["entity_id"] for d in rows}
            qa_rows.extend(q for q in ds.qa_where("old") if q["entity_id"] in films
                           and q["qa_id"] not in (exclude_qa or set()))

    examples: list[Example] = []
    attached: set[str] = set()
    if stage.arrangement == "interleaved":
        by_entity: dict[str, list[dict[str, Any]]] = {}
        for q in qa_rows:
            by_entity.setdefault(q["entity_id"], []).append(q)
        for d in doc_rows:
            pairs = by_entity.get(d["entity_id"], [])
            attached.update(q["qa_id"] for q in pairs)
            examples.append(builder.doc_with_qa(
                d["text"], [(q["question"], q["answers"][0]) for q in pairs], stage.qa_position
            ))
    else:
        for d in doc_rows:
            examples.append(builder.document(d["text"], stage.answer_span_weight,
                                             stage.other_token_weight))
    examples += [builder.qa(q["question"], q["answers"][0])
                 for q in qa_rows if q["qa_id"] not in attached]
    return examples


def epoch_batches(
    examples: list[Example], stage: Stage, train: TrainConfig, seed: int, row_len: int = 0,
    cost: SlotCost | None = None,
) -> list[Batch]:
    """Batches of one epoch: homogeneous in kind, ordered by the stage's arrangement.

    With `train.packing`, `row_len` is the longest a packed row may be
    (`model.max_seq_len`), and each kind's rows are `train.pack_row_len` long: with
    `auto`, the cheapest length by `cost` (`pit.train.packing.row_length`; None, as
    under flash attention, fills `row_len`).
    """
    if train.packing and row_len <= 0:
        raise ValueError("packed batches need a row length (model.max_seq_len)")
    if train.packing and train.pack_row_len != "auto" and train.pack_row_len > row_len:
        raise DataError(
            f"train.pack_row_len={train.pack_row_len} is longer than model.max_seq_len="
            f"{row_len}; set train.pack_row_len to at most {row_len}, or 'auto'"
        )
    rng = random.Random(seed)
    order = examples[:]
    rng.shuffle(order)
    sizes = {"doc": train.doc_batch_size, "qa": train.qa_batch_size}
    by_kind: dict[str, list[Batch]] = {}
    for kind in ("qa", "doc"):
        items = [e for e in order if e.kind == kind]
        if train.packing:
            length = (train.pack_row_len if train.pack_row_len != "auto" else
                      row_length([len(e.input_ids) for e in items], row_len, cost))
            by_kind[kind] = [Batch(kind, [e for row in rows for e in row], rows, length)
                             for rows in pack_rows(items, sizes[kind], length, rng)]
        else:
            by_kind[kind] = [
                Batch(kind, items[i : i + sizes[kind]]) for i in range(0, len(items), sizes[kind])
            ]
    if stage.arrangement == "grouped":
        first, second = ("qa", "doc") if stage.qa_position == "before" else ("doc", "qa")
        return by_kind[first] + by_kind[second]
    batches = by_kind["qa"] + by_kind["doc"]
    rng.shuffle(batches)
    return batches
