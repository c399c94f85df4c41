"""The base model every recipe starts from: the embedded model pre-trained on the old split.

A pretrained model (any `model.name_or_path` but `embedded`) is its own base:
it already knows the old world, brings its own tokenizer, and is not
pre-trained here. It is read once per comparison and published to the store
as safetensors (`import_model`), so every stage and evaluation loads plain
weights: a GGUF file is unpacked once, not by each stage (20-40 s each for
135M parameters on a CPU), and an s3 model is downloaded once. The embedded
model learns the old world from scratch, with the retention questions held
out, so retention measures what it can still answer about facts it read,
not pairs it memorised.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from pit.artifacts import computing, store_for
from pit.config import PitConfig, TrainConfig, WorldConfig
from pit.data.dataset import KnowledgeDataset
from pit.data.source import load_dataset
from pit.data.views import retention_ids
from pit.data.world import reading_passages
from pit.device import accelerator, prepare
from pit.keys import base_key, pretrained_key
from pit.modeling import (
    ModelRef,
    build_embedded_model,
    load_model,
    model_identity,
    parse_model_ref,
    save_model,
    train_tokenizer,
)
from pit.progress import bar
from pit.recipe import Source, Stage
from pit.storage import Store
from pit.train.batches import Batch, epoch_batches
from pit.train.examples import Example, ExampleBuilder
from pit.train.loop import train_stage


def base_examples(cfg: PitConfig, ds: KnowledgeDataset, builder: ExampleBuilder,
                  seed: int = 0) -> list[Example]:
    """One epoch of the base model's world: old documents, old QA, reading comprehension.

    The QA pairs teach the answer format a pretrained LLM already has. The reading
    examples teach the skill the open-book setting measures, on contexts no memory
    can answer: on a synthetic world, films drawn afresh for every epoch; on other
    data, old documents. None of it mentions a train or test entity, and no
    held-out retention question is among the pairs.
    """
    return old_world_examples(cfg, ds, builder) + reading_examples(cfg, ds, builder, seed)


def _old_qa(cfg: PitConfig, ds: KnowledgeDataset) -> list[dict]:
    held_out = retention_ids(ds, cfg.data)
    return [q for q in ds.qa_where("old") if q["qa_id"] not in held_out]


def old_world_examples(cfg: PitConfig, ds: KnowledgeDataset, builder: ExampleBuilder
                       ) -> list[Example]:
    """The part of every base epoch that never changes: old documents and old QA pairs."""
    examples = [builder.document(d["text"]) for d in ds.docs_where("old")]
    return examples + [builder.qa(q["question"], q["answers"][0]) for q in _old_qa(cfg, ds)]


def reading_examples(cfg: PitConfig, ds: KnowledgeDataset, builder: ExampleBuilder,
                     seed: int) -> list[Example]:
    """The part drawn anew each epoch: `base.reading` passages per old entity."""
    first_doc: dict[str, dict] = {}
    for d in ds.docs_where("old"):
        first_doc.setdefault(d["entity_id"], d)
    if ds.meta.get("kind") == "synthetic":
        world = WorldConfig.model_validate(ds.meta["world"])
        passages = reading_passages(world, cfg.base.reading * len(first_doc), seed)
    else:
        old_qa = _old_qa(cfg, ds)
        n = min(cfg.base.reading * len(first_doc), len(old_qa))
        passages = [(first_doc[q["entity_id"]]["text"], q["question"], q["answers"][0])
                    for q in random.Random(seed).sample(old_qa, n)
                    if q["entity_id"] in first_doc]
    return [builder.open_book(text, q, a) for text, q, a in passages]


def _tokenizer_texts(ds: KnowledgeDataset) -> list[str]:
    """The old world, and the words of the world's language: never a train or test fact.

    A synthetic world's lexicon (every name, place and title word it can use) is the
    vocabulary a pretrained tokenizer would know; with it, a name is a word or two,
    not a string of syllables, as in the real model the small one stands in for.
    """
    texts = [d["text"] for d in ds.docs_where("old")] + [
        f"Question: {q['question']} Answer: {q['answers'][0]}" for q in ds.qa_where("old")
    ]
    words = ds.meta.get("lexicon") or []
    return texts + [" ".join(words[i : i + 50]) for i in range(0, len(words), 50)] * 2


def import_model(cfg: PitConfig) -> str:
    """Publish the external model once as safetensors (or reuse it); return its key.

    The key is a hash of the content read (`pit.keys.pretrained_key`); the
    manifest records where it came from.
    """
    store = store_for(cfg)
    ref = parse_model_ref(cfg.model.name_or_path, cfg.model.gguf_file)
    identity = model_identity(ref)
    key = pretrained_key(cfg.model, identity)
    with computing(cfg, key, f"importing {cfg.model.name_or_path}"):
        if store.cached(key) is None:
            _import(cfg, store, key, ref, identity)
    return key


def _import(cfg: PitConfig, store: Store, key: str, ref: ModelRef, identity: dict) -> None:
    model, tokenizer = load_model(cfg.model.name_or_path, cfg.model,
                                  cache_dir=Path(cfg.workdir) / "cache" / "models")
    source = {"name_or_path": cfg.model.name_or_path, "kind": ref.kind,
              "location": ref.location, "gguf_file": ref.gguf_file, "content": identity}
    with store.staging(key, {"kind": "base-model", "source": source,
                             "dtype": cfg.model.dtype}) as folder:
        save_model(model, tokenizer, folder)


def build_base(cfg: PitConfig, data_ref: str) -> str:
    """The key of the base model: the external one republished, or the embedded one pre-trained."""
    if cfg.model.name_or_path != "embedded":
        return import_model(cfg)
    store = store_for(cfg)
    ds = load_dataset(cfg, data_ref)
    key = base_key(cfg, ds.fingerprint)
    with computing(cfg, key, "pre-training the base model"):
        if store.cached(key) is None:
            _pretrain(cfg, store, key, ds, data_ref)
    return key


def base_batches(cfg: PitConfig, ds: KnowledgeDataset, builder: ExampleBuilder
                 ) -> tuple[TrainConfig, list[list[Batch]]]:
    """The base's training settings and its batches, epoch by epoch (reading drawn anew)."""
    tcfg = TrainConfig(doc_lr=cfg.base.lr, qa_lr=cfg.base.lr, doc_batch_size=cfg.base.batch_size,
                       qa_batch_size=cfg.base.batch_size, seed=cfg.base.seed)
    stage = Stage(sources=[Source(name="old_docs"), Source(name="old_qa")], epochs=cfg.base.epochs)
    seeds = [cfg.base.seed * 1000 + e for e in range(cfg.base.epochs)]
    fixed = old_world_examples(cfg, ds, builder)
    return tcfg, [epoch_batches(fixed + reading_examples(cfg, ds, builder, s), stage, tcfg, s)
                  for s in seeds]


def _pretrain(cfg: PitConfig, store: Store, key: str, ds: KnowledgeDataset,
              data_ref: str) -> None:
    """Pre-train the embedded model on the old world and publish it at `key`."""
    tokenizer = train_tokenizer(_tokenizer_texts(ds), cfg.model.vocab_size)
    model = build_embedded_model(cfg.model, tokenizer, seed=cfg.base.seed)
    tcfg, epochs = base_batches(cfg, ds, ExampleBuilder(tokenizer, cfg.model.max_seq_len))
    acc = accelerator()
    torch.manual_seed(cfg.base.seed)
    model, optimizer = prepare(acc, model, tcfg)
    with bar(sum(len(e) for e in epochs), "pre-training base model") as advance:
        train_stage(model, epochs, tcfg, {"doc": cfg.base.lr, "qa": cfg.base.lr},
                    tokenizer.pad_token_id, acc, optimizer, progress=advance)
    with store.staging(key, {"kind": "base-model", "dataset": data_ref,
                             "dataset_fingerprint": ds.fingerprint}) as folder:
        save_model(acc.unwrap_model(model), tokenizer, folder)
