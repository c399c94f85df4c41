"""Tokens/s and MFU of pit's trainer on a ~1B Llama at sequence length 2048, against HF Trainer.

A prepared GPU check (one H200 or H100: a few minutes, no network, nothing
downloaded). The model is a Llama of about 1.2B parameters (hidden 2048, 22
layers, 16 heads of 128, MLP 5632, vocabulary 32000, untied output layer)
with random weights, built on the GPU. The data imitate a PIT stage with
Llama-tokenizer lengths: documents of 100-600 tokens (loss on every token)
and five times as many QA pairs of 20-60 tokens (loss on the answer, the
last third), random token ids. The same examples go to both trainers, from
the same initial weights, in bf16 autocast with fused AdamW (0.9/0.95, weight
decay 0.1, clipping 1.0, cosine schedule):

- pit: `pit.train.loop.train_stage` over `epoch_batches` with
  `train.packing=true`: rows of 2048 tokens, `--rows` per step, one kind per
  batch, attention kept inside each example (flash attention's varlen path
  where flash-attn is installed, else SDPA with a block mask).
- Hugging Face: `transformers.Trainer` with `DataCollatorForSeq2Seq` (pads
  each micro-batch of `--hf-batch-size` mixed examples to its longest, labels
  -100 on prompts and pads), SDPA attention, and as many gradient-accumulation
  micro-batches as make an optimiser step hold as many examples as pit's.

Both are timed from the end of `--warmup` optimiser steps to the end of
`--steps` more, the device synchronised at both ends. Tokens are real
(non-pad) tokens; MFU is PaLM's model FLOPs of those tokens (`pit.train.
throughput`: 6 x parameters that multiply, plus attention over each example's
own length) over the time, over the card's dense bf16 peak (989 TFLOP/s on
H100 SXM and H200; `--peak-flops` to override). pit's own per-epoch figures
(what it logs to MLflow) are printed beside, as a cross-check.

    python benchmarks/gpu_mfu.py                     # the GPU check
    python benchmarks/gpu_mfu.py --smoke             # a tiny model on the CPU, seconds
    python benchmarks/gpu_mfu.py --compile --rows 16 # torch.compile, larger steps

The last line is `ratio=<pit tokens/s / Hugging Face tokens/s>`.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import tempfile
import time

os.environ.setdefault("PIT_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

FULL = {"hidden": 2048, "layers": 22, "heads": 16, "intermediate": 5632, "vocab": 32000,
        "seq": 2048, "doc_len": (100, 600), "qa_len": (20, 60)}
SMOKE = {"hidden": 64, "layers": 2, "heads": 4, "intermediate": 176, "vocab": 512,
         "seq": 256, "doc_len": (12, 75), "qa_len": (4, 12)}
QA_PER_DOC = 5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="A tiny model and data, for a CPU.")
    ap.add_argument("--rows", type=int, default=8, help="pit: packed rows per optimiser step.")
    ap.add_argument("--warmup", type=int, default=5, help="Untimed optimiser steps first.")
    ap.add_argument("--steps", type=int, default=20, help="Timed optimiser steps.")
    ap.add_argument("--hf-batch-size", type=int, default=16,
                    help="Hugging Face: examples per micro-batch (padded to the longest).")
    ap.add_argument("--attention", default="auto",
                    help="pit's attention: auto (flash_attention_2 if installed, else sdpa), "
                         "sdpa, flash_attention_2, ...")
    ap.add_argument("--compile", action="store_true", help="torch.compile both models.")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="For both trainers.")
    ap.add_argument("--peak-flops", type=float, default=None,
                    help="Peak FLOP/s for MFU (default: the GPU's dense bf16 peak).")
    ap.add_argument("--only", choices=["pit", "hf"], default=None, help="Run one trainer.")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.smoke:
        args.warmup, args.steps, args.rows = min(args.warmup, 2), min(args.steps, 4), 2

    import torch
    import transformers

    from pit.train.throughput import ModelFlops, peak_flops

    size = SMOKE if args.smoke else FULL
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak = peak_flops(dev, args.peak_flops)
    model = _model(size, dev, args.seed)
    flops = ModelFlops(model)
    examples = _examples(size, args)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    print(f"device {name}, peak {peak:.4g} FLOP/s" if peak else f"device {name}, "
          "no known peak (MFU needs --peak-flops)")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}; model "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:,.1f}M parameters "
          f"({flops.params / 1e6:,.1f}M multiply), sequence length {size['seq']}; "
          f"{len(examples)} examples, {sum(len(e.input_ids) for e in examples)} tokens")

    results = {}
    if args.only in (None, "pit"):
        results["pit"] = _time_pit(copy.deepcopy(model), examples, size, args, flops, peak)
        _release(dev)
    if args.only in (None, "hf"):
        per_step = results.get("pit", {}).get("examples_per_step")
        results["hf"] = _time_hf(model, examples, args, flops, peak, per_step)
        _release(dev)

    print()
    print("| trainer | attention | timed steps | real tokens | tokens computed (with pads) | "
          "seconds | tokens/s | MFU | peak memory |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results.values():
        mfu = f"{100 * r['flops'] / r['seconds'] / peak:.1f}%" if peak else "-"
        print(f"| {r['label']} | {r['attention']} | {r['steps']} | {r['tokens']} | "
              f"{r['slots']} | {r['seconds']:.2f} | {r['tokens'] / r['seconds']:,.0f} | {mfu} | "
              f"{r['memory'] / 2**30:.1f} GiB |")
    if "pit" in results:
        own = results["pit"]["logged"]
        logged_mfu = f", MFU {own['mfu']:.1f}%" if "mfu" in own else ""
        print(f"\npit's own figures for the timed steps (as logged to MLflow): "
              f"{own.get('tokens_per_s', 0):,.0f} tokens/s{logged_mfu}")
    if len(results) == 2:
        rate = {k: r["tokens"] / r["seconds"] for k, r in results.items()}
        print(f"ratio={rate['pit'] / rate['hf']:.2f}")


def _model(size: dict, dev, seed: int):
    """A random-weight Llama of `size`, built directly on the device."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=size["vocab"], hidden_size=size["hidden"],
        intermediate_size=size["intermediate"], num_hidden_layers=size["layers"],
        num_attention_heads=size["heads"], num_key_value_heads=size["heads"],
        max_position_embeddings=size["seq"], tie_word_embeddings=False,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    with dev:
        return LlamaForCausalLM(config)


def _examples(size: dict, args) -> list:
    """Documents and QA pairs (answer-only loss) of random tokens, enough for every step."""
    from pit.train.examples import Example

    rng = random.Random(args.seed)
    steps = args.warmup + args.steps
    budget = int(1.3 * steps * args.rows * size["seq"])  # packing fills rows to about 95%
    out, tokens = [], 0
    while tokens < budget:
        n = rng.randint(*size["doc_len"])
        out.append(Example([1] + _ids(rng, n - 1, size), [0.0] + [1.0] * (n - 1), "doc"))
        tokens += n
        for _ in range(QA_PER_DOC):
            n = rng.randint(*size["qa_len"])
            answer = max(2, n // 3)
            out.append(Example([1] + _ids(rng, n - 2, size) + [2],
                               [0.0] * (n - answer) + [1.0] * answer, "qa"))
            tokens += n
    return out


def _ids(rng: random.Random, n: int, size: dict) -> list[int]:
    return [rng.randrange(3, size["vocab"]) for _ in range(n)]


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _release(dev) -> None:
    import gc

    import torch

    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def _peak_memory(dev) -> int:
    import torch

    return torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else 0


def _pit_attention(choice: str) -> str:
    import torch
    from transformers.utils import is_flash_attn_2_available

    if choice != "auto":
        return choice
    return ("flash_attention_2" if torch.cuda.is_available() and is_flash_attn_2_available()
            else "sdpa")


def _time_pit(model, examples, size, args, flops, peak) -> dict:
    """pit's loop over packed rows: `--warmup` steps as one epoch, then `--steps` timed."""
    import torch

    from pit.config import TrainConfig
    from pit.device import accelerator, prepare
    from pit.modeling import use_attention
    from pit.recipe import select_recipes
    from pit.train.batches import epoch_batches
    from pit.train.loop import Callback, train_stage

    stage = select_recipes(["pit"])[0].stages[0]
    mean = {k: sum(len(e.input_ids) for e in examples if e.kind == k)
            / sum(e.kind == k for e in examples) for k in ("doc", "qa")}
    tcfg = TrainConfig(
        packing=True, doc_lr=3e-5, qa_lr=3e-5, compile=args.compile,
        gradient_checkpointing=args.gradient_checkpointing, peak_flops=args.peak_flops,
        attention=_pit_attention(args.attention),
        doc_batch_size=max(1, round(args.rows * size["seq"] / mean["doc"])),
        qa_batch_size=max(1, round(args.rows * size["seq"] / mean["qa"])),
    )
    batches = epoch_batches(examples, stage, tcfg, args.seed, size["seq"])
    if len(batches) < args.warmup + args.steps:
        raise SystemExit(f"only {len(batches)} packed batches; lower --warmup/--steps")
    warm, timed = batches[: args.warmup], batches[args.warmup : args.warmup + args.steps]
    use_attention(model, tcfg.attention)
    acc = accelerator(tcfg)
    net, optimizer = prepare(acc, model, tcfg)

    class Speed(Callback):
        figures: dict[str, float]

        def on_epoch_end(self, state, metrics) -> None:
            self.figures = dict(state.throughput)

    speed = Speed()
    peak_lr = {"doc": tcfg.doc_lr, "qa": tcfg.qa_lr}
    train_stage(net, [warm], tcfg, peak_lr, 0, acc, optimizer)
    if acc.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(acc.device)
    _sync(acc.device)
    started = time.perf_counter()
    train_stage(net, [timed], tcfg, peak_lr, 0, acc, optimizer, callbacks=[speed])
    _sync(acc.device)
    seconds = time.perf_counter() - started
    lengths = [len(e.input_ids) for b in timed for e in b.examples]
    return {"label": f"pit train_stage, packed ({args.rows} rows of {size['seq']})",
            "attention": tcfg.attention, "steps": len(timed), "tokens": sum(lengths),
            "slots": sum(len(b.rows) * b.row_len for b in timed), "seconds": seconds,
            "flops": flops(lengths), "memory": _peak_memory(acc.device),
            "logged": speed.figures,
            "examples_per_step": sum(len(b.examples) for b in batches) / len(batches)}


class _Counter:
    """A forward pre-hook that keeps the real lengths of every example the model reads."""

    def __init__(self) -> None:
        self.lengths: list = []
        self.slots = 0
        self.on = False

    def __call__(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if self.on and mask is not None:
            self.lengths.append(mask.sum(dim=1))
            self.slots += mask.numel()


def _time_hf(model, examples, args, flops, peak, examples_per_step: float | None) -> dict:
    """`Trainer.train()` with the padding collator; its optimiser steps timed after warm-up."""
    import torch
    from datasets import Dataset
    from transformers import (
        DataCollatorForSeq2Seq,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from pit.modeling import train_tokenizer

    dev = model.device
    tokenizer = train_tokenizer(["pad only"], 300)  # the collator reads its pad id (0) only
    rows = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids),
             "labels": [t if w > 0 else -100 for t, w in zip(e.input_ids, e.weights,
                                                             strict=True)]}
            for e in examples]
    accumulate = max(1, round((examples_per_step or args.hf_batch_size) / args.hf_batch_size))
    counter = _Counter()
    model.register_forward_pre_hook(counter, with_kwargs=True)

    class Window(TrainerCallback):
        started = seconds = 0.0

        def on_step_begin(self, targs, state, control, **kwargs):
            if state.global_step == args.warmup and not counter.on:
                _sync(dev)
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(dev)
                counter.on, self.started = True, time.perf_counter()

        def on_train_end(self, targs, state, control, **kwargs):
            _sync(dev)
            self.seconds = time.perf_counter() - self.started

    window = Window()
    fields = TrainingArguments.__dataclass_fields__
    recompute = ("activation_checkpointing" if "activation_checkpointing" in fields
                 else "gradient_checkpointing")  # renamed in transformers 5
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out, per_device_train_batch_size=args.hf_batch_size,
            gradient_accumulation_steps=accumulate, max_steps=args.warmup + args.steps,
            learning_rate=3e-5, lr_scheduler_type="cosine", weight_decay=0.1, adam_beta1=0.9,
            adam_beta2=0.95, max_grad_norm=1.0, bf16=dev.type == "cuda",
            torch_compile=args.compile, **{recompute: args.gradient_checkpointing},
            logging_strategy="no", save_strategy="no", report_to=[], disable_tqdm=True,
            seed=args.seed, dataloader_num_workers=0, use_cpu=dev.type != "cuda",
        )
        collator = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100)
        trainer = Trainer(model=model, args=targs, train_dataset=Dataset.from_list(rows),
                          data_collator=collator, callbacks=[window])
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    lengths = [int(k) for t in counter.lengths for k in t.tolist()]
    return {"label": f"HF Trainer + DataCollatorForSeq2Seq, {args.hf_batch_size} x "
                     f"{accumulate} accumulated",
            "attention": model.config._attn_implementation, "steps": args.steps,
            "tokens": sum(lengths), "slots": counter.slots, "seconds": window.seconds,
            "flops": flops(lengths), "memory": _peak_memory(dev)}


if __name__ == "__main__":
    main()
