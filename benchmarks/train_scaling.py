"""Training tokens/s of one process and of two on the same stage: what sharding batches buys.

Each process count runs pit's own path: `accelerate launch` with the flags
`pit.train.launch.launch_command` gives a stage (so two CPU processes are
a gloo group), `pit.device.accelerator`/`prepare` (DDP when there are two),
and `train_stage`, in which every process trains its share of each global
batch (`pit.train.sharding`). Same model (the preset's embedded Llama with
random weights), same examples (a stage of a recipe on the preset's world,
packed by default), same global batches. On a CPU each process gets
`--threads` threads (1 by default), as on a GPU node each process gets one
GPU: the question is what a second device adds, not how one device's cores
are best split. Only the training loop is timed, after a few warm-up steps;
process start and setup are not. The table also shows each run's last-epoch
losses, which must agree: two processes train the same model as one.

    .venv/bin/python benchmarks/train_scaling.py                    # demo, pit stage 0
    .venv/bin/python benchmarks/train_scaling.py --preset smoke     # seconds
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_scaling.py --repeats 2

The last line is `ratio=<tokens/s of 2 processes / tokens/s of 1>`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PIT_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WARMUP_STEPS = 3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--recipe", default="pit")
    ap.add_argument("--stage", type=int, default=0, help="Index of the recipe's stage.")
    ap.add_argument("--epochs", type=int, default=1, help="Timed epochs of the stage per run.")
    ap.add_argument("--repeats", type=int, default=1, help="Timed runs of each process count.")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (CPU).")
    ap.add_argument("--workdir", default="pit-runs/bench-scaling")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    metavar="SECTION.FIELD=VALUE", help="Config override, as `pit compare --set`.")
    ap.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(Path(args.worker))
        return

    spec = _prepare(args)
    print(f"{args.recipe} stage {args.stage} on {args.preset}, {args.epochs} timed epoch(s), "
          f"packing {spec['config']['train']['packing']}; model {spec['params'] / 1e6:.2f}M "
          "parameters")
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(args.repeats):
        for n in (1, 2):
            runs[n].append(_launch(spec, n, args.threads, Path(args.workdir)))

    print()
    print("| processes | threads each | steps | real tokens | seconds | tokens/s | "
          "last epoch loss_doc | last epoch loss_qa |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    rate = {}
    for n, results in runs.items():
        best = min(results, key=lambda r: r["seconds"])
        rate[n] = best["tokens"] / best["seconds"]
        losses = best["losses"]
        print(f"| {n} | {best['threads']} | {best['steps']} | {best['tokens']} | "
              f"{best['seconds']:.1f} | {rate[n]:,.0f} | {losses.get('loss_doc', float('nan')):.4f}"
              f" | {losses.get('loss_qa', float('nan')):.4f} |")
    print()
    for n, results in runs.items():
        print(f"{n} process(es), seconds per run: {[round(r['seconds'], 2) for r in results]}")
    print(f"ratio={rate[2] / rate[1]:.2f}")


def _prepare(args) -> dict:
    """Data set and random-weight model saved where the workers read them; the workers' spec."""
    from pit.base import _tokenizer_texts
    from pit.config_sources import load_config
    from pit.data.source import build_dataset, load_dataset
    from pit.modeling import build_embedded_model, save_model, train_tokenizer

    overrides = [f"workdir={args.workdir}", "train.packing=true", *args.overrides]
    cfg = load_config(args.preset, None, overrides)
    data = build_dataset(cfg)
    ds = load_dataset(cfg, data)
    tokenizer = train_tokenizer(_tokenizer_texts(ds), cfg.model.vocab_size)
    model = build_embedded_model(cfg.model, tokenizer, seed=cfg.base.seed)
    folder = save_model(model, tokenizer, Path(args.workdir) / "model")
    return {"config": cfg.model_dump(mode="json"), "data": data, "model": str(folder),
            "recipe": args.recipe, "stage": args.stage, "epochs": args.epochs,
            "params": sum(p.numel() for p in model.parameters())}


def _launch(spec: dict, n: int, threads: int, workdir: Path) -> dict:
    """One run on `n` processes through `accelerate launch`; returns rank 0's measurement."""
    import torch

    from pit.train.launch import launch_command

    torch.set_num_threads(threads * n)  # which the launch splits into `threads` per process
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / "spec.json"
        path.write_text(json.dumps({**spec, "out": str(Path(tmp) / "result.json")}))
        cpu = not torch.cuda.is_available()
        # pit's stage launch, with this script in place of `-m pit.train.launch`
        cmd = [*launch_command(path, n, cpu)[:-3], __file__, "--worker", str(path)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{n} process(es) failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        return json.loads((Path(tmp) / "result.json").read_text())


def _worker(spec_path: Path) -> None:
    """One process of a run: build the stage's batches, warm up, time the training loop."""
    import torch

    from pit.config import PitConfig
    from pit.data.source import load_dataset
    from pit.device import accelerator, prepare
    from pit.modeling import load_model
    from pit.recipe import select_recipes
    from pit.train.batches import epoch_batches
    from pit.train.examples import ExampleBuilder
    from pit.train.loop import Callback, train_stage
    from pit.train.runner import examples_for

    spec = json.loads(spec_path.read_text())
    cfg = PitConfig.model_validate(spec["config"])
    tcfg = cfg.train
    stage = select_recipes([spec["recipe"]])[0].stages[spec["stage"]]
    ds = load_dataset(cfg, spec["data"])
    model, tokenizer = load_model(spec["model"], cfg.model)
    examples = examples_for(cfg, ds, stage, ExampleBuilder(tokenizer, cfg.model.max_seq_len), tcfg)
    plan = [epoch_batches(examples, stage, tcfg, tcfg.seed + e, cfg.model.max_seq_len)
            for e in range(spec["epochs"])]
    peak = {"doc": stage.doc_lr or tcfg.doc_lr, "qa": stage.qa_lr or tcfg.qa_lr}
    acc = accelerator(tcfg)
    torch.manual_seed(0)
    net, optimizer = prepare(acc, model, tcfg)
    train_stage(net, [plan[0][:WARMUP_STEPS]], tcfg, peak, tokenizer.pad_token_id, acc, optimizer)

    class LastLosses(Callback):
        losses: dict[str, float]

        def on_epoch_end(self, state, metrics) -> None:
            self.losses = dict(metrics)

    last = LastLosses()
    acc.wait_for_everyone()
    started = time.perf_counter()
    train_stage(net, plan, tcfg, peak, tokenizer.pad_token_id, acc, optimizer, callbacks=[last])
    acc.wait_for_everyone()
    seconds = time.perf_counter() - started
    if acc.is_main_process:
        batches = [b for epoch in plan for b in epoch]
        Path(spec["out"]).write_text(json.dumps({
            "seconds": seconds, "steps": len(batches), "threads": torch.get_num_threads(),
            "tokens": sum(len(e.input_ids) for b in batches for e in b.examples),
            "losses": last.losses}))


if __name__ == "__main__":
    sys.exit(main())
