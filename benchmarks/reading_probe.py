"""How many reading passages before a model of the demo's size can read a context?

Open-book QA scores 0 in the demo: the base model never learns to copy an
answer out of the document in its prompt. This probe trains a fresh model of
a preset's size on reading passages alone (films drawn afresh for every
passage, so memory cannot answer). Every `--eval-every` steps it scores
open-book exact match twice: on 100 unseen passages, and on the world's
own test films, each with its first document in the prompt. That is how
the demo's open-book recipe is scored.

    python benchmarks/reading_probe.py                               # the base's passages
    python benchmarks/reading_probe.py --world-names --doc-loss --all-questions --steps 4500
    python benchmarks/reading_probe.py --world-names --doc-loss --all-questions \\
        --set model.hidden_size=256 --set model.num_layers=4 --set model.num_heads=8 \\
        --set model.intermediate_size=688 --lr 1e-3                  # a 4M-parameter model

`--world-names` draws the passages' people, studios and places from the world's
own pools rather than fresh syllables, so they are the tokens the test documents
use (the films, and so the facts, are still new). `--doc-loss` trains on the
passage's text as well as the answer; `--all-questions` asks every stated fact
of a passage, not one.
"""

from __future__ import annotations

import argparse
import math
import random
import time

import torch

from pit.base import _tokenizer_texts
from pit.config_sources import load_config
from pit.data import world as W
from pit.eval.evaluator import Evaluator
from pit.eval.metrics import exact_match
from pit.modeling import build_embedded_model, train_tokenizer
from pit.train.batches import Batch
from pit.train.examples import Example, ExampleBuilder
from pit.train.loop import collate, weighted_loss


def passages(cfg: W.WorldConfig, pools: dict | None, n: int, seed: int,
             all_questions: bool) -> list[tuple[str, str, str]]:
    if pools is None and not all_questions:
        return W.reading_passages(cfg, n, seed)
    rng = random.Random(f"reading-probe:{cfg.seed}:{seed}")
    namer = W._Namer(rng)
    pools = pools or W._pools(namer, rng, people=3 * n, companies=n, places=n)
    out = []
    for i in range(n):
        film = W._film(rng, pools, f"probe-{i}", f"{namer.word(2)} {rng.choice(W._NOUN)}",
                       "reading")
        attrs = W._stated(film, cfg, rng)
        text = rng.choice(W._documents(film, attrs, cfg, rng))
        for attr in attrs if all_questions else [rng.choice(attrs)]:
            question = rng.choice(W.FILM_FACTS[attr][1]).format(t=film.title)
            out.append((text, question, film.facts[attr][0]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--set", action="append", default=[], help="A config override.")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3, help="Peak rate; warm-up, then cosine.")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--world-names", action="store_true")
    ap.add_argument("--doc-loss", action="store_true")
    ap.add_argument("--all-questions", action="store_true")
    args = ap.parse_args()

    cfg = load_config(args.preset, None, args.set)
    ds = W.build_world(cfg.world)
    tok = train_tokenizer(_tokenizer_texts(ds), cfg.model.vocab_size)
    model = build_embedded_model(cfg.model, tok, seed=0)
    builder = ExampleBuilder(tok, cfg.model.max_seq_len)
    evaluator = Evaluator(model, tok, cfg.eval, cfg.model.max_seq_len)
    pools = W.world_pools(cfg.world) if args.world_names else None
    unseen = passages(cfg.world, pools, 100, 10**6, all_questions=False)
    first_doc = {d["entity_id"]: d["text"] for d in ds.docs if d["doc_id"].endswith("-p0")}
    test = [(first_doc[q["entity_id"]], q["question"], q["answers"][0])
            for q in ds.qa if q["split"] == "test"]
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; "
          f"{len(test)} test questions, one is {100 / len(test):.2f} points")

    def score(items: list[tuple[str, str, str]]) -> float:
        model.eval()
        preds = evaluator.generate([evaluator.prompt_ids(q, t) for t, q, _ in items])
        hits = sum(exact_match(p, [a]) for p, (_, _, a) in zip(preds, items, strict=True))
        return 100 * hits / len(items)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / args.warmup)
                                              * 0.5 * (1 + math.cos(math.pi * s / args.steps)))
    pool: list[Example] = []
    losses: list[float] = []
    started = time.time()
    for step in range(1, args.steps + 1):
        if len(pool) < args.batch:
            drawn = passages(cfg.world, pools, 2000, step, args.all_questions)
            pool = [builder.open_book(*p, doc_weight=float(args.doc_loss)) for p in drawn]
            random.Random(step).shuffle(pool)
        batch = [pool.pop() for _ in range(args.batch)]
        ids, weights, _ = collate(Batch("qa", batch), tok.pad_token_id, "cpu")
        model.train()
        loss = weighted_loss(model(input_ids=ids).logits, ids, weights)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % args.eval_every == 0 or step == args.steps:
            print(f"step {step:5d}  loss {sum(losses) / len(losses):.3f}  "
                  f"unseen passages EM {score(unseen):5.1f}  "
                  f"world test films open-book EM {score(test):5.1f}  "
                  f"({time.time() - started:.0f} s)", flush=True)
            losses = []


if __name__ == "__main__":
    main()
