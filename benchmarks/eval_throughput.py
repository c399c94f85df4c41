"""Questions per second of pit's evaluator against a one-question-at-a-time `generate` loop.

Both answer the same questions with the same model, measured in one run:

- model: the demo preset's embedded base (the small Llama pre-trained on the
  old world by pit's own `build_base`; about two minutes on 2 cores the first
  time, then reused from `--workdir`). It answers in the answer format, so
  answers end where a real model's would, not after `max_new_tokens`;
- questions: the demo world's test questions, closed-book, each with five
  demonstrations from the train QA pairs (pit's few-shot prompt);
- pit: `Evaluator.answer`, end to end (prompts built and tokenized, batched
  greedy generation sorted by length, answers decoded and scored);
- baseline: what a user would write: for each question, the few-shot prompt as
  text, tokenized, `model.generate` greedy with the same `max_new_tokens`,
  stopping at end of sequence, the answer decoded and cut at its first line.

The two must give the same prompts and the same predictions (checked, and
the run fails if they differ). Each side runs `--repeats` times, alternating,
and keeps its fastest run, since the machine is shared. The last line is
`ratio=<pit questions/s / baseline questions/s>`.

    .venv/bin/python benchmarks/eval_throughput.py
    .venv/bin/python benchmarks/eval_throughput.py --repeats 5 --batch-size 32
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_throughput.py   # one core
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

os.environ.setdefault("PIT_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def baseline(model, tok, questions: list[dict], pool: list[dict], shots: int,
             max_new_tokens: int) -> tuple[list[str], list[list[int]]]:
    """One question at a time through `model.generate`: predictions and the prompts it read."""
    import torch

    rng = random.Random(0)
    preds, prompts = [], []
    with torch.no_grad():
        for q in questions:
            demos = rng.sample(pool, min(shots, len(pool)))
            text = "".join(f"Question: {d['question']} Answer: {d['answers'][0]}\n"
                           for d in demos) + f"Question: {q['question']} Answer:"
            ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
            x = torch.tensor([ids])
            out = model.generate(input_ids=x, attention_mask=torch.ones_like(x),
                                 max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
            answer = tok.decode(out[0, len(ids):], skip_special_tokens=True)
            preds.append(answer.split("\n")[0].strip())
            prompts.append(ids)
    return preds, prompts


def read_prompts(model, prompts: list[list[int]], rows: int, pad: int) -> None:
    """The floor: one forward pass over every prompt, longest first, `rows` at a time.

    Any decoder, batched or not, reads each prompt once; this is that reading
    alone, batched as pit batches it, with no token generated.
    """
    import torch

    order = sorted(prompts, key=len, reverse=True)
    with torch.no_grad():
        for i in range(0, len(order), rows):
            chunk = order[i : i + rows]
            n = len(chunk[0])
            ids = torch.tensor([[pad] * (n - len(p)) + p for p in chunk])
            att = torch.tensor([[0] * (n - len(p)) + [1] * len(p) for p in chunk])
            model(input_ids=ids, attention_mask=att, logits_to_keep=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--workdir", default="pit-runs/bench-eval",
                    help="Where the world and the base model are built, and reused.")
    ap.add_argument("--batch-size", default=None,
                    help="eval.batch_size for pit (a number or 'auto'); default: the preset's.")
    ap.add_argument("--repeats", type=int, default=3, help="Timed runs of each side.")
    ap.add_argument("--questions", type=int, default=None, help="Only the first N questions.")
    ap.add_argument("--no-zero-shot", dest="zero_shot", action="store_false",
                    help="Skip the zero-shot rows (how trained models are scored).")
    args = ap.parse_args()

    import torch

    from pit import pipeline
    from pit.artifacts import model_path
    from pit.config_sources import load_config
    from pit.data.source import load_dataset
    from pit.data.views import demonstrations, eval_questions
    from pit.modeling import load_model

    overrides = [f"workdir={args.workdir}"]
    if args.batch_size is not None:
        overrides.append(f"eval.batch_size={args.batch_size}")
    cfg = load_config(args.preset, None, overrides)
    started = time.perf_counter()
    data = pipeline.build_dataset(cfg)
    ref = pipeline.build_base(cfg, data)
    print(f"world and base model ready in {time.perf_counter() - started:.0f} s", flush=True)
    ds = load_dataset(cfg, data)
    model, tok = load_model(model_path(cfg, ref), cfg.model, device=torch.device("cpu"))
    model.eval()
    questions = eval_questions(ds, cfg.data)[: args.questions]
    pool = demonstrations(ds, cfg.data)
    new = cfg.eval.max_new_tokens
    modes = ["closed-book", "zero-shot"] if args.zero_shot else ["closed-book"]
    results = {mode: measure(cfg, model, tok, questions, pool, mode, args.repeats)
               for mode in modes}

    print(f"\n{len(questions)} test questions of the {args.preset} world, max_new_tokens {new}; "
          f"model {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters on the "
          f"CPU, {torch.get_num_threads()} torch threads; pit eval.batch_size "
          f"{cfg.eval.batch_size} ({results['closed-book']['rows']} rows); "
          f"fastest of {args.repeats} runs each")
    print("\n| prompt | prompt tokens | pit `Evaluator.answer` | one-at-a-time `generate` | "
          "ratio | floor: prompts read, batched | floor / one-at-a-time | same predictions |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in results.values():
        print(f"| {r['prompt']} | {r['tokens']} | {r['pit']:.1f} q/s | {r['baseline']:.1f} q/s | "
              f"{r['pit'] / r['baseline']:.2f} | {r['floor']:.1f} q/s | "
              f"{r['floor'] / r['baseline']:.2f} | {r['same']} |")
    failed = False
    for mode, r in results.items():
        print(f"\n{mode}: same prompts: {r['same_prompts']}; predictions: {r['same']}; "
              f"non-empty {r['non_empty']}; {r['distinct']} distinct")
        for line in r["differ"][:5]:
            print("  differs: " + line)
        failed |= bool(r["differ"]) or not r["same_prompts"]
    main_result = results["closed-book"]
    print(f"ratio={main_result['pit'] / main_result['baseline']:.2f}")
    if failed:
        sys.exit(1)


def measure(cfg, model, tok, questions: list[dict], pool: list[dict], mode: str,
            repeats: int) -> dict:
    """Both sides on `questions` in `mode`, alternating: rates, and whether they agree."""
    import torch

    from pit.eval.evaluator import Evaluator
    from pit.eval.memory import rows_that_fit

    shots = cfg.eval.few_shot if mode == "closed-book" else 0
    pool = pool if shots else []
    times: dict[str, list[float]] = {"pit": [], "baseline": [], "floor": []}
    ev = Evaluator(model, tok, cfg.eval, cfg.model.max_seq_len)
    rng = random.Random(0)
    pit_prompts = [ev.prompt_ids(q["question"], None,
                                 rng.sample(pool, min(shots, len(pool))) if shots else ())
                   for q in questions]
    rows = cfg.eval.batch_size
    if rows == "auto":
        rows = rows_that_fit(model, max(map(len, pit_prompts)) + cfg.eval.max_new_tokens,
                             torch.device("cpu"))
    for _ in range(repeats):
        t = time.perf_counter()
        ev = Evaluator(model, tok, cfg.eval, cfg.model.max_seq_len)
        pit_preds = [r["prediction"] for r in ev.answer(questions, mode, None, pool)[1]]
        times["pit"].append(time.perf_counter() - t)
        t = time.perf_counter()
        base_preds, base_prompts = baseline(model, tok, questions, pool, shots,
                                            cfg.eval.max_new_tokens)
        times["baseline"].append(time.perf_counter() - t)
        t = time.perf_counter()
        read_prompts(model, pit_prompts, rows, tok.pad_token_id)
        times["floor"].append(time.perf_counter() - t)

    n = len(questions)
    differ = [f"{questions[i]['question']!r}: pit {a!r}, baseline {b!r}"
              for i, (a, b) in enumerate(zip(pit_preds, base_preds, strict=True)) if a != b]
    tokens = [len(p) for p in pit_prompts]
    return {
        "prompt": f"{mode}, {shots}-shot", "tokens": f"{min(tokens)}-{max(tokens)}",
        "pit": n / min(times["pit"]), "baseline": n / min(times["baseline"]),
        "floor": n / min(times["floor"]), "rows": rows,
        "same_prompts": pit_prompts == base_prompts, "differ": differ,
        "same": f"{n - len(differ)}/{n}", "non_empty": f"{sum(map(bool, pit_preds))}/{n}",
        "distinct": len(set(pit_preds)),
    }

if __name__ == "__main__":
    main()
