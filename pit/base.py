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

from pathlib import Path

import torch

from pit.artifacts import store_for
from pit.config import PitConfig, TrainConfig
from pit.data.dataset import KnowledgeDataset
from pit.data.source import load_dataset
from pit.data.views import retention_ids
from pit.device import accelerator, prepare
from pit.keys import base_key, pretrained_key
from pit.modeling import (
    build_embedded_model,
    load_model,
    model_identity,
    parse_model_ref,
    save_model,
    train_tokenizer,
)
from pit.progress import bar
from pit.recipe import Source, Stage
from pit.train.batches import epoch_batches
from pit.train.examples import Example, ExampleBuilder
from pit.train.loop import train_stage


def base_examples(cfg: PitConfig, ds: KnowledgeDataset, builder: ExampleBuilder) -> list[Example]:
    """The base model's world: old documents, old QA, and reading comprehension on old docs.

    The QA pairs teach the answer format a pretrained LLM already has; the
    document-then-question examples give it the skill the open-book setting
    measures. None of it mentions a train or test entity, and no held-out
    retention question is among the pairs.
    """
    held_out = retention_ids(ds, cfg.data)
    old_docs = ds.docs_where("old")
    examples = [builder.document(d["text"]) for d in old_docs]
    old_qa = [q for q in ds.qa_where("old") if q["qa_id"] not in held_out]
    examples += [builder.qa(q["question"], q["answers"][0]) for q in old_qa]
    first_doc: dict[str, dict] = {}
    for d in old_docs:
        first_doc.setdefault(d["entity_id"], d)
    for q in old_qa[::2]:
        d = first_doc.get(q["entity_id"])
        if d is not None:
            examples.append(builder.open_book(d["text"], q["question"], q["answers"][0]))
    return examples


def _tokenizer_texts(ds: KnowledgeDataset) -> list[str]:
    return [d["text"] for d in ds.docs] + [
        f"Question: {q['question']} Answer: {q['answers'][0]}" for q in ds.qa
    ]


def import_model(cfg: PitConfig) -> str:
    """Publish the external model once as safetensors (or reuse it); return its key.

    The key is a hash of the content read (`pit.keys.pretrained_key`); the
    manifest records where it came from.
    """
    store = store_for(cfg)
    ref = parse_model_ref(cfg.model.name_or_path, cfg.model.gguf_file)
    identity = model_identity(ref)
    key = pretrained_key(cfg.model, identity)
    if store.cached(key) is not None:
        return key
    model, tokenizer = load_model(cfg.model.name_or_path, cfg.model,
                                  cache_dir=Path(cfg.workdir) / "cache" / "models")
    source = {"name_or_path": cfg.model.name_or_path, "kind": ref.kind,
              "location": ref.location, "gguf_file": ref.gguf_file, "content": identity}
    with store.staging(key, {"kind": "base-model", "source": source,
                             "dtype": cfg.model.dtype}) as folder:
        save_model(model, tokenizer, folder)
    return key


def build_base(cfg: PitConfig, data_ref: str) -> str:
    """The key of the base model: the external one republished, or the embedded one pre-trained."""
    if cfg.model.name_or_path != "embedded":
        return import_model(cfg)
    store = store_for(cfg)
    ds = load_dataset(cfg, data_ref)
    key = base_key(cfg, ds.fingerprint)
    if store.cached(key) is not None:
        return key
    tokenizer = train_tokenizer(_tokenizer_texts(ds), cfg.model.vocab_size)
    model = build_embedded_model(cfg.model, tokenizer, seed=cfg.base.seed)
    builder = ExampleBuilder(tokenizer, cfg.model.max_seq_len)
    examples = base_examples(cfg, ds, builder)
    tcfg = TrainConfig(doc_lr=cfg.base.lr, qa_lr=cfg.base.lr, doc_batch_size=cfg.base.batch_size,
                       qa_batch_size=cfg.base.batch_size, seed=cfg.base.seed)
    stage = Stage(sources=[Source(name="old_docs"), Source(name="old_qa")], epochs=cfg.base.epochs)
    epochs = [epoch_batches(examples, stage, tcfg, cfg.base.seed * 1000 + e)
              for e in range(cfg.base.epochs)]
    acc = accelerator()
    torch.manual_seed(cfg.base.seed)
    model, optimizer = prepare(acc, model, tcfg)
    with bar(sum(len(e) for e in epochs), "pre-training base model") as advance:
        train_stage(model, epochs, tcfg, {"doc": cfg.base.lr, "qa": cfg.base.lr},
                    tokenizer.pad_token_id, acc, optimizer, progress=advance)
    with store.staging(key, {"kind": "base-model", "dataset": data_ref,
                             "dataset_fingerprint": ds.fingerprint}) as folder:
        save_model(acc.unwrap_model(model), tokenizer, folder)
    return key
