"""A recipe stage as a step of a comparison: reuse its published output, or train it.

A stage's output key is a hash of its work (`pit.keys`), so a stage already
published, by this comparison, an earlier attempt that was killed, or another
recipe that begins with the same stage, is reused: its stored per-epoch
metrics are logged to the run at hand, and nothing trains. Otherwise the stage
trains in this process (`train.launcher=inline`) or in processes of its own
through `accelerate launch` (`process`, the default), where a crash fails the
call cleanly and calling it again resumes from the newest checkpoint.
A second process of the same work folder that reaches the same stage waits
for the first (`pit.artifacts.computing`) and then reuses its output.
"""

from __future__ import annotations

import logging
from typing import Any

from pit.artifacts import computing, store_for
from pit.config import PitConfig
from pit.data.source import load_dataset
from pit.keys import StageOutput, stage_output
from pit.recipe import Recipe
from pit.tracking import tracker_for
from pit.train.callbacks.checkpointing import kept
from pit.train.callbacks.tracking import EpochTracking, record_stage
from pit.train.launch import launch_stage
from pit.train.runner import StageJob, StageRunner, stage_offset

log = logging.getLogger(__name__)


def run_stage(
    cfg: PitConfig, recipe: Recipe, index: int, model_ref: str, data_ref: str,
    run_id: str | None, seed: int = 0,
) -> tuple[str, dict[str, float]]:
    """Stage `index` of a recipe from `model_ref`: its published model's key and metrics."""
    ds = load_dataset(cfg, data_ref)
    out = stage_output(cfg, recipe.stages[index], index, model_ref, ds.fingerprint, seed)
    with computing(cfg, out.key, f"{recipe.slug} stage {index} (seed {seed})"):
        done = store_for(cfg).cached(out.key)
        if done is not None and done.get("fingerprint") == out.hash:
            log.info("%s stage %d (seed %d) is already published at %s; reusing it",
                     recipe.slug, index, seed, store_for(cfg).url(out.key))
            if run_id:
                _record_reuse(cfg, recipe, index, seed, run_id, out, done)
            return out.key, dict(done.get("metrics") or {})
        job = StageJob(config=cfg, recipe=recipe, index=index, model_ref=model_ref,
                       data_ref=data_ref, run_id=run_id, seed=seed)
        if cfg.train.launcher == "inline":
            return StageRunner(job).run()
        return launch_stage(job)


def _record_reuse(cfg: PitConfig, recipe: Recipe, index: int, seed: int, run_id: str,
                  out: StageOutput, manifest: dict[str, Any]) -> None:
    """Give the reusing run the stage's curve and pointers, as if it had trained it."""
    tracker = tracker_for(cfg)
    train = cfg.train.model_copy(update={"seed": cfg.train.seed + seed})
    curve = EpochTracking(tracker, run_id, stage_offset(recipe, index, train))
    curve.load_state_dict({"logged": manifest.get("history") or {}})
    store = store_for(cfg)
    record_stage(tracker, run_id, index, store.url(out.key), store.url(out.checkpoints),
                 {"checkpoints": kept(store, out.checkpoints), "fingerprint": out.hash,
                  "reused": True, "trained_for": manifest.get("trained_for")})


def stage_curve(cfg: PitConfig, recipe: Recipe, keys: list[str], seed: int = 0
                ) -> list[dict[str, float]]:
    """Every scored epoch of a recipe's stages, numbered across stages, from their manifests.

    What the perplexity-curse and forgetting plots draw: one point per epoch that
    was scored, carrying its stage index and epoch number.
    """
    train = cfg.train.model_copy(update={"seed": cfg.train.seed + seed})
    store = store_for(cfg)
    points = []
    for index, key in enumerate(keys):
        history = (store.cached(key) or {}).get("history") or {}
        offset = stage_offset(recipe, index, train)
        for epoch, metrics in sorted(history.items(), key=lambda kv: int(kv[0])):
            if "exact_match" in metrics:
                points.append({"stage": index, "epoch": offset + int(epoch), **metrics})
    return points
