"""What checkpointing costs a training stage, and what a kill loses, measured in one run.

Trains one stage of a recipe on a preset (default: the PIT stage of `pit` on
`demo`, train QA + train documents for 3 epochs) several times in this
process, alternating between checkpoints off and on so that drift in the
machine's load falls on both alike:

- `off`: `checkpoint.enabled=false`;
- `on`:  the preset's checkpoint settings (or `--every-steps`, `--keep-last`).

It prints the stage time of each, their ratio, the time of one checkpoint
(model + optimiser + RNG states written and published to the store, old ones
pruned), its share of the stage, and what a SIGKILL at a uniformly random
step loses: the steps since the last checkpoint, at most `every_steps`.
With `--process` it also times the same stage launched in its own process
through `accelerate launch` (the default launcher), so the start cost of
crash isolation is on the same page.

    .venv/bin/python benchmarks/checkpoint_cost.py
    .venv/bin/python benchmarks/checkpoint_cost.py --every-steps 10 --repeats 3 --process
    .venv/bin/python benchmarks/checkpoint_cost.py --preset smoke --repeats 1   # seconds
    .venv/bin/python benchmarks/checkpoint_cost.py --artifact-root s3://bucket/bench
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid

os.environ.setdefault("PIT_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--recipe", default="pit")
    ap.add_argument("--stage", type=int, default=0, help="Index of the recipe's stage to time.")
    ap.add_argument("--every-steps", type=int, default=None)
    ap.add_argument("--keep-last", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=2, help="Runs of each setting.")
    ap.add_argument("--workdir", default="pit-runs/bench-checkpoint")
    ap.add_argument("--artifact-root", default=None, help="A folder or s3://bucket/prefix.")
    ap.add_argument("--process", action="store_true",
                    help="Also time the stage in its own accelerate process.")
    ap.add_argument("--json", default=None, help="Write the measurements here.")
    args = ap.parse_args()

    from pit import pipeline
    from pit.artifacts import store_for
    from pit.config_sources import load_config
    from pit.keys import stage_output
    from pit.recipe import select_recipes
    from pit.tracking import tracker_for

    overrides = [f"workdir={args.workdir}", "train.launcher=inline"]
    if args.artifact_root:
        overrides.append(f"storage.root={args.artifact_root}")
    if args.every_steps is not None:
        overrides.append(f"checkpoint.every_steps={args.every_steps}")
    if args.keep_last is not None:
        overrides.append(f"checkpoint.keep_last={args.keep_last}")
    cfg = load_config(args.preset, None, overrides)
    recipe = select_recipes([args.recipe])[0]
    data = pipeline.build_dataset(cfg)
    ref = pipeline.build_base(cfg, data)
    tracker = tracker_for(cfg)
    inputs_run = tracker.start_run("bench-inputs")
    for i in range(args.stage):  # the stage's input model: the earlier stages, trained once
        ref, _ = pipeline.run_stage(cfg, recipe, i, ref, data, inputs_run)
    tracker.end_run(inputs_run)
    store = store_for(cfg)
    fingerprint = pipeline.load_dataset(cfg, data).fingerprint
    # Checkpoint and launcher settings are not part of a stage's key: every timed run
    # below is the same work, published under one key, so each starts by removing it.
    out = stage_output(cfg, recipe.stages[args.stage], args.stage, ref, fingerprint, 0)
    off = cfg.model_copy(update={"checkpoint": cfg.checkpoint.model_copy(
        update={"enabled": False})})
    proc = cfg.model_copy(update={"train": cfg.train.model_copy(update={"launcher": "process"})})

    def timed(c) -> tuple[float, dict]:
        store.rm(out.key)  # nothing to reuse or resume
        store.rm(out.checkpoints)
        run_id = tracker.start_run(f"bench-{uuid.uuid4().hex[:8]}")
        started = time.perf_counter()
        key, _ = pipeline.run_stage(c, recipe, args.stage, ref, data, run_id)
        seconds = time.perf_counter() - started
        tracker.end_run(run_id)
        manifest = store.read_manifest(key) or {}
        return seconds, manifest.get("checkpoints_this_attempt") or {}

    stage = recipe.stages[args.stage]
    times: dict[str, list[float]] = {"off": [], "on": [], "process": []}
    saves: list[float] = []
    steps: list[int] = []
    timed(off)  # warm-up: first-touch costs (page cache, lazy imports) fall on neither
    for _ in range(args.repeats):
        times["off"].append(timed(off)[0])
        seconds, info = timed(cfg)
        times["on"].append(seconds)
        saves += info.get("seconds", [])
        steps = info.get("steps", [])
        if args.process:
            times["process"].append(timed(proc)[0])

    n_epochs = stage.resolved_epochs(cfg.train)
    n_steps = _stage_steps(cfg, recipe, args.stage, ref, data)
    points = [0, *steps, n_steps]
    gaps = [b - a for a, b in zip(points, points[1:], strict=False)]
    worst = max(gaps)
    mean_lost = sum(g * (g + 1) / 2 for g in gaps) / n_steps  # kill during a uniform step
    off_s, on_s = statistics.median(times["off"]), statistics.median(times["on"])
    per_ckpt = statistics.median(saves) if saves else 0.0
    out = {
        "preset": args.preset, "recipe": args.recipe, "stage": args.stage,
        "store": store.root, "epochs": n_epochs, "steps": n_steps,
        "every_steps": cfg.checkpoint.every_steps, "keep_last": cfg.checkpoint.keep_last,
        "checkpoint_steps": steps, "stage_s_off": times["off"], "stage_s_on": times["on"],
        "stage_s_process": times["process"], "ratio_on_off": on_s / off_s,
        "seconds_per_checkpoint": per_ckpt, "checkpoints_per_stage": len(steps),
        "share_of_stage": per_ckpt * len(steps) / on_s,
        "worst_steps_lost": worst, "mean_steps_lost": mean_lost,
        "seconds_per_step_off": off_s / n_steps,
    }
    print(f"{args.recipe} stage {args.stage} on {args.preset}: {n_steps} steps in {n_epochs} "
          f"epochs; store {store.root}")
    print(f"  checkpoints off: {_fmt(times['off'])}")
    print(f"  checkpoints on : {_fmt(times['on'])}  (every {cfg.checkpoint.every_steps} steps "
          f"and at epoch ends: after steps {steps})")
    if times["process"]:
        pm = statistics.median(times["process"])
        print(f"  own process    : {_fmt(times['process'])}  ratio to inline "
              f"{pm / on_s:.2f}x, +{pm - on_s:.1f} s start cost")
        out["ratio_process_inline"] = pm / on_s
    print(f"  ratio on/off {out['ratio_on_off']:.3f}; one checkpoint {per_ckpt * 1000:.0f} ms "
          f"(median of {len(saves)}); checkpoints take {out['share_of_stage']:.1%} of the stage")
    print(f"  a kill loses at most {worst} steps ({worst * off_s / n_steps:.2f} s), "
          f"{mean_lost:.1f} steps on average")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


def _stage_steps(cfg, recipe, index: int, model_ref: str, data_ref: str) -> int:
    """Optimiser steps of the stage, from the batch plan its own runner builds."""
    from pit.train.runner import StageJob, StageRunner

    plan = cfg.model_copy(update={"checkpoint": cfg.checkpoint.model_copy(
        update={"enabled": False})})
    runner = StageRunner(StageJob(config=plan, recipe=recipe, index=index, model_ref=model_ref,
                                  data_ref=data_ref))
    runner.setup()
    return sum(len(e) for e in runner.epochs)


def _fmt(xs: list[float]) -> str:
    runs = ", ".join(f"{x:.2f}" for x in xs)
    return f"median {statistics.median(xs):6.2f} s  [{runs}]"


if __name__ == "__main__":
    main()
