"""Optimiser steps a preset runs, per recipe and for the base: to size a GPU booking.

On a GPU, a small model's step costs about the same whatever its batch holds,
so the run's time is about steps x time per step. This counts the steps with
pit's own batching (packing, row lengths, the stages' sources), without
training anything:

    python benchmarks/preset_steps.py --preset gpu
    python benchmarks/preset_steps.py --preset demo --set world.n_train=300
"""

from __future__ import annotations

import argparse

import torch

from pit.base import _tokenizer_texts, old_world_examples, reading_examples
from pit.config import TrainConfig
from pit.config_sources import load_config
from pit.data.world import build_world
from pit.modeling import build_embedded_model, train_tokenizer
from pit.recipe import Source, Stage, select_recipes
from pit.train.batches import epoch_batches
from pit.train.examples import ExampleBuilder
from pit.train.packing import slot_cost
from pit.train.runner import examples_for


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="gpu")
    ap.add_argument("--set", action="append", default=[], help="A config override.")
    args = ap.parse_args()
    cfg = load_config(args.preset, None, args.set)
    ds = build_world(cfg.world)
    tok = train_tokenizer(_tokenizer_texts(ds), cfg.model.vocab_size)
    with torch.device("meta"):
        model = build_embedded_model(cfg.model, tok)
    params = sum(p.numel() for p in model.parameters())
    cost = slot_cost(model)
    builder = ExampleBuilder(tok, cfg.model.max_seq_len)

    base = TrainConfig(doc_batch_size=cfg.base.batch_size, qa_batch_size=cfg.base.batch_size)
    stage = Stage(sources=[Source(name="old_docs"), Source(name="old_qa")],
                  epochs=cfg.base.epochs)
    examples = old_world_examples(cfg, ds, builder) + reading_examples(cfg, ds, builder, 0)
    rows = [("base", len(epoch_batches(examples, stage, base, 0)) * cfg.base.epochs)]
    for recipe in select_recipes(cfg.methods, []):
        steps = 0
        for stage in recipe.stages:
            examples = examples_for(cfg, ds, stage, builder, cfg.train)
            per_epoch = len(epoch_batches(examples, stage, cfg.train, 0,
                                          cfg.model.max_seq_len, cost))
            steps += per_epoch * stage.resolved_epochs(cfg.train)
        rows.append((recipe.slug, steps * cfg.seeds))
    print(f"preset {cfg.preset}: {params / 1e6:.1f}M parameters, "
          f"{sum(q['split'] == 'test' for q in ds.qa)} test questions, {cfg.seeds} seed(s)")
    for name, steps in rows:
        print(f"  {name:<18} {steps:7,d} steps")
    print(f"  {'total':<18} {sum(s for _, s in rows):7,d} steps")


if __name__ == "__main__":
    main()
