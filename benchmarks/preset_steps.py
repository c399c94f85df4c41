"""Optimiser steps a preset runs, per recipe and for the base: to size a GPU booking.

On a GPU, a small model's step costs about the same whatever its batch holds,
so the run's time is about steps x time per step. This counts the steps with
the batches pit itself would train on (the base's and every recipe stage's,
epoch by epoch), without training anything:

    python benchmarks/preset_steps.py --preset gpu
    python benchmarks/preset_steps.py --preset demo --set world.n_train=300
"""

from __future__ import annotations

import argparse

import torch

from pit.base import _tokenizer_texts, base_batches
from pit.config_sources import load_config
from pit.data.world import build_world
from pit.modeling import build_embedded_model, train_tokenizer
from pit.recipe import select_recipes
from pit.train.examples import ExampleBuilder
from pit.train.runner import stage_batches


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
    builder = ExampleBuilder(tok, cfg.model.max_seq_len)

    rows = [("base", sum(map(len, base_batches(cfg, ds, builder)[1])))]
    for recipe in select_recipes(cfg.methods, []):
        steps = sum(len(epoch) for i, stage in enumerate(recipe.stages)
                    for epoch in stage_batches(cfg, ds, stage, i, cfg.train, builder, model))
        rows.append((recipe.slug, steps * cfg.seeds))
    params = sum(p.numel() for p in model.parameters())
    print(f"preset {cfg.preset}: {params / 1e6:.1f}M parameters, "
          f"{sum(q['split'] == 'test' for q in ds.qa)} test questions, {cfg.seeds} seed(s)")
    for name, steps in rows:
        print(f"  {name:<18} {steps:7,d} steps")
    print(f"  {'total':<18} {sum(s for _, s in rows):7,d} steps")


if __name__ == "__main__":
    main()
