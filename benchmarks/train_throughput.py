"""Training tokens/s of pit's trainer (packed) against a Hugging Face Trainer that pads.

Same model, same examples, one process, measured in one run. The model is the
embedded Llama of the preset (demo by default) with random weights and the
tokenizer its base model would have; any `model.name_or_path` works through
`--set`. The examples are one PIT-stage mixture built by pit's own code:
stage 0 of the `pit` recipe (train QA + train documents of the demo world,
QA with answer-only loss, documents with loss on every token but `<bos>`).

- pit: `pit.train.loop.train_stage` on `epoch_batches` with
  `train.packing=true` (rows of `model.max_seq_len`, one kind per batch).
- Hugging Face: `transformers.Trainer` with `DataCollatorForSeq2Seq`, the
  collator a user picks for a causal LM with answer masks: it pads
  `input_ids` with the pad token and `labels` with -100 to the longest
  example of each batch (`DataCollatorForLanguageModeling` would overwrite
  the labels and lose the masks). Its batches mix documents and QA pairs, as
  a user's single data set does; its batch size is set so that it takes as
  many optimiser steps as pit over the same examples (`--hf-batch-size` to
  choose another). Same optimiser settings (AdamW 0.9/0.95, weight decay
  0.1, cosine, gradient clipping 1.0).

Tokens/s counts real tokens only (every token of every example, never a pad),
which is the same total for both. Each trainer runs `--repeats` times,
alternating so that drift in the machine's load falls on both, and keeps its
fastest run: on a shared machine the slower runs measure the neighbours. The
CPU seconds (process time) of each run are shown beside, with the ratio per
CPU second, which neighbours disturb less when `--threads 1`. A third row,
pit with packing off, shows what packing itself adds. All run under the same
`torch.set_num_threads`; only the training loops are timed, not their setup.

    .venv/bin/python benchmarks/train_throughput.py                     # demo, 1 epoch
    .venv/bin/python benchmarks/train_throughput.py --preset smoke      # seconds
    .venv/bin/python benchmarks/train_throughput.py --epochs 2 --repeats 3 --threads 2
    .venv/bin/python benchmarks/train_throughput.py --set model.hidden_size=256

The last line is `ratio=<pit tokens/s / Hugging Face tokens/s>`.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import tempfile
import time

os.environ.setdefault("PIT_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--recipe", default="pit")
    ap.add_argument("--stage", type=int, default=0, help="Index of the recipe's stage.")
    ap.add_argument("--epochs", type=int, default=1, help="Epochs of the stage per timed run.")
    ap.add_argument("--repeats", type=int, default=2, help="Timed runs of each trainer.")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for both (default: torch's own choice).")
    ap.add_argument("--hf-batch-size", type=int, default=None,
                    help="Hugging Face batch size (default: as many steps as pit).")
    ap.add_argument("--packed-only", action="store_true",
                    help="Skip the row of pit with packing off.")
    ap.add_argument("--workdir", default="pit-runs/bench-train")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    metavar="SECTION.FIELD=VALUE", help="Config override, as `pit compare --set`.")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, tokenizer, model, examples = _setup(args)
    stage = _recipe(args.recipe).stages[args.stage]
    tcfg = cfg.train.model_copy(update={"packing": True})
    n_tokens = sum(len(e.input_ids) for e in examples) * args.epochs
    pit_plan = _pit_epochs(examples, stage, tcfg, cfg.model.max_seq_len, args.epochs, model)
    pit_steps = sum(len(e) for e in pit_plan)
    hf_bs = args.hf_batch_size or math.ceil(len(examples) * args.epochs / pit_steps)
    print(f"{args.recipe} stage {args.stage} on {args.preset}: {len(examples)} examples, "
          f"{n_tokens} real tokens in {args.epochs} epoch(s); model {cfg.model.name_or_path} "
          f"({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters), "
          f"{torch.get_num_threads()} thread(s), attention {model.config._attn_implementation}")

    unpacked = cfg.train.model_copy(update={"packing": False})
    plans = {"pit": (pit_plan, tcfg),
             "pit-unpacked": (_pit_epochs(examples, stage, unpacked, 0, args.epochs), unpacked)}
    names = ["pit", "hf"] + ([] if args.packed_only else ["pit-unpacked"])
    labels = {"pit": "pit train_stage, packed",
              "hf": f"HF Trainer + DataCollatorForSeq2Seq, batch {hf_bs}",
              "pit-unpacked": "pit train_stage, padded per kind (packing off)"}

    def run(name: str, warmup: bool = False) -> dict:
        if name == "hf":
            return _time_hf(model, examples, tokenizer, cfg, hf_bs, args.epochs, args.workdir,
                            max_steps=3 if warmup else -1)
        plan, train = plans[name]
        return _time_pit(model, [plan[0][:3]] if warmup else plan, train, stage, tokenizer)

    for name in names:
        run(name, warmup=True)  # first-touch costs (lazy imports, allocator) fall on neither
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for _ in range(args.repeats):
        for name in names:
            runs[name].append(run(name))

    print()
    print("| trainer | steps | real tokens | tokens computed (with pads) | fill | seconds | "
          "CPU seconds | tokens/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    rate: dict[str, float] = {}
    cpu_rate: dict[str, float] = {}
    for name in names:
        last = runs[name][-1]
        if last["tokens"] != n_tokens:
            raise SystemExit(f"{name} trained on {last['tokens']} real tokens, not {n_tokens}")
        seconds = min(r["seconds"] for r in runs[name])
        cpu = min(r["cpu"] for r in runs[name])
        rate[name] = n_tokens / seconds
        cpu_rate[name] = n_tokens / cpu
        print(f"| {labels[name]} | {last['steps']} | {n_tokens} | {last['slots']} | "
              f"{n_tokens / last['slots']:.0%} | {seconds:.1f} | {cpu:.1f} | "
              f"{rate[name]:,.0f} |")
    print()
    for name in names:
        print(f"{name} seconds per run: {[round(r['seconds'], 2) for r in runs[name]]}")
    if "pit-unpacked" in rate:
        print(f"packing alone: {rate['pit'] / rate['pit-unpacked']:.2f}x pit unpacked "
              f"({cpu_rate['pit'] / cpu_rate['pit-unpacked']:.2f}x per CPU second)")
    print(f"per CPU second: pit {cpu_rate['pit'] / cpu_rate['hf']:.2f}x Hugging Face")
    print(f"ratio={rate['pit'] / rate['hf']:.2f}")


def _recipe(slug: str):
    from pit.recipe import select_recipes

    return select_recipes([slug])[0]


def _setup(args):
    """The config, tokenizer, initial model and one epoch of the stage's examples."""
    from pit.base import _tokenizer_texts
    from pit.config_sources import load_config
    from pit.data.source import build_dataset, load_dataset
    from pit.modeling import build_embedded_model, load_model, train_tokenizer
    from pit.train.examples import ExampleBuilder
    from pit.train.runner import examples_for

    cfg = load_config(args.preset, None, [f"workdir={args.workdir}", *args.overrides])
    ds = load_dataset(cfg, build_dataset(cfg))
    if cfg.model.name_or_path == "embedded":
        tokenizer = train_tokenizer(_tokenizer_texts(ds), cfg.model.vocab_size)
        model = build_embedded_model(cfg.model, tokenizer, seed=cfg.base.seed)
    else:
        model, tokenizer = load_model(cfg.model.name_or_path, cfg.model)
    builder = ExampleBuilder(tokenizer, cfg.model.max_seq_len)
    stage = _recipe(args.recipe).stages[args.stage]
    examples = examples_for(cfg, ds, stage, builder, cfg.train)
    if any(w not in (0.0, 1.0) for e in examples for w in e.weights):
        raise SystemExit("this stage weighs tokens other than 0 or 1, which Hugging Face "
                         "labels cannot express; pick a stage without answer_span_weight")
    return cfg, tokenizer, model, examples


def _pit_epochs(examples, stage, tcfg, row_len: int, epochs: int, model=None):
    from pit.train.batches import epoch_batches
    from pit.train.packing import slot_cost

    cost = slot_cost(model) if tcfg.packing and model is not None else None
    return [epoch_batches(examples, stage, tcfg, tcfg.seed + e, row_len, cost)
            for e in range(epochs)]


def _time_pit(model, plan, tcfg, stage, tokenizer) -> dict:
    """One run of pit's loop over `plan` from a copy of `model`; its setup is not timed."""
    import torch

    from pit.device import accelerator, prepare
    from pit.train.loop import train_stage

    acc = accelerator()
    torch.manual_seed(0)
    net, optimizer = prepare(acc, copy.deepcopy(model), tcfg)
    peak = {"doc": stage.doc_lr or tcfg.doc_lr, "qa": stage.qa_lr or tcfg.qa_lr}
    wall, cpu = time.perf_counter(), time.process_time()
    train_stage(net, plan, tcfg, peak, tokenizer.pad_token_id, acc, optimizer)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    batches = [b for epoch in plan for b in epoch]
    return {"seconds": wall, "cpu": cpu, "steps": len(batches),
            "tokens": sum(len(e.input_ids) for b in batches for e in b.examples),
            "slots": sum(len(b.rows) * b.row_len if b.rows else
                         len(b.examples) * max(len(e.input_ids) for e in b.examples)
                         for b in batches)}


class _Counting:
    """The collator, counting the real tokens and the padded tokens it hands the model."""

    def __init__(self, collator) -> None:
        self.collator = collator
        self.tokens = 0
        self.slots = 0

    def __call__(self, features):
        batch = self.collator(features)
        self.tokens += int(batch["attention_mask"].sum())
        self.slots += batch["input_ids"].numel()
        return batch


def _clock():
    """A Trainer callback timing the training loop: from its first step to its end."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.wall, self.cpu = time.perf_counter(), time.process_time()

        def on_train_end(self, args, state, control, **kwargs):
            self.wall = time.perf_counter() - self.wall
            self.cpu = time.process_time() - self.cpu

    return Clock()


def _time_hf(model, examples, tokenizer, cfg, batch_size: int, epochs: int, workdir: str,
             max_steps: int = -1) -> dict:
    """One `Trainer.train()` from a copy of `model` over the same examples, setup untimed."""
    import torch
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, PrinterCallback, Trainer, TrainingArguments

    rows = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids),
             "labels": [t if w > 0 else -100 for t, w in zip(e.input_ids, e.weights,
                                                             strict=True)]}
            for e in examples]
    collator = _Counting(DataCollatorForSeq2Seq(tokenizer, padding="longest",
                                                label_pad_token_id=-100))
    tcfg = cfg.train
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workdir) as out:
        targs = TrainingArguments(
            output_dir=out, per_device_train_batch_size=batch_size, num_train_epochs=epochs,
            max_steps=max_steps, learning_rate=tcfg.doc_lr, lr_scheduler_type="cosine",
            weight_decay=tcfg.weight_decay, adam_beta1=tcfg.betas[0], adam_beta2=tcfg.betas[1],
            max_grad_norm=tcfg.grad_clip, logging_strategy="no", save_strategy="no",
            report_to=[], disable_tqdm=True, seed=tcfg.seed, dataloader_num_workers=0,
            use_cpu=not torch.cuda.is_available(),
        )
        clock = _clock()
        trainer = Trainer(model=copy.deepcopy(model), args=targs,
                          train_dataset=Dataset.from_list(rows), data_collator=collator,
                          callbacks=[clock])
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    return {"seconds": clock.wall, "cpu": clock.cpu, "steps": trainer.state.global_step,
            "tokens": collator.tokens, "slots": collator.slots}


if __name__ == "__main__":
    main()
